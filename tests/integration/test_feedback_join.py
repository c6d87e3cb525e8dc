"""The feedback agent on a real broker: corrections joined with review tasks into training examples;
early corrections wait, duplicates are dropped, orphans go to the dead-letter topic."""
from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, AvroSerde
from tests.helpers import headers_dict, read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())


def correction(event_id: str, cid: str, label: str = "fraud") -> dict:
    return {"correction_id": cid, "event_id": event_id, "model_name": "fraud", "model_version": "v1",
            "reviewer_id": "r-7", "action": "override", "corrected_label": label, "tier": "review",
            "reviewed_at": 1_800_000_000_000, "review_seconds": 4.2, "note": None, "source": "test"}


def test_join_waits_dedupes_and_dead_letters_orphans(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"waiting_ttl_seconds": 4.0, "feedback_expiry_interval_seconds": 1.0})
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        events = make_events(300, seed=21)
        for e in events:
            e["confidence"] = 0.75  # every one goes to the analyst queue
        ids = [e["event_id"] for e in events]
        prod = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True})

        def send(c):
            prod.produce(s.topics.corrections, key=c["event_id"].encode(), value=SERDE.encode(CORRECTION, c))

        early = [correction(i, f"early-{n}") for n, i in enumerate(ids[:20])]  # before their predictions exist
        for c in early:
            send(c)
        prod.flush(10)
        with PredictionProducer(s) as p:
            p.send_many(events)
        read_topic(s.kafka_bootstrap, s.topics.review_analyst, lambda m: len(m) >= 300, timeout=60)
        normal = [correction(i, f"c-{n}", "legit") for n, i in enumerate(ids[20:170])]
        dups = normal[:10]
        orphans = [correction(f"ghost-{uuid.uuid4().hex}", f"orphan-{n}") for n in range(10)]
        for c in normal + dups + orphans:
            send(c)
        prod.flush(10)

        expected = {c["correction_id"] for c in early + normal}
        training = read_topic(s.kafka_bootstrap, s.topics.training, lambda m: len(m) >= len(expected),
                              timeout=60, settle=2.0)
        examples = [SERDE.decode(m.value())[1] for m in training]
        assert sorted(x["correction_id"] for x in examples) == sorted(expected)  # exactly once each
        by_event = {e["event_id"]: e for e in events}
        for m, x in zip(training, examples):
            assert m.key() == b"fraud"
            assert x["prediction"] == by_event[x["event_id"]]
            assert x["tier"] == "review" and x["effective_label"] == x["label"]

        dl = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= 10, timeout=30, settle=1.5)
        assert sorted(SERDE.decode(m.value())[1]["correction_id"] for m in dl) == sorted(c["correction_id"] for c in orphans)
        for m in dl:
            h = headers_dict(m)
            assert h["loopline.error.class"] == "orphan" and h["loopline.source.topic"] == s.topics.corrections
            assert int(h["loopline.source.offset"]) >= 0
        metrics = worker.get("/metrics").decode()
        assert 'loopline_corrections_total{outcome="duplicate"} 10.0' in metrics
        assert f'loopline_corrections_total{{outcome="joined"}} {float(len(expected))}' in metrics
        assert 'loopline_corrections_total{outcome="orphan"} 10.0' in metrics
    finally:
        worker.stop()


def test_the_join_state_on_disk_is_swept_by_ttl_and_cap_and_late_answers_end_as_orphans(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"feedback_store": "rocksdb", "feedback_max_entries": 50,
                                             "feedback_sweep_seconds": 1.0, "feedback_expiry_interval_seconds": 1.0,
                                             "pending_ttl_seconds": 600.0, "waiting_ttl_seconds": 2.0})
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        events = make_events(300, seed=22)
        for e in events:
            e["confidence"] = 0.75  # every one goes to the analyst queue
        with PredictionProducer(s) as p:
            p.send_many(events)
        read_topic(s.kafka_bootstrap, s.topics.review_analyst, lambda m: len(m) >= 300, timeout=60)
        deadline = time.monotonic() + 30
        evicted = 0.0
        while time.monotonic() < deadline and evicted < 250:
            time.sleep(1)
            metrics = worker.get("/metrics").decode()
            evicted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                          if line.startswith("loopline_feedback_join_evicted_total "))
        assert evicted >= 250  # 300 tasks over a cap of 50: the sweep keeps 90% of the cap
        assert 'loopline_feedback_join_bytes{state="pending"}' in metrics
        prod = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
        late = [correction(e["event_id"], f"late-{n}") for n, e in enumerate(events)]
        for c in late:
            prod.produce(s.topics.corrections, key=c["event_id"].encode(), value=SERDE.encode(CORRECTION, c))
        prod.flush(10)
        training = read_topic(s.kafka_bootstrap, s.topics.training, lambda m: len(m) >= 40, timeout=30, settle=3.0)
        dl = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) + len(training) >= 300,
                        timeout=30, settle=3.0)
        joined = {SERDE.decode(m.value())[1]["correction_id"] for m in training}
        orphaned = {SERDE.decode(m.value())[1]["correction_id"] for m in dl}
        assert joined | orphaned == {c["correction_id"] for c in late} and not joined & orphaned  # one place each
        assert 40 <= len(joined) <= 50  # the tasks the cap kept
        assert all("LOOPLINE_FEEDBACK_MAX_ENTRIES" in headers_dict(m)["loopline.error.message"] for m in dl)
    finally:
        worker.stop()
