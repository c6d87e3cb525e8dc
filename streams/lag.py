"""Consumer lag of a worker, read from its Faust consumer at scrape time.

Two gauges per assigned input partition (``topic``, ``partition`` labels: a
closed set, partitions of Loopline's own topics):

* ``loopline_committed_offset`` — the offset this worker last committed for the
  partition (Kafka convention: the *next* offset to read); 0 while the group has
  committed nothing there yet;
* ``loopline_consumer_lag`` — high watermark minus committed offset: records on
  the broker that this worker has not committed yet;
* ``loopline_consumer_lag_predictions`` — the same lag in events: records times
  the moving average of events per record the route agent saw on that topic (a
  PredictionBatch record holds up to 500 predictions; other topics count 1).

Both are read from memory, never from the broker, so a scrape costs no network
round trip: the high watermark is the one the consumer learnt from its last
fetch response (aiokafka's ``highwater(tp)``), the committed offset the one
Faust recorded after its last successful commit. A partition whose high
watermark is unknown yet (no fetch answered) is left out. Table changelog
partitions are left out too: Faust never commits them, so their "lag" would
grow forever and trip the stalled-partition alert.

Each worker exports only the partitions assigned to it; ``max by (topic,
partition)`` across workers gives one series per partition (during a rebalance
two workers may briefly report the same partition).

>>> from prometheus_client import CollectorRegistry
>>> r = CollectorRegistry()
>>> _ = r.register(ConsumerLagCollector(app=None))
>>> r.get_sample_value("loopline_consumer_lag", {"topic": "t", "partition": "0"}) is None
True
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("loopline.lag")

LAG = "loopline_consumer_lag"
COMMITTED = "loopline_committed_offset"
LAG_EVENTS = "loopline_consumer_lag_predictions"


class ConsumerLagCollector(Collector):
    """Yields the lag and committed-offset gauges of ``app``'s consumer; empty before it runs."""

    def __init__(self, app, events_per_record: Callable[[str], float] = lambda topic: 1.0) -> None:
        self.app = app
        self.events_per_record = events_per_record

    def describe(self):
        return [GaugeMetricFamily(LAG, "", labels=["topic", "partition"]),
                GaugeMetricFamily(LAG_EVENTS, "", labels=["topic", "partition"]),
                GaugeMetricFamily(COMMITTED, "", labels=["topic", "partition"])]

    def offsets(self) -> dict[tuple[str, int], tuple[int, int]]:
        """``(topic, partition) -> (high watermark, committed offset)`` of the assigned input partitions."""
        consumer = getattr(self.app, "_consumer", None)  # never create a consumer from a scrape
        if consumer is None:
            return {}
        try:
            assigned = consumer.assignment()
            changelogs = self.app.tables.changelog_topics
        except Exception:  # consumer thread not started yet, or stopping: nothing to report
            return {}
        committed_map = getattr(consumer, "_committed_offset", {})
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in assigned:
            if tp.topic in changelogs:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: S112 (partition revoked between assignment() and here)
                continue
            if high is None:
                continue
            committed = committed_map.get(tp) or 0
            out[(tp.topic, tp.partition)] = (int(high), int(committed))
        return out

    def collect(self):
        lag = GaugeMetricFamily(LAG, "High watermark minus committed offset of each input partition assigned to "
                                     "this worker (records not yet committed).", labels=["topic", "partition"])
        lag_events = GaugeMetricFamily(LAG_EVENTS, "Consumer lag in events (predictions): records not yet "
                                                   "committed times the mean events per record of the topic.",
                                       labels=["topic", "partition"])
        committed = GaugeMetricFamily(COMMITTED, "Offset this worker last committed on each assigned input "
                                                 "partition (next offset to read; 0 = none yet).",
                                      labels=["topic", "partition"])
        try:
            offsets = self.offsets()
        except Exception:  # a scrape must never fail because of the consumer's state
            log.exception("reading consumer offsets failed")
            offsets = {}
        for (topic, partition), (high, done) in sorted(offsets.items()):
            labels = [topic, str(partition)]
            lag.add_metric(labels, max(0, high - done))
            lag_events.add_metric(labels, round(max(0, high - done) * self.events_per_record(topic)))
            committed.add_metric(labels, done)
        yield lag
        yield lag_events
        yield committed


def register_lag_metrics(worker, app) -> ConsumerLagCollector:
    """Register the lag gauges of ``app``'s consumer on ``worker.metrics.registry``."""
    collector = ConsumerLagCollector(app, worker.metrics.per_record.mean)
    worker.metrics.registry.register(collector)
    return collector
