"""Answers meet their tasks whatever partitioner the prediction's producer used (issue #20).

Two workers in one group; predictions from a producer that sends no key and from
confluent-kafka with its default partitioner (librdkafka's CRC32
``consistent_random``, no ``partitioner`` setting); answers published with murmur2
by :class:`ReviewerClient`. Every answer must be joined into a training example
and none may be dead-lettered as an orphan.
"""
from __future__ import annotations

import re
import time

import pytest
from confluent_kafka import Producer

from loopline.connectors.broker import free_port
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.review.client import ReviewerClient
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import PREDICTION, AvroSerde
from tests.helpers import headers_dict, read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())


def _counter(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.M))


def test_null_key_and_crc32_producers_lose_no_answer(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"agents": "route,feedback", "waiting_ttl_seconds": 4.0,
                                             "feedback_expiry_interval_seconds": 1.0})
    workers = [WorkerProcess(s.model_copy(update={"web_port": free_port()}), tmp_path / f"w{i}.log") for i in range(2)]
    try:
        for w in workers:
            w.start()
        time.sleep(2 * s.session_timeout_seconds)  # both members in the group before traffic
        events = make_events(400, seed=41)
        for e in events:
            e["confidence"] = 0.75  # every one goes to the analyst queue
        null_key = Producer({"bootstrap.servers": s.kafka_bootstrap})
        crc32 = Producer({"bootstrap.servers": s.kafka_bootstrap})  # librdkafka default: consistent_random
        for e in events[:200]:
            null_key.produce(s.topics.predictions, value=SERDE.encode(PREDICTION, e))
        for e in events[200:]:
            crc32.produce(s.topics.predictions, key=e["event_id"].encode(), value=SERDE.encode(PREDICTION, e))
        assert null_key.flush(15) == 0 and crc32.flush(15) == 0

        answered: set[str] = set()
        deadline = time.monotonic() + 90
        with ReviewerClient(s, reviewer_id="r-20") as rc:
            while len(answered) < 400 and time.monotonic() < deadline:
                for task in rc.poll(timeout=2, max_tasks=200):
                    if task["event_id"] not in answered:
                        rc.submit(task, "approve")
                        answered.add(task["event_id"])
            rc.commit()
        assert answered == {e["event_id"] for e in events}

        training = read_topic(s.kafka_bootstrap, s.topics.training, lambda m: len(m) >= 400, timeout=60)
        joined = {SERDE.decode(m.value())[1]["event_id"] for m in training}
        assert joined == answered
        time.sleep(s.waiting_ttl_seconds + 3 * s.feedback_expiry_interval_seconds)  # an orphan would be out by now
        dead = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: False, timeout=4)
        orphans = [m for m in dead if headers_dict(m).get("loopline.error.class") == "orphan"]
        assert orphans == [] and dead == []
        metrics = [w.get("/metrics").decode() for w in workers]
        mis = sum(_counter(m, "loopline_mispartitioned_predictions_total") for m in metrics)
        print(f"\nmis-partitioned predictions seen: {mis:.0f} of 400; answers joined: {len(joined)} of 400")
        assert 0 < mis < 400  # ~3/4 of them with 4 partitions
    finally:
        for w in workers:
            w.stop()
