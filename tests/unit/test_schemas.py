"""The Avro contract: one named type per file, evolution, fingerprints."""
from __future__ import annotations

import json
from io import BytesIO

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from loopline.processors.wire.catalogue import SchemaCatalogue, _expand, schema_dir

REG = SchemaCatalogue.load()


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO written from the Avro specification, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp.to_bytes(8, "little")


def test_one_named_type_per_file():
    for path in list(schema_dir().glob("*.avsc")) + list((schema_dir() / "superseded").glob("*.avsc")):
        schema = json.loads(path.read_text())
        assert schema["type"] in ("record", "enum", "fixed"), path
        text = path.read_text()
        # nested named types would appear as a second '"name"' at type level; fields are named too, so
        # check that no field type is an inline record/enum
        for f in schema.get("fields", []):
            t = f["type"]
            inner = [t] if not isinstance(t, list) else t
            for x in inner:
                if isinstance(x, dict):
                    assert x["type"] not in ("record", "enum", "fixed"), f"{path.name}: {f['name']} inlines a named type"
        assert text


@pytest.mark.parametrize("name", REG.names)
def test_fingerprint_is_crc64_avro_of_canonical_form(name):
    v = REG.current(name)
    assert v.fingerprint == crc64_avro(to_parsing_canonical_form(v.expanded).encode())


def _example(name: str):
    from loopline.processors.testing import make_events

    ev = make_events(1)[0]
    examples = {
        "io.loopline.PredictionEvent": ev,
        "io.loopline.CorrectionEvent": {"correction_id": "c1", "event_id": "e1", "model_name": "m", "model_version": "1",
                                        "reviewer_id": "r1", "action": "override", "corrected_label": "fraud",
                                        "tier": "review", "reviewed_at": 5, "review_seconds": 3.5,
                                        "note": None, "source": "web"},
        "io.loopline.DecisionBatch": {"batch_id": "b", "model_name": "m", "model_version": "1", "policy_version": "p",
                                      "decided_at": 5, "event_ids": ["e1"], "tiers": b"\x00", "reasons": ["r"],
                                      "reason_codes": b"\x00" * 4, "sampling_propensity": b"\x00" * 8,
                                      "audited": b"\x00", "confidence": b"\x00" * 8, "labels": ["a"],
                                      "label_codes": b"\x00" * 4, "emitted_at": b"\x00" * 8},
        "io.loopline.RoutingDecision": {"event_id": "e1", "model_name": "m", "model_version": "1", "tier": "auto",
                                        "reason": "r", "policy_version": "p", "sampling_propensity": 0.5,
                                        "audited": True, "confidence": 0.9, "predicted_label": "a",
                                        "emitted_at": 5, "decided_at": 6},
    }
    return examples[name]


@pytest.mark.parametrize("name", ["io.loopline.PredictionEvent", "io.loopline.CorrectionEvent",
                                  "io.loopline.DecisionBatch", "io.loopline.RoutingDecision"])
def test_old_versions_are_read_with_the_current_schema(name):
    current = REG.current(name)
    old_versions = REG.superseded_raw(name)
    assert old_versions, f"{name} keeps its superseded versions"
    for label, old in old_versions:
        defs = {n: REG.raw(n) for n in REG.names}
        old_expanded = _expand(old, defs, set())
        old_fields = {f["name"] for f in old["fields"]}
        record = {k: v for k, v in _example(name).items() if k in old_fields}
        buf = BytesIO()
        schemaless_writer(buf, parse_schema(old_expanded), record)
        buf.seek(0)
        got = schemaless_reader(buf, parse_schema(old_expanded), parse_schema(current.expanded))
        for k in old_fields:
            if k in ("emitted_at", "reviewed_at", "decided_at"):
                continue  # logical type turns into datetime here
            assert got[k] == record[k]
        for f in REG.raw(name)["fields"]:
            if f["name"] not in old_fields:
                assert "default" in f, f"{name}.{f['name']} was added after {label} without a default"
                assert got[f["name"]] == f["default"]


def test_every_field_added_since_any_superseded_version_has_a_default():
    checked = 0
    for name in REG.names:
        current_fields = REG.raw(name).get("fields", [])
        for label, old in REG.superseded_raw(name):
            old_names = {f["name"] for f in old["fields"]}
            for f in current_fields:
                if f["name"] not in old_names:
                    assert "default" in f, f"{name}.{f['name']} added since {label} has no default"
                    checked += 1
    assert checked >= 4


def test_old_writer_fingerprints_resolve():
    for name in ("io.loopline.PredictionEvent", "io.loopline.ReviewTask"):
        labels = {v.label for v in REG.versions(name)}
        assert "current" in labels and "prediction_event_v1" in labels
