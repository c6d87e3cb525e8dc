"""The Apache Avro Python library (``avro`` 1.12) against Loopline's schema catalogue.

That library's canonical form keeps logical-typed primitives as ``{"type":"long"}``,
so its fingerprints differ from the spec's for every type with a timestamp field;
Loopline accepts them as aliases and names the known fingerprints when it refuses one.
"""
from __future__ import annotations

import avro.schema
import pytest
from fastavro.schema import to_parsing_canonical_form

from loopline.processors.errors import UnknownSchemaError
from loopline.processors.testing import make_events
from loopline.processors.wire.canonical import canonical_form, crc64_avro
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, PREDICTION, PREDICTION_BATCH, AvroSerde
from tests import avro_python

REG = SchemaCatalogue.load()
SERDE = AvroSerde(REG)
VERSIONS = [v for name in REG.names for v in REG.versions(name)]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.name.rsplit('.', 1)[-1]}-{v.label}")
def test_every_version_is_known_by_the_avro_librarys_fingerprint(version):
    import json

    lib = avro.schema.parse(json.dumps(version.expanded))
    assert canonical_form(version.expanded) == to_parsing_canonical_form(version.expanded)  # spec form
    assert canonical_form(version.expanded, avro_python=True) == lib.canonical_form  # the library's form
    assert crc64_avro(canonical_form(version.expanded).encode()) == version.fingerprint
    assert REG.by_fingerprint(lib.fingerprint()) is version  # spec fingerprint or alias: the same version


def test_the_prediction_event_fingerprints_differ_only_by_the_variant():
    cur = REG.current(PREDICTION)
    lib = avro_python.parse(REG, PREDICTION)
    assert cur.fingerprint.hex() == "ea4d463b976eb87a" and lib.fingerprint().hex() == "cb9076a7b9ebc8ce"
    assert REG.aliases(PREDICTION) and not REG.aliases(PREDICTION_BATCH)  # no timestamp field: no alias


def test_records_written_by_the_avro_library_decode_whatever_version():
    events = make_events(200, seed=4)
    lib = avro_python.parse(REG, PREDICTION)
    for e in events:
        name, got = SERDE.decode(avro_python.encode(lib, avro_python.to_avro_datum(e)))
        assert name == PREDICTION and got == e
    old = avro_python.parse(REG, PREDICTION, "prediction_event_v1")
    v1_fields = {f.name for f in old.fields}
    e = {k: v for k, v in events[0].items() if k in v1_fields}
    name, got = SERDE.decode(avro_python.encode(old, avro_python.to_avro_datum(e)))
    assert name == PREDICTION and got["event_id"] == e["event_id"]  # resolved to the current version


def test_the_avro_library_reads_loopline_records():
    events = make_events(50, seed=5)
    lib = avro_python.parse(REG, PREDICTION)
    for e in events:
        data = SERDE.encode(PREDICTION, e)
        assert REG.by_fingerprint(data[2:10]) is REG.by_fingerprint(lib.fingerprint())
        back = avro_python.decode_body(lib, data)
        assert back["event_id"] == e["event_id"]
        assert int(back["emitted_at"].timestamp() * 1000) == e["emitted_at"]


def test_an_unknown_fingerprint_names_the_known_ones():
    data = b"\xc3\x01" + bytes(range(8)) + b"\x00"
    with pytest.raises(UnknownSchemaError) as err:
        SERDE.decode(data, expect=(PREDICTION, PREDICTION_BATCH))
    msg = str(err.value)
    assert "0001020304050607" in msg
    for fp, _, _ in REG.fingerprints(PREDICTION) + REG.fingerprints(PREDICTION_BATCH):
        assert fp.hex() in msg
    assert REG.current(CORRECTION).fingerprint.hex() not in msg  # only the expected types
    with pytest.raises(UnknownSchemaError) as err:
        SERDE.decode(data)  # no hint: the types producers write
    assert REG.current(CORRECTION).fingerprint.hex() in str(err.value) and len(str(err.value)) < 500
