"""confluent-kafka's own AvroSerializer / AvroDeserializer against Loopline, through a schema registry.

The registry is :class:`tests.registry_stub.RegistryStub` — a small stand-in for
the Confluent REST API, because no real schema registry installs on this machine
(docker-compose runs the real one). The clients are the real ones from PyPI.
A CorrectionEvent schema that *references* ``io.loopline.Tier`` and
``io.loopline.CorrectionAction`` as separate subjects is the case that used to be
dead-lettered as "schema id N not resolvable".
"""
from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from loopline.connectors.processes import WorkerProcess
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue, schema_dir
from loopline.processors.wire.serde import CORRECTION, REVIEW_TASK
from loopline.streams.confluent import build_serde
from tests.helpers import read_topic
from tests.registry_stub import RegistryStub

pytestmark = pytest.mark.integration
REG = SchemaCatalogue.load()


def _avsc(name: str) -> str:
    return (schema_dir() / name).read_text()


def correction_serializer(client: SchemaRegistryClient) -> AvroSerializer:
    """CorrectionEvent as its own file spells it (Tier, CorrectionAction by name), with references."""
    client.register_schema("io.loopline.Tier", Schema(_avsc("tier.avsc"), "AVRO"))
    client.register_schema("io.loopline.CorrectionAction", Schema(_avsc("correction_action.avsc"), "AVRO"))
    refs = [SchemaReference("io.loopline.Tier", "io.loopline.Tier", 1),
            SchemaReference("io.loopline.CorrectionAction", "io.loopline.CorrectionAction", 1)]
    return AvroSerializer(client, Schema(_avsc("correction_event.avsc"), "AVRO", refs))


def correction(event_id: str, n: int, tier: str = "review") -> dict:
    return {"correction_id": f"c-{n}", "event_id": event_id, "model_name": "fraud", "model_version": "v1",
            "reviewer_id": "r-1", "action": "approve", "corrected_label": "legit", "tier": tier,
            "reviewed_at": 1_800_000_000_000 + n, "review_seconds": 3.5, "note": None, "source": "confluent"}


def test_references_resolved_both_ways(loopline_settings):
    with RegistryStub() as stub:
        client = SchemaRegistryClient({"url": stub.url})
        ser = correction_serializer(client)
        ctx = SerializationContext("corrections", MessageField.VALUE)
        serde = build_serde(loopline_settings.model_copy(update={"schema_registry_url": stub.url}), REG)
        sent = [correction(f"ev-{i}", i) for i in range(50)]
        for c in sent:
            data = ser(c, ctx)
            assert data[0] == 0  # Confluent framing
            name, got = serde.decode(data)
            assert name == CORRECTION and got == c
        assert stub.schemas[int.from_bytes(ser(sent[0], ctx)[1:5], "big")]["references"]  # it did use references
        # and the other way: Loopline writes, confluent-kafka's deserializer reads
        deser = AvroDeserializer(client)
        back = deser(serde.encode(CORRECTION, sent[0]), ctx)
        assert back["correction_id"] == "c-0" and back["tier"] == "review"
        assert int(back["reviewed_at"].timestamp() * 1000) == sent[0]["reviewed_at"]


def test_worker_with_a_registry_round_trips_confluent_clients(loopline_settings, tmp_path):
    with RegistryStub() as stub:
        s = loopline_settings.model_copy(update={"schema_registry_url": stub.url, "agents": "route,feedback",
                                                 "decision_events": True})
        worker = WorkerProcess(s, tmp_path / "worker.log").start()
        try:
            client = SchemaRegistryClient({"url": stub.url})
            pred_ser = AvroSerializer(client, json.dumps(REG.current("io.loopline.PredictionEvent").expanded))
            corr_ser = correction_serializer(client)
            deser = AvroDeserializer(client)
            prod = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
            events = make_events(60, seed=31)
            for e in events:
                e["confidence"] = 0.75  # all to review
                prod.produce(s.topics.predictions, key=e["event_id"].encode(),
                             value=pred_ser(e, SerializationContext(s.topics.predictions, MessageField.VALUE)))
            assert prod.flush(15) == 0
            tasks_msgs = read_topic(s.kafka_bootstrap, s.topics.review_analyst, lambda m: len(m) >= 60, timeout=60)
            tasks = [deser(m.value(), SerializationContext(m.topic(), MessageField.VALUE)) for m in tasks_msgs]
            assert sorted(t["event_id"] for t in tasks) == sorted(e["event_id"] for e in events)
            for n, t in enumerate(tasks):
                prod.produce(s.topics.corrections, key=t["event_id"].encode(),
                             value=corr_ser(correction(t["event_id"], n),
                                            SerializationContext(s.topics.corrections, MessageField.VALUE)))
            assert prod.flush(15) == 0
            training = read_topic(s.kafka_bootstrap, s.topics.training, lambda m: len(m) >= 60, timeout=60)
            examples = [deser(m.value(), SerializationContext(m.topic(), MessageField.VALUE)) for m in training]
            assert sorted(x["event_id"] for x in examples) == sorted(e["event_id"] for e in events)
            decisions = read_topic(s.kafka_bootstrap, s.topics.decisions, lambda m: len(m) >= 1, timeout=10)
            batch = deser(decisions[0].value(), SerializationContext(s.topics.decisions, MessageField.VALUE))
            assert batch["event_ids"] and batch["model_name"] == "fraud"
            rows = read_topic(s.kafka_bootstrap, s.topics.decision_events, lambda m: len(m) >= 60, timeout=30)
            per_event = {m.key().decode(): deser(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
                         for m in rows}
            assert set(per_event) == {e["event_id"] for e in events}
            assert all(d["tier"] == "review" and d["event_id"] == k for k, d in per_event.items())
            time.sleep(1.0)
            assert read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: False, timeout=2) == []
            # the worker registered its own output types under their type names
            assert {REVIEW_TASK, "io.loopline.TrainingExample", "io.loopline.DecisionBatch"} <= set(stub.subjects)
        finally:
            worker.stop()
