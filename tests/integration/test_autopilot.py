"""The autopilot in a real worker: audit answers on the broker move the threshold, logged with evidence.

The policy file's ``[models.X.autopilot]`` section is parsed by ``loopline.processors.policy.model``; the worker runs
``loopline.streams.quality.register_calibration`` next to the feedback agent.
"""
from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, AvroSerde
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())
POLICY = """
version = "ap-1"
[models.fraud.tiers.auto]
min_confidence = 0.95
audit_rate = 0.5
[models.fraud.autopilot]
error_budget = 0.05
confidence = 0.95
min_verified = 100
max_step = 0.02
interval_seconds = 1
window_minutes = 60
[[models.fraud.slices]]
attribute = "country"
kind = "context"
top_k = 3
"""


def test_audit_answers_loosen_the_threshold_with_logged_evidence(loopline_settings, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    s = loopline_settings.model_copy(update={"policy_file": policy})
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        events = make_events(600, seed=31)
        for i, e in enumerate(events):
            e["confidence"] = 0.99  # all auto; half of them audited
            e["context"] = {"country": ["DE", "FR"][i % 2], "channel": "web"}
        with PredictionProducer(s) as p:
            p.send_many(events)
        tasks = read_topic(s.kafka_bootstrap, s.topics.review_analyst, lambda m: len(m) >= 200, timeout=60,
                           settle=2.0)
        audits = [SERDE.decode(m.value())[1] for m in tasks]
        assert audits and all(t["audit"] for t in audits)
        by_id = {e["event_id"]: e for e in events}
        prod = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
        now = int(time.time() * 1000)
        for n, t in enumerate(audits):  # every audited prediction was right
            c = {"correction_id": f"c-{n}", "event_id": t["event_id"], "model_name": "fraud", "model_version": "v1",
                 "reviewer_id": "r-1", "action": "approve", "corrected_label": by_id[t["event_id"]]["predicted_label"],
                 "tier": t["tier"], "reviewed_at": now, "review_seconds": 1.0, "note": None, "source": "test"}
            prod.produce(s.topics.corrections, key=c["event_id"].encode(), value=SERDE.encode(CORRECTION, c))
        prod.flush(10)

        def autopilot_events(msgs):
            return [x for x in (SERDE.decode(m.value())[1] for m in msgs) if x.get("overlay") == "autopilot"]

        got = read_topic(s.kafka_bootstrap, s.topics.policy_events, lambda m: len(autopilot_events(m)) >= 1,
                         timeout=60)
        first = autopilot_events(got)[0]
        assert first["kind"] == "overlay_set" and first["model_name"] == "fraud"
        assert first["new_version"].startswith("ap-1+autopilot:fraud@")
        ev = first["evidence"]
        assert ev["old_threshold"] == 0.95 and ev["new_threshold"] == pytest.approx(0.93)
        assert ev["estimate"] == 0.0 and 0 < ev["upper"] <= 0.05 and ev["n"] >= 100
        stats = json.loads(worker.get("/stats"))
        ap = stats["calibration"]["autopilot"]["fraud"]
        assert ap["adjustments"][0]["evidence"] == ev and ap["threshold"] <= 0.93
        assert stats["calibration"]["calibration"]["models"]["fraud"]["all_time"]["outcomes"] == len(audits)
        metrics = worker.get("/metrics").decode()
        assert 'loopline_auto_error_budget{model="fraud"} 0.05' in metrics
        assert "loopline_autopilot_threshold{model=\"fraud\"}" in metrics
        assert 'loopline_slice_error_rate{model="fraud",slice="country=DE"} 0.0' in metrics
    finally:
        worker.stop()
