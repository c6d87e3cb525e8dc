"""Deterministic synthetic predictions for benchmarks (12 numeric + 3 categorical features)."""
from __future__ import annotations

import random
import time


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
