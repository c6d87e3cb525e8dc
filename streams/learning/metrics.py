"""The learning loop's Prometheus metrics, built once per worker from its injected registry."""
from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class LearningMetrics(NamedTuple):
    """Shared by the learner agent and the route side's risk scorer (Faust's ``NamedTuple.create`` shape)."""

    latency: Histogram
    updates: Counter
    f1: Gauge
    examples: Counter
    refused: Counter
    features_dropped: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> LearningMetrics:
        return cls(
            latency=Histogram("loopline_feedback_to_model_seconds",
                              "Correction reviewed_at -> learned by the learner (stage=learned) or in use by a "
                              "route worker (stage=in_use)", ["model", "stage"], buckets=LATENCY_BUCKETS,
                              registry=registry),
            updates=Counter("loopline_model_updates_total", "Model snapshots published (learner) or swapped in "
                            "(route worker)", ["model", "role"], registry=registry),
            f1=Gauge("loopline_online_f1", "Rolling-window F1 on corrected events", ["model", "role"],
                     registry=registry),
            examples=Counter("loopline_learn_examples_total", "Training examples by outcome",
                             ["model", "outcome"], registry=registry),
            refused=Counter("loopline_snapshots_refused_total", "Model snapshots refused (HMAC or format)",
                            ["reason"], registry=registry),
            features_dropped=Gauge("loopline_learn_features_dropped", "Feature occurrences the learner ignored "
                                   "because a model already holds its cap of distinct (producer-chosen) keys",
                                   ["model"], registry=registry),
        )
