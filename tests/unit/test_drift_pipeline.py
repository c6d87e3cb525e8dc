"""Worker collectors → DriftSummary-shaped messages → coordinator: the merge path without a broker."""
from __future__ import annotations

import json

import pytest

from loopline.processors.drift.board import DriftBoard
from loopline.processors.drift.collector import DriftCollector
from loopline.processors.drift.columns import Columns
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.coordinator import DriftCoordinator, PartitionWatermarks
from loopline.processors.drift.histogram import summary_from_bytes, summary_to_bytes
from loopline.processors.drift.policy import DriftPolicyBook
from loopline.processors.errors import ConfigError
from loopline.processors.testing import make_events
from loopline.processors.wire.frame import frames_from_events

CFG = DriftConfig(bucket_ms=1000, reference_events=3000, window_buckets=4, calibration_budgets=10)
PARTS = 4


def shifted_stream(n=30_000, change=15_000, shift=1.0, seed=3, model="fraud"):
    events = make_events(n, seed=seed, model=model, start_ms=0)
    for e in events[change:]:
        e["features_numeric"]["f00"] += shift
    return events


def run(events, assignment: list[list[int]], flush_every=1500, coordinator=None):
    """Route ``events`` through one collector per worker (partition = index % 4); return the DriftEvents."""
    coord = coordinator or DriftCoordinator(CFG, expected_partitions=PARTS, idle_ms=10**9)
    collectors = [DriftCollector(CFG) for _ in assignment]
    owner = {p: w for w, ps in enumerate(assignment) for p in ps}
    seq = [0] * len(assignment)
    out, now = [], 0
    for start in range(0, len(events), flush_every):
        chunk = events[start:start + flush_every]
        for p in range(PARTS):
            part = [e for i, e in enumerate(chunk, start) if i % PARTS == p]
            for f in frames_from_events(part):
                collectors[owner[p]].add_frame(f, p)
        for w, c in enumerate(collectors):
            for msg in c.flush():
                seq[w] += 1
                wire = {**msg, "worker_id": f"w{w}", "seq": seq[w],
                        "summary": summary_from_bytes(summary_to_bytes(msg["summary"]))}
                now += 1
                coord.ingest(wire, now)
                ev, _ = coord.advance(msg["model_name"], now)
                out += ev
                refs = coord.references_to_publish(msg["model_name"])
                if refs is not None:  # the agent publishes layouts; every worker bins from then on
                    for c2 in collectors:
                        c2.set_references(msg["model_name"], refs)
    return out, coord


def key(events):
    return [(e["signal"], e["detector"], e["state"], e["detected_at"], round(e["score"], 9)) for e in events]


def test_two_workers_give_the_verdicts_of_one():
    events = shifted_stream()
    one, c1 = run(events, [[0, 1, 2, 3]])
    two, c2 = run(events, [[0, 2], [1, 3]], flush_every=700)
    assert any(e["signal"] == "f00" and e["state"] == "started" for e in one), key(one)
    assert key(one) == key(two)
    assert all(e["signal"] == "f00" for e in one if e["state"] == "started")
    first = min(e["detected_at"] for e in one if e["state"] == "started")
    assert 15_000 <= first <= 17_000  # within 2,000 events (1 event per ms) of the change
    assert c1.status("fraud") == c2.status("fraud")


def test_workers_bin_after_the_reference_is_published():
    events = shifted_stream(n=12_000, change=12_000)
    coord = DriftCoordinator(CFG, expected_partitions=PARTS, idle_ms=10**9)
    run(events, [[0, 1], [2, 3]], coordinator=coord)
    c = DriftCollector(CFG)
    c.set_references("fraud", coord.references_to_publish("fraud", force=True))
    for f in frames_from_events(events[:100]):
        c.add_frame(f, 0)
    part = c.flush()[0]["summary"]["versions"]["v1"]
    assert part["rows"] is None and part["buckets"]  # counts, no raw rows on the wire


def test_duplicate_summary_is_ignored_and_unknown_layout_is_dropped():
    coord = DriftCoordinator(CFG, expected_partitions=1, idle_ms=10**9)
    c = DriftCollector(CFG)
    for f in frames_from_events(make_events(5000, start_ms=0)):
        c.add_frame(f, 0)
    msg = {**c.flush()[0], "worker_id": "w", "seq": 1}
    assert coord.ingest(msg, 1) is True
    assert coord.ingest(msg, 2) is False and coord.duplicates == 1
    coord.advance("fraud", 3)
    ref = coord.references_to_publish("fraud")
    assert ref and coord.references_to_publish("fraud") is None  # unchanged: not published again
    # a worker binning with a layout this coordinator does not hold (it lost its state)
    other = DriftCoordinator(CFG, expected_partitions=1, idle_ms=10**9)
    c.set_references("fraud", ref)
    for f in frames_from_events(make_events(100, start_ms=6000)):
        c.add_frame(f, 0)
    other.ingest({**c.flush()[0], "worker_id": "w", "seq": 2}, 1)
    assert other.mismatched == 1


def test_partition_watermark_waits_then_idle_partition_stops_holding_it():
    w = PartitionWatermarks(expected=2, idle_ms=1000)
    w.update({"0": 5000}, now_ms=0)
    assert w.watermark(500) is None          # partition 1 not heard yet: wait
    assert w.watermark(1000) == 5000         # waited idle_ms: go with what reported
    w.update({"1": 7000, "0": 5000}, now_ms=1100)
    assert w.watermark(1200) == 7000         # 0 has not moved for 1.2 s: idle, ignored
    w.update({"0": 6000}, now_ms=1300)
    assert w.watermark(1300) == 7000         # never decreases


def test_board_status_and_bounded_models():
    b = DriftBoard(max_models=2)
    ev = {"model_version": "v1", "detector": "psi", "score": 0.4, "threshold": 0.1, "window": "", "detected_at": 1}
    b.apply({**ev, "model_name": "a", "signal": "x", "state": "started"})
    b.apply({**ev, "model_name": "a", "signal": "confidence", "detector": "rank_cusum", "score": 30.0,
             "threshold": 10.0, "state": "started"})
    assert b.status("a") == "drifting: x (psi 0.4, 4.0x threshold), confidence (rank_cusum 30, 3.0x threshold)"
    b.apply({**ev, "model_name": "b", "signal": "x", "state": "started"})
    b.apply({**ev, "model_name": "c", "signal": "x", "state": "started"})
    assert len(b.models()) == 2 and "a" not in b.models()


def test_policy_book_rejects_bad_config():
    with pytest.raises(ConfigError, match="not valid JSON"):
        DriftPolicyBook.from_json("{mode")
    with pytest.raises(ConfigError, match="unknown option"):
        DriftPolicyBook.from_json(json.dumps({"fraud": {"mod": "retrain"}}))
    with pytest.raises(ConfigError, match="mode must be one of"):
        DriftPolicyBook.from_json(json.dumps({"*": {"mode": "panic"}}))


def test_large_reference_phase_is_split_into_bounded_messages():
    c = DriftCollector(CFG, max_rows_per_message=1000)
    for f in frames_from_events(make_events(3500, start_ms=0)):
        c.add_frame(f, 1)
    msgs = c.flush()
    sizes = [len(m["summary"]["versions"]["v1"]["rows"]["ids"]) for m in msgs]
    assert sorted(sizes) == [500, 1000, 1000, 1000]
    assert [m["partition_watermarks"] for m in msgs] == [{}, {}, {}, {"1": 3499}]  # only the last one
    ids = [i for m in msgs for i in m["summary"]["versions"]["v1"]["rows"]["ids"]]
    assert len(set(ids)) == 3500
    assert all(len(json.dumps(summary_to_bytes(m["summary"]).hex())) < 400_000 for m in msgs)


def test_joined_corrections_reach_the_summary_as_the_error_stream():
    c = DriftCollector(CFG)
    preds = make_events(3, start_ms=0)
    examples = [{"event_id": p["event_id"], "model_name": "fraud", "model_version": "v1", "action": a,
                 "label": lab, "effective_label": lab, "reviewed_at": 10 + i, "prediction": p}
                for i, (p, a, lab) in enumerate(zip(preds, ["approve", "override", "unsure"],
                                                    [preds[0]["predicted_label"], "other", None]))]
    c.add_examples(examples)
    out = c.flush()[0]["summary"]["versions"]["v1"]["outcomes"]
    assert out["ids"] == [preds[0]["event_id"], preds[1]["event_id"]]  # 'unsure' carries no label
    assert Columns.from_json(out).fields["error"].tolist() == [0.0, 1.0]


def test_binning_straight_from_frames_equals_binning_columns():
    from loopline.processors.drift.monitor import DriftMonitor

    mon = DriftMonitor("fraud", CFG)
    mon.update(make_events(4000, start_ms=0))
    profile = mon.profiles()["v1"]
    events = make_events(600, seed=9, start_ms=10_000)
    for e in events[::7]:
        e["features_categorical"]["country"] = "XX"  # unseen
        e["predicted_label"] = "new-label"
    for e in events[300:]:
        del e["features_numeric"]["f03"]  # a frame lacking a feature: missing bin
        e["features_numeric"]["extra"] = 1.0
    for f in frames_from_events(events):
        assert (profile.bin_frame(f) == profile.bin_columns(Columns.from_frame(f))).all()
