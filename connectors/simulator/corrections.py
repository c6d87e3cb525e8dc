"""Simulated ``TrainingExample`` dicts for the learning tests and benchmarks (no Kafka).

:func:`corrected_examples` routes a slice of :class:`~loopline.connectors.simulator.FraudTraffic`
like a confidence policy would (confidence below ``review_below`` → review
tier, plus an ``audit_rate`` sample of the rest as audited auto-tier events) and
has reviewers answer each with the true label, flipped with their error rate.
Everything is seeded: the same arguments give the same examples.
"""
from __future__ import annotations

import numpy as np

from loopline.connectors.simulator import FraudTraffic

REVIEWED_AT0 = 1_800_000_000_000


def corrected_examples(traffic: FraudTraffic, start: int, stop: int, *, reviewers=(("analyst-1", 0.03),),
                       review_below: float = 0.9, audit_rate: float = 0.05, seed: int = 0,
                       ms_per_example: int = 50) -> tuple[list[dict], dict[str, str]]:
    """(examples, true labels by event_id) for events ``start..stop-1``; ``reviewers`` = (id, error rate)."""
    rng = np.random.default_rng([seed, start])
    chunk = next(traffic.iter_chunks(chunk_size=stop - start, start=start, stop=stop))
    truth = {}
    examples = []
    t = REVIEWED_AT0 + start * ms_per_example
    for i, ev in enumerate(chunk.events):
        audit = False
        if ev["confidence"] >= review_below:
            if rng.random() >= audit_rate:
                continue
            audit = True
        true = chunk.true_label(i)
        truth[ev["event_id"]] = true
        r = int(rng.integers(len(reviewers)))
        reviewer, err = reviewers[r]
        label = true
        if rng.random() < err:
            label = "legit" if true == "fraud" else "fraud"
        t += ms_per_example
        examples.append({
            "event_id": ev["event_id"], "model_name": ev["model_name"], "model_version": ev["model_version"],
            "correction_id": f"c-{ev['event_id']}-{reviewer}", "reviewer_id": reviewer,
            "action": "approve" if label == ev["predicted_label"] else "override", "label": label,
            "effective_label": label, "answers_so_far": 1, "tier": "auto" if audit else "review", "audit": audit,
            "sampling_propensity": audit_rate if audit else 1.0, "reason": "", "policy_version": "p1",
            "task_created_at": t - 5000, "reviewed_at": t, "review_seconds": 5.0, "prediction": ev})
    return examples, truth
