"""The hot path in memory: every input ends in exactly one place."""
from __future__ import annotations

import math

from benchmarks.events import make_events
from processors.router import InputRecord, Router, iter_decisions
from processors.schemas import SchemaRegistry
from processors.serde import PREDICTION, PREDICTION_BATCH, REVIEW_TASK, AvroSerde
from processors.threshold_policy import ThresholdPolicy

SERDE = AvroSerde(SchemaRegistry.load())
NOW = 1_800_000_000_000


def router():
    return Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000, worker="w1")


def test_mixed_inputs():
    evs = make_events(300, start_ms=NOW - 1000)
    evs[5]["confidence"] = 2.0  # bad inside a batch
    evs[250]["features_numeric"]["f00"] = math.nan  # bad single
    recs = [InputRecord(SERDE.encode(PREDICTION_BATCH, {"batch_id": "b", "events": evs[:200]}), "p", 1, 10)]
    recs += [InputRecord(SERDE.encode(PREDICTION, e), "p", 2, 100 + i) for i, e in enumerate(evs[200:])]
    recs.append(InputRecord(b"garbage", "p", 3, 7, headers=[("x", b"y")], key=b"k"))
    res = router().route(recs, now_ms=NOW)
    dec = [d for o in res.outputs if o.role == "decisions" for d in iter_decisions(SERDE, o.value)]
    assert len(dec) == 298 and len({d["event_id"] for d in dec}) == 298
    assert {o.partition for o in res.outputs if o.role == "decisions"} == {1, 2}
    dl = [o for o in res.outputs if o.role == "dead_letter"]
    assert len(dl) == 3
    h = {o.headers[-1][1] if False else dict(o.headers)["loopline.error.class"]: dict(o.headers) for o in dl}
    assert set(h) == {b"confidence_out_of_range", b"non_finite_feature", b"bad_magic"}
    batch_dl = next(o for o in dl if dict(o.headers)["loopline.error.class"] == b"confidence_out_of_range")
    assert dict(batch_dl.headers)["loopline.source.batch_index"] == b"5"
    assert SERDE.decode(batch_dl.value)[1]["event_id"] == evs[5]["event_id"]  # the bad event alone
    raw_dl = next(o for o in dl if dict(o.headers)["loopline.error.class"] == b"bad_magic")
    assert raw_dl.value == b"garbage" and raw_dl.key == b"k" and (b"x", b"y") in [(k.encode() if isinstance(k, str) else k, v) for k, v in raw_dl.headers]
    assert res.predictions == 300 and res.decided == 298 and res.dead_letters == 3


def test_review_tasks_carry_prediction_and_insights():
    evs = make_events(50, start_ms=NOW - 1000)
    res = router().route([InputRecord(SERDE.encode(PREDICTION_BATCH, {"batch_id": "b", "events": evs}), "p", 0, 0)],
                         now_ms=NOW)
    tasks = [SERDE.decode(o.value)[1] for o in res.outputs if o.role.startswith("review")]
    expected = sum(1 for e in evs if e["confidence"] < 0.9)
    assert len(tasks) == expected > 0
    for t in tasks:
        assert t["prediction"]["event_id"] == t["event_id"]
        assert t["insights"]["rule"].startswith("confidence<")
        assert t["due_by"] > NOW
        assert SERDE.decode(SERDE.encode(REVIEW_TASK, t))[0] == REVIEW_TASK


def test_wrong_type_on_topic_goes_to_dead_letter():
    from processors.serde import DRIFT_EVENT

    data = SERDE.encode(DRIFT_EVENT, {"model_name": "m", "model_version": "1", "signal": "s", "detector": "d",
                                      "score": 1.0, "threshold": 0.5, "window": "w", "state": "started",
                                      "detected_at": 0})
    res = router().route([InputRecord(data, "p", 0, 0)], now_ms=NOW)
    assert [dict(o.headers)["loopline.error.class"] for o in res.outputs] == [b"unexpected_type"]
