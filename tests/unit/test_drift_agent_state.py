"""The drift agent's state survives a restart: references restored from its table, alarms resolved honestly."""
from __future__ import annotations

import types

from prometheus_client import CollectorRegistry

from loopline.processors.drift.collector import DriftCollector
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.policy import DriftPolicyBook
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import frames_from_events
from loopline.processors.wire.serde import AvroSerde
from loopline.streams.drift.agent import RESTART_WINDOW, DriftAgent
from loopline.streams.settings import Settings

CFG = DriftConfig(bucket_ms=1000, reference_events=3000, window_buckets=4, calibration_budgets=10)
SERDE = AvroSerde(SchemaCatalogue.load())


def agent(table: dict) -> DriftAgent:
    """A drift agent on the worker parts it uses (settings, serde, metrics registry) and a dict as its table."""
    worker = types.SimpleNamespace(settings=Settings(partitions=1), serde=SERDE, worker_id="w",
                                   metrics=types.SimpleNamespace(registry=CollectorRegistry()))
    rt = types.SimpleNamespace(config=CFG, policies=DriftPolicyBook(), references=[])
    return DriftAgent(worker, rt, table)


def summaries(events, seq0=0):
    c = DriftCollector(CFG)
    out = []
    for i in range(0, len(events), 1000):
        for f in frames_from_events(events[i:i + 1000]):
            c.add_frame(f, 0)
        out += [{**m, "worker_id": "w", "seq": seq0 + len(out) + k} for k, m in enumerate(c.flush())]
    return out


def decoded(records, name):
    return [SERDE.decode(r.value)[1] for r in records if SERDE.decode(r.value)[0] == name]


def test_restart_restores_references_and_resolves_active_alarms():
    """Also: a worker that loses the model's partition stops exporting its gauges."""
    table: dict = {}
    a = agent(table)
    events = make_events(12_000, start_ms=0)
    for e in events[8000:]:
        e["features_numeric"]["f00"] += 1.5
    out = []
    for m in summaries(events):
        if "fraud" not in a.coordinator.models:
            out += a._restore("fraud", 0)
        a.coordinator.ingest(m, 0)
        out += a._advance("fraud", False, 0)
    started = [e for e in decoded(out, "io.loopline.DriftEvent") if e["state"] == "started"]
    assert started and table["fraud"]["active"] and table["fraud"]["profiles"]
    fingerprint = a.coordinator.models["fraud"].monitor.profiles()["v1"].fingerprint
    exported = {tuple(s.labels.values()): s.value for m in a.metrics.active.collect() for s in m.samples}
    assert exported[("fraud", "f00")] == 1.0
    a._partition["fraud"] = 0
    a.forget({0})  # the model's drift-sketches partition moved to another worker
    assert "fraud" not in a.coordinator.models
    exported = {tuple(s.labels.values()) for m in a.metrics.active.collect() for s in m.samples}
    assert not any("fraud" in labels for labels in exported)  # no stale 1 left to keep an alert firing

    b = agent(table)  # the restarted owner, same table (restored from its changelog)
    restored = b._restore("fraud", 99)
    resolved = decoded(restored, "io.loopline.DriftEvent")
    assert {(e["signal"], e["detector"]) for e in resolved} == {(e["signal"], e["detector"]) for e in started}
    assert all(e["state"] == "resolved" and e["window"] == RESTART_WINDOW for e in resolved)
    refs = decoded(restored, "io.loopline.DriftReference")
    assert len(refs) == 1  # workers keep binning with the same layout
    assert b.coordinator.models["fraud"].monitor.profiles()["v1"].fingerprint == fingerprint
    assert table["fraud"]["active"] == []
    # the restored monitor uses the restored reference for binned counts at once (no new reference phase)
    c = DriftCollector(CFG)
    c.set_references("fraud", list(b.coordinator.models["fraud"].monitor.profiles().values()))
    for f in frames_from_events(make_events(2000, start_ms=20_000)):
        c.add_frame(f, 0)
    msg = {**c.flush()[0], "worker_id": "w2", "seq": 1}
    assert b.coordinator.ingest(msg, 100) and b.coordinator.mismatched == 0
