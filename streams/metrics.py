"""Prometheus metrics of a worker, built on an injected ``CollectorRegistry``.

Labels are bounded: ``model`` is capped (:class:`BoundedLabels`), tiers and
error classes are closed sets, never ids or personal data. Counters are bumped
once per agent batch; the latency histogram takes a whole batch of
observations at once (:class:`BatchHistogram`).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from loopline.processors.wire.names import OTHER


class BoundedLabels:
    """Maps label values to themselves for the first ``limit`` seen, then to ``__other__``."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER


class BatchHistogram(Collector):
    """A histogram whose observations arrive as numpy arrays (one update per batch)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.buckets = np.asarray(sorted(buckets), dtype=float)
        self._counts = np.zeros(len(self.buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values) -> None:
        v = np.asarray(values, dtype=float)
        if v.size == 0:
            return
        idx = np.searchsorted(self.buckets, v, side="left")
        counts = np.bincount(idx, minlength=len(self.buckets) + 1)
        with self._lock:
            self._counts += counts
            self._sum += float(v.sum())

    def collect(self):
        with self._lock:
            cum = np.cumsum(self._counts)
            total_sum = self._sum
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.buckets, cum[:-1])]
        buckets.append(("+Inf", int(cum[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total_sum)

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation, buckets=[("+Inf", 0)], sum_value=0)]


class EventsPerRecord:
    """Moving average of the events (predictions) per Kafka record of each input topic.

    Turns a lag in records into a lag in predictions: the route agent reports each batch;
    topics never reported count one event per record.

    >>> e = EventsPerRecord(alpha=0.5)
    >>> e.observe("p", 100.0); e.observe("p", 300.0); e.mean("p"), e.mean("other")
    (200.0, 1.0)
    """

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._mean: dict[str, float] = {}

    def observe(self, topic: str, events_per_record: float) -> None:
        old = self._mean.get(topic)
        self._mean[topic] = events_per_record if old is None else old + self.alpha * (events_per_record - old)

    def mean(self, topic: str) -> float:
        return self._mean.get(topic, 1.0)


class WorkerMetrics:
    """Every metric the route agent exports."""

    def __init__(self, registry: CollectorRegistry | None = None, model_limit: int = 50) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.model_label = BoundedLabels(model_limit)
        self.input_records = Counter("loopline_input_records_total",
                                     "Kafka records consumed, by topic.", ["topic"], registry=r)
        self.predictions = Counter("loopline_predictions_total",
                                   "Valid predictions routed (single events plus events inside batches), by model.",
                                   ["model"], registry=r)
        self.decisions = Counter("loopline_decisions_total", "Routing decisions published, by model and tier.",
                                 ["model", "tier"], registry=r)
        self.served_by_challenger = Counter(
            "loopline_served_by_challenger_total",
            "Auto-tier decisions served by the model's promoted challenger instead of the producer's prediction.",
            ["model"], registry=r)
        self.review_tasks = Counter("loopline_review_tasks_total", "Review tasks published, by tier.",
                                    ["tier"], registry=r)
        self.dead_letters = Counter("loopline_dead_letters_total",
                                    "Records sent to the dead-letter topic, by source topic and error class.",
                                    ["topic", "error_class"], registry=r)
        self.batch_seconds = Histogram("loopline_batch_seconds", "Wall time to process one agent batch.",
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                       registry=r)
        self.batch_size = Histogram("loopline_batch_predictions", "Predictions per agent batch.",
                                    buckets=(1, 10, 100, 500, 1000, 5000, 20000, 100000), registry=r)
        self.decision_latency = BatchHistogram(
            "loopline_decision_latency_seconds",
            "emitted_at of a prediction to its routing decision (producer clock vs worker clock).",
            (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), r)
        self.last_batch_ts = Gauge("loopline_last_batch_timestamp_seconds",
                                   "Unix time the route agent last finished a batch.", registry=r)
        self.corrections = Counter("loopline_corrections_total",
                                   "Corrections by join outcome: joined (training example published), duplicate "
                                   "(correction_id seen before), orphan (no review task within the TTL).",
                                   ["outcome"], registry=r)
        self.join_entries = Gauge("loopline_feedback_join_entries",
                                  "Entries in the correction join's state on this worker, by state: pending "
                                  "(review tasks), waiting (event_ids with corrections before their task), seen "
                                  "(correction ids kept for deduplication).", ["state"], registry=r)
        self.join_bytes = Gauge("loopline_feedback_join_bytes",
                                "Bytes the correction join's state takes on this worker's disk (RocksDB files and "
                                "write buffers; LOOPLINE_FEEDBACK_STORE=rocksdb only), by state.", ["state"], registry=r)
        self.join_evicted = Counter("loopline_feedback_join_evicted_total",
                                    "Join entries dropped before their TTL by LOOPLINE_FEEDBACK_MAX_ENTRIES.",
                                    registry=r)
        self.publish_retries = Counter("loopline_publish_retries_total",
                                       "Times a batch's outputs had to be re-sent after a producer error.",
                                       registry=r)
        self.publish_stalled = Gauge("loopline_publish_stalled_seconds",
                                     "Seconds the current batch's outputs have been failing to publish (0 = healthy); "
                                     "above LOOPLINE_PUBLISH_STALL_SECONDS /readyz answers 503.", registry=r)
        # predictions per Kafka record (a PredictionBatch holds up to 500), for lag in predictions
        self.per_record = EventsPerRecord()
        self.processing_errors = Counter("loopline_processing_errors_total",
                                         "Batches whose processing raised unexpectedly (records went to dead letter).",
                                         ["agent"], registry=r)
        self.mispartitioned = Counter(
            "loopline_mispartitioned_predictions_total",
            "Valid predictions that arrived on a partition other than partition_for(event_id) (murmur2): their "
            "producer does not use Kafka's default partitioner. Still routed and joined (review tasks go to "
            "partition_for(event_id)); see docs/clients.md for the producer setting.", ["model"], registry=r)
        self.stall_recoveries = Counter(
            "loopline_partition_stall_recoveries_total",
            "Assigned input partitions that had records to read but delivered none for 20 s outside a "
            "rebalance: woken (resumed, sought to the committed offset), and counted again when the worker "
            "then gives up and exits for its supervisor (see streams/stall_guard.py).", registry=r)
        self.watermark_clamps = Counter(
            "loopline_changelog_watermark_clamps_total",
            "Table recoveries where the broker reported a changelog high watermark below the offset this worker "
            "had already applied; the watermark was raised to that offset instead of crashing (see "
            "streams/recovery_guard.py).", registry=r)

    def record_route(self, topic: str, n_records: int, result) -> None:
        """Update every route metric once for a whole batch."""
        self.input_records.labels(topic).inc(n_records)
        if n_records:
            self.per_record.observe(topic, (result.predictions + sum(result.dead_by_class.values())) / n_records)
        per_model: dict[str, int] = {}
        for (model, tier), n in result.by_model_tier.items():
            m = self.model_label(model)
            self.decisions.labels(m, tier).inc(n)
            per_model[m] = per_model.get(m, 0) + n
        for m, n in per_model.items():
            self.predictions.labels(m).inc(n)
        for cls, n in result.dead_by_class.items():
            self.dead_letters.labels(topic, cls).inc(n)
        for r in getattr(result, "routed", ()):
            if r.served is not None:
                self.served_by_challenger.labels(self.model_label(r.frame.model_name)).inc(len(r.served.labels))
        for model, n in getattr(result, "mispartitioned", {}).items():
            self.mispartitioned.labels(self.model_label(model)).inc(n)
        tasks = {"review": 0, "escalate": 0}
        for out in result.outputs:
            if out.role == "review_analyst":
                tasks["review"] += 1
            elif out.role == "review_escalation":
                tasks["escalate"] += 1
        for tier, n in tasks.items():
            if n:
                self.review_tasks.labels(tier).inc(n)
        if result.latencies_ms:
            self.decision_latency.observe_many(np.concatenate(result.latencies_ms).astype(float) / 1000.0)
        self.batch_size.observe(result.predictions)
