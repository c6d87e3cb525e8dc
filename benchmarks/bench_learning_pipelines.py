"""Which challenger pipeline is the default: progressive validation on the simulation and on River's Phishing.

``.venv/bin/python -m benchmarks.bench_learning_pipelines`` prints, per
pipeline and data set, examples/s and the test-then-train accuracy, F1 of the
positive class and log-loss over the whole stream (Phishing ships inside
River: nothing is downloaded).
"""
from __future__ import annotations

import math
import time

from river import datasets

from loopline.connectors.simulator import FraudTraffic
from loopline.connectors.simulator.corrections import corrected_examples
from loopline.processors.learning.features import example_features
from loopline.processors.learning.pipelines import PIPELINES, make_challenger
from loopline.processors.learning.window import RollingQuality


def run(pipeline: str, stream, labels, positive) -> dict:
    model = make_challenger(pipeline, labels, positive)
    q = RollingQuality(size=10**7, positive=positive)
    t = time.perf_counter()
    n = 0
    for x, y in stream:
        probs = model.predict_proba_one(x)
        q.update(y, model.predict_one(probs) or labels[0], probs.get(y, 0.0))
        model.learn_one(x, y)
        n += 1
    dt = time.perf_counter() - t
    return {"n": n, "per_s": n / dt, **q.report()}


def main() -> None:
    traffic = FraudTraffic(seed=3, n_events=100_000, concept_drift_at=0.3)
    examples, _ = corrected_examples(traffic, 0, 100_000, review_below=0.9)
    sim = [(example_features(e["prediction"]), e["label"]) for e in examples]
    phishing = [(x, str(y)) for x, y in datasets.Phishing()]
    rows = []
    for name, data, labels, pos in (("simulation (drift at 30%)", sim, ("fraud", "legit"), "fraud"),
                                    ("river Phishing", phishing, ("False", "True"), "True")):
        for p in PIPELINES:
            r = run(p, data, labels, pos)
            rows.append((name, p, r))
    print(f"{'data':28} {'pipeline':10} {'n':>7} {'ex/s':>8} {'acc':>6} {'F1+':>6} {'logloss':>8}")
    for name, p, r in rows:
        ll = r["log_loss"] if math.isfinite(r["log_loss"]) else float("nan")
        print(f"{name:28} {p:10} {r['n']:7d} {r['per_s']:8.0f} {r['accuracy']:6.3f} {r['f1']:6.3f} {ll:8.3f}")


if __name__ == "__main__":
    main()
