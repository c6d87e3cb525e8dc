"""Serde: single-object framing, Confluent framing (mock registry), typed errors."""
from __future__ import annotations

import struct

import pytest

from loopline.processors.errors import BadMagicError, TruncatedPayloadError, UnknownSchemaError
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH, AvroSerde

REG = SchemaCatalogue.load()
SERDE = AvroSerde(REG)


def test_single_object_round_trip():
    ev = make_events(1)[0]
    data = SERDE.encode(PREDICTION, ev)
    assert data[:2] == b"\xc3\x01" and data[2:10] == REG.current(PREDICTION).fingerprint
    name, got = SERDE.decode(data)
    assert name == PREDICTION and got == ev


def test_columnar_batch_round_trip():
    from loopline.processors.wire.frame import batch_from_events, events_of_batch

    evs = make_events(5)
    evs[2]["trace_id"] = "t-2"
    name, got = SERDE.decode(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs)))
    assert name == PREDICTION_BATCH and events_of_batch(got) == evs


def test_v1_writer_is_read_as_current():
    from io import BytesIO

    from fastavro import schemaless_writer

    v1 = next(v for v in REG.versions(PREDICTION) if v.label == "prediction_event_v1")
    ev = {k: v for k, v in make_events(1)[0].items() if k not in ("context", "trace_id")}
    buf = BytesIO()
    buf.write(b"\xc3\x01" + v1.fingerprint)
    schemaless_writer(buf, v1.parsed, ev)
    name, got = SERDE.decode(buf.getvalue())
    assert got["context"] is None and got["trace_id"] is None and got["confidence"] == ev["confidence"]


@pytest.mark.parametrize("data,error", [
    (b"", BadMagicError),
    (b"{\"json\": true}", BadMagicError),
    (b"\x00\x00\x00\x00\x01abc", BadMagicError),  # Confluent framing, no registry configured
    (b"\xc3\x01" + struct.pack("<Q", 42) + b"x", UnknownSchemaError),
    (b"\xc3\x01\x01", TruncatedPayloadError),
])
def test_bad_bytes_raise_typed_errors(data, error):
    with pytest.raises(error):
        SERDE.decode(data)


def test_truncated_and_trailing_bytes():
    data = SERDE.encode(PREDICTION, make_events(1)[0])
    with pytest.raises(TruncatedPayloadError):
        SERDE.decode(data[:-7])
    with pytest.raises(TruncatedPayloadError):
        SERDE.decode(data + b"\x00\x00")


def test_confluent_framing_with_mock_registry():
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from loopline.streams.confluent import RegistryFraming

    client = SchemaRegistryClient.new_client({"url": "mock://loopline-test"})
    serde = AvroSerde(REG, RegistryFraming("mock://loopline-test", REG, client=client))
    ev = make_events(1)[0]
    data = serde.encode(PREDICTION, ev)
    assert data[0] == 0
    name, got = serde.decode(data)
    assert name == PREDICTION and got == ev
    # the same decoder still reads single-object records
    assert serde.decode(SERDE.encode(PREDICTION, ev))[1] == ev
    with pytest.raises(UnknownSchemaError):
        serde.decode(b"\x00" + (999999).to_bytes(4, "big") + data[5:])


def test_incompatible_writer_schema_has_its_own_class_and_fastavro_message():
    """Issue #19 item 9: a writer schema missing a field the reader needs (no default) is not "truncated"."""
    import json
    from io import BytesIO

    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from fastavro import parse_schema, schemaless_writer

    from loopline.processors.errors import IncompatibleSchemaError
    from loopline.streams.confluent import RegistryFraming

    client = SchemaRegistryClient.new_client({"url": "mock://loopline-incompatible"})
    serde = AvroSerde(REG, RegistryFraming("mock://loopline-incompatible", REG, client=client))
    raw = json.loads(json.dumps(REG.raw(PREDICTION)))
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "confidence"]
    schema_id = client.register_schema("old-writer-value", Schema(json.dumps(raw), "AVRO"))
    ev = {k: v for k, v in make_events(1)[0].items() if k != "confidence"}
    buf = BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(buf, parse_schema(json.loads(json.dumps(raw))), ev)
    with pytest.raises(IncompatibleSchemaError, match="No default value for field confidence") as info:
        serde.decode(buf.getvalue())
    assert info.value.error_class == "incompatible_schema"


def test_cut_body_message_has_no_object_repr():
    data = SERDE.encode(PREDICTION, make_events(1)[0])
    for cut in range(11, len(data) - 1, 7):
        try:
            SERDE.decode(data[:cut])
        except TruncatedPayloadError as exc:
            assert "object at 0x" not in str(exc), str(exc)
