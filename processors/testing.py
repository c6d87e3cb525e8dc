"""Deterministic synthetic predictions for benchmarks and tests (12 numeric + 3 categorical features), and a
stand-in challenger server for the router."""
from __future__ import annotations

import random
import time
from typing import Any


def make_events(n: int, seed: int = 7, model: str = "fraud", start_ms: int | None = None) -> list[dict]:
    rnd = random.Random(seed)
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    names = [f"f{i:02d}" for i in range(12)]
    out = []
    for i in range(n):
        conf = rnd.random() * 0.5 + 0.5
        label = "fraud" if rnd.random() < 0.1 else "legit"
        out.append({
            "event_id": f"ev-{seed}-{i}",
            "model_name": model,
            "model_version": "v1",
            "emitted_at": start_ms + i,
            "features_numeric": {k: rnd.gauss(0, 1) for k in names},
            "features_categorical": {"merchant_category": rnd.choice("abcdefgh"),
                                     "country": rnd.choice(["DE", "FR", "US", "GB"]),
                                     "channel": rnd.choice(["web", "app", "pos"])},
            "predicted_label": label,
            "confidence": conf,
            "class_probabilities": {label: conf, ("legit" if label == "fraud" else "fraud"): 1 - conf},
            "risk": {"amount": round(rnd.lognormvariate(4, 1.2), 2)},
            "context": {"country": "DE", "channel": "web"},
            "trace_id": None,
        })
    return out


class FlipEveryOther:
    """A stand-in for the route workers' challenger scorer: serves the even auto-tier rows of a frame with the
    opposite of the producer's label (a challenger that disagrees), as ``version``."""

    def __init__(self, version: str = "challenger:v9") -> None:
        self.version = version

    def serve_frame(self, frame: Any, auto: Any) -> Any:
        import numpy as np

        from loopline.processors.routing.router import Served

        mask = auto & (np.arange(frame.n) % 2 == 0)
        flip = {"fraud": "legit", "legit": "fraud"}
        labels = [flip[frame.labels[int(frame.label_codes[i])]] for i in np.flatnonzero(mask)]
        return Served(self.version, mask, labels) if labels else None
