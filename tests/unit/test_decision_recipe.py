"""docs/clients.md's DecisionBatch recipe, followed with plain fastavro and struct (no Loopline code),
and the row-wise decision stream of the router."""
from __future__ import annotations

import json
import re
import struct
from io import BytesIO
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "clients.md").read_text()
TIERS = ("auto", "review", "escalate")


def _block(marker: str) -> str:
    m = re.search(rf"<!-- vector:{marker} -->\s*```\w*\n(.*?)```", DOC, re.S)
    assert m, f"docs/clients.md has no {marker} block"
    return m.group(1)


def _plain_schema(name: str):
    """The contract from schemas/*.avsc with fastavro alone (named types defined first)."""
    named: dict = {}
    for dep in ("tier.avsc",):
        fastavro.parse_schema(json.loads((REPO / "schemas" / dep).read_text()), named_schemas=named)
    raw = json.loads((REPO / "schemas" / name).read_text())
    return raw, fastavro.parse_schema(raw, named_schemas=named)


def plain_decode(data: bytes, schema_file: str) -> dict:
    raw, parsed = _plain_schema(schema_file)
    assert data[:2] == b"\xc3\x01"
    named: dict = {}
    fastavro.parse_schema(json.loads((REPO / "schemas" / "tier.avsc").read_text()), named_schemas=named)
    canonical = to_parsing_canonical_form(fastavro.parse_schema(raw, named_schemas=named, expand=True))
    assert data[2:10] == bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return fastavro.schemaless_reader(BytesIO(data[10:]), parsed, None)


def expand(b: dict) -> list[dict]:
    """The recipe of docs/clients.md, step by step."""
    rows = []
    for i, event_id in enumerate(b["event_ids"]):
        predicted = b["labels"][struct.unpack_from("<i", b["label_codes"], 4 * i)[0]]
        served = b["labels"][struct.unpack_from("<i", b["served_label_codes"], 4 * i)[0]] \
            if b.get("served_label_codes") else predicted
        rows.append({
            "event_id": event_id, "model_name": b["model_name"], "model_version": b["model_version"],
            "tier": TIERS[struct.unpack_from("<b", b["tiers"], i)[0]],
            "reason": b["reasons"][struct.unpack_from("<i", b["reason_codes"], 4 * i)[0]],
            "policy_version": b["policy_version"],
            "sampling_propensity": struct.unpack_from("<d", b["sampling_propensity"], 8 * i)[0],
            "audited": b["audited"][i] != 0,
            "confidence": struct.unpack_from("<d", b["confidence"], 8 * i)[0],
            "predicted_label": predicted,
            "emitted_at": struct.unpack_from("<q", b["emitted_at"], 8 * i)[0],
            "decided_at": b["decided_at"],
            "served_label": served if served != predicted else None,
            "served_by": b["served_by"][b["served_by_codes"][i]] if b.get("served_by") else "producer",
        })
    return rows


def _ms(v) -> int:
    return v if isinstance(v, int) else round(v.timestamp() * 1000)


def test_the_documented_vector_expands_to_the_documented_rows():
    data = bytes.fromhex("".join(_block("decision-batch").split()))
    batch = plain_decode(data, "decision_batch.avsc")
    batch["decided_at"] = _ms(batch["decided_at"])
    want = [json.loads(line) for line in _block("decision-rows").splitlines() if line.strip()]
    assert expand(batch) == want


def test_loopline_writes_the_documented_vector():
    from loopline.processors.routing.router import expand_decision_batch
    from loopline.processors.wire.catalogue import SchemaCatalogue
    from loopline.processors.wire.serde import DECISION_BATCH, AvroSerde

    serde = AvroSerde(SchemaCatalogue.load())
    data = bytes.fromhex("".join(_block("decision-batch").split()))
    name, rec = serde.decode(data)
    assert name == DECISION_BATCH and serde.encode(DECISION_BATCH, rec) == data
    want = [json.loads(line) for line in _block("decision-rows").splitlines() if line.strip()]
    assert list(expand_decision_batch(rec)) == want


def test_router_publishes_one_keyed_decision_event_per_prediction():
    from loopline.processors.policy.threshold import ThresholdPolicy
    from loopline.processors.routing.router import InputRecord, Router, iter_decisions
    from loopline.processors.testing import make_events
    from loopline.processors.wire.catalogue import SchemaCatalogue
    from loopline.processors.wire.frame import batch_from_events
    from loopline.processors.wire.partitioning import partition_for
    from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH, AvroSerde

    serde = AvroSerde(SchemaCatalogue.load())
    now = 1_800_000_000_000
    evs = make_events(300, start_ms=now - 1000)
    recs = [InputRecord(serde.encode(PREDICTION_BATCH, batch_from_events(evs[:200], "b")), "p", 1, 0)]
    recs += [InputRecord(serde.encode(PREDICTION, e), "p", 3, i) for i, e in enumerate(evs[200:])]
    off = Router(serde, ThresholdPolicy(0.9, 0.6), 300_000, partitions=4).route(recs, now_ms=now)
    assert not [o for o in off.outputs if o.role == "decision_events"]  # off by default
    res = Router(serde, ThresholdPolicy(0.9, 0.6), 300_000, partitions=4, decision_events=True).route(recs, now_ms=now)
    rows = [o for o in res.outputs if o.role == "decision_events"]
    assert sorted(o.key.decode() for o in rows) == sorted(e["event_id"] for e in evs)
    batched = {d["event_id"]: d for o in res.outputs if o.role == "decisions" for d in iter_decisions(serde, o.value)}
    for o in rows:
        assert o.partition == partition_for(o.key, 4)
        d = plain_decode(o.value, "routing_decision.avsc")  # plain fastavro reads it
        d["emitted_at"], d["decided_at"] = _ms(d["emitted_at"]), _ms(d["decided_at"])
        assert d == batched[o.key.decode()]
