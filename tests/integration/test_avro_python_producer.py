"""A producer using the Apache Avro Python library's own single-object framing: 1,000 of 1,000 decided."""
from __future__ import annotations

import pytest
from confluent_kafka import Producer

from loopline.processors.routing.router import iter_decisions
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import PREDICTION, AvroSerde
from tests import avro_python
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
REG = SchemaCatalogue.load()
SERDE = AvroSerde(REG)


def test_avro_library_producer_is_decided(loopline_settings, worker):
    s = loopline_settings
    schema = avro_python.parse(REG, PREDICTION)
    assert schema.fingerprint() != REG.current(PREDICTION).fingerprint  # the variant, not the spec's
    events = make_events(1000, seed=12)
    prod = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
    for e in events:
        prod.produce(s.topics.predictions, key=e["event_id"].encode(),
                     value=avro_python.encode(schema, avro_python.to_avro_datum(e)))
    assert prod.flush(15) == 0
    msgs = read_topic(s.kafka_bootstrap, s.topics.decisions,
                      lambda m: sum(len(SERDE.decode(x.value())[1]["event_ids"]) for x in m) >= 1000,
                      timeout=60, settle=1.0)
    decided = [d["event_id"] for m in msgs for d in iter_decisions(SERDE, m.value())]
    assert sorted(decided) == sorted(e["event_id"] for e in events)
    assert read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: False, timeout=2) == []
