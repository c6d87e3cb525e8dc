"""LOOPLINE_DECISION_EVENTS=true: one RoutingDecision per prediction, keyed by event_id, readable with
plain fastavro and the .avsc files (no Loopline code on the reading side)."""
from __future__ import annotations

import pytest

from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.testing import make_events
from loopline.processors.wire.partitioning import partition_for
from tests.helpers import read_topic
from tests.unit.test_decision_recipe import plain_decode

pytestmark = pytest.mark.integration


def test_decision_events_topic(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"agents": "route", "decision_events": True})
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        events = make_events(500, seed=8)
        with PredictionProducer(s, batch_size=100) as p:
            p.send_many(events)
        msgs = read_topic(s.kafka_bootstrap, s.topics.decision_events, lambda m: len(m) >= 500, timeout=60, settle=1.0)
        by_id = {e["event_id"]: e for e in events}
        assert sorted(m.key().decode() for m in msgs) == sorted(by_id)  # exactly one each
        for m in msgs:
            d = plain_decode(m.value(), "routing_decision.avsc")
            assert d["event_id"] == m.key().decode() and d["confidence"] == by_id[d["event_id"]]["confidence"]
            assert m.partition() == partition_for(m.key(), s.partitions)
    finally:
        worker.stop()
