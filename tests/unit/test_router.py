"""The hot path in memory: every input ends in exactly one place."""
from __future__ import annotations

import math

import numpy as np
import pytest

from loopline.processors.policy.threshold import ThresholdPolicy
from loopline.processors.routing.frame_checks import invalid_rows
from loopline.processors.routing.router import InputRecord, Router, iter_decisions
from loopline.processors.routing.validation import check_prediction
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events, frames_from_events
from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH, REVIEW_TASK, AvroSerde

SERDE = AvroSerde(SchemaCatalogue.load())
NOW = 1_800_000_000_000


def router():
    return Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000, worker="w1", max_decisions_per_record=64)


def headers(o):
    return {k: v for k, v in o.headers}


def test_mixed_inputs():
    evs = make_events(300, start_ms=NOW - 1000)
    evs[5]["confidence"] = 2.0  # bad inside a batch
    evs[250]["features_numeric"]["f00"] = math.nan  # bad single
    recs = [InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs[:200], "b")), "p", 1, 10)]
    recs += [InputRecord(SERDE.encode(PREDICTION, e), "p", 2, 100 + i) for i, e in enumerate(evs[200:])]
    recs.append(InputRecord(b"garbage", "p", 3, 7, headers=[("x", b"y")], key=b"k"))
    res = router().route(recs, now_ms=NOW)
    dec_records = [o for o in res.outputs if o.role == "decisions"]
    dec = [d for o in dec_records for d in iter_decisions(SERDE, o.value)]
    assert len(dec) == 298 and len({d["event_id"] for d in dec}) == 298
    assert {o.partition for o in dec_records} == {1, 2}
    assert all(sum(1 for _ in iter_decisions(SERDE, o.value)) <= 64 for o in dec_records)
    by_id = {e["event_id"]: e for e in evs}
    for d in dec:  # decisions echo their prediction
        e = by_id[d["event_id"]]
        assert d["confidence"] == e["confidence"] and d["predicted_label"] == e["predicted_label"]
        assert d["tier"] == ("auto" if e["confidence"] >= 0.9 else "escalate" if e["confidence"] < 0.6 else "review")
    dl = [o for o in res.outputs if o.role == "dead_letter"]
    assert len(dl) == 3
    classes = {headers(o)["loopline.error.class"] for o in dl}
    assert classes == {b"confidence_out_of_range", b"non_finite_feature", b"bad_magic"}
    batch_dl = next(o for o in dl if headers(o)["loopline.error.class"] == b"confidence_out_of_range")
    assert headers(batch_dl)["loopline.source.batch_index"] == b"5"
    assert SERDE.decode(batch_dl.value)[1] == evs[5]  # the bad event alone
    single_dl = next(o for o in dl if headers(o)["loopline.error.class"] == b"non_finite_feature")
    assert single_dl.value == recs[1 + 50].value and headers(single_dl)["loopline.source.offset"] == b"150"
    raw_dl = next(o for o in dl if headers(o)["loopline.error.class"] == b"bad_magic")
    assert raw_dl.value == b"garbage" and raw_dl.key == b"k" and ("x", b"y") in raw_dl.headers
    assert res.predictions == 300 and res.decided == 298 and res.dead_letters == 3


def test_singles_with_different_feature_sets_are_all_decided():
    evs = make_events(40, start_ms=NOW - 1000)
    for e in evs[::3]:
        e["features_numeric"]["extra"] = 1.0
    for e in evs[::4]:
        e["risk"] = None
    res = router().route([InputRecord(SERDE.encode(PREDICTION, e), "p", 0, i) for i, e in enumerate(evs)], now_ms=NOW)
    dec = [d for o in res.outputs if o.role == "decisions" for d in iter_decisions(SERDE, o.value)]
    assert sorted(d["event_id"] for d in dec) == sorted(e["event_id"] for e in evs)


def test_review_tasks_carry_prediction_and_insights():
    evs = make_events(50, start_ms=NOW - 1000)
    res = router().route([InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs)), "p", 0, 0)], now_ms=NOW)
    tasks = [SERDE.decode(o.value)[1] for o in res.outputs if o.role.startswith("review")]
    expected = sum(1 for e in evs if e["confidence"] < 0.9)
    assert len(tasks) == expected > 0
    by_id = {e["event_id"]: e for e in evs}
    for t in tasks:
        assert t["prediction"] == by_id[t["event_id"]]
        assert t["insights"]["rule"].startswith("confidence<")
        assert t["due_by"] > NOW
        assert SERDE.decode(SERDE.encode(REVIEW_TASK, t))[0] == REVIEW_TASK


def test_wrong_type_on_topic_goes_to_dead_letter():
    from loopline.processors.wire.serde import DRIFT_EVENT

    data = SERDE.encode(DRIFT_EVENT, {"model_name": "m", "model_version": "1", "signal": "s", "detector": "d",
                                      "score": 1.0, "threshold": 0.5, "window": "w", "state": "started",
                                      "detected_at": 0})
    res = router().route([InputRecord(data, "p", 0, 0)], now_ms=NOW)
    assert [headers(o)["loopline.error.class"] for o in res.outputs] == [b"unexpected_type"]


def test_inconsistent_batch_columns_go_to_dead_letter():
    rec = batch_from_events(make_events(10, start_ms=NOW))
    rec["confidence"] = rec["confidence"][:-8]
    res = router().route([InputRecord(SERDE.encode(PREDICTION_BATCH, rec), "p", 0, 0)], now_ms=NOW)
    assert [headers(o)["loopline.error.class"] for o in res.outputs] == [b"truncated_payload"]
    assert res.predictions == 0


@pytest.mark.parametrize("mutate", [
    lambda e: e.update(confidence=-0.5), lambda e: e.update(confidence=math.nan),
    lambda e: e["features_numeric"].update(f01=math.inf), lambda e: e["risk"].update(amount=math.nan),
    lambda e: e["class_probabilities"].update(legit=-math.inf), lambda e: e.update(event_id=""),
    lambda e: e.update(emitted_at=NOW + 10**9), lambda e: None,
])
def test_vectorised_checks_agree_with_row_rules(mutate):
    evs = make_events(20, start_ms=NOW - 10)
    mutate(evs[7])
    frame = frames_from_events(evs)[0]
    mask = invalid_rows(frame, NOW, 300_000)
    expected = np.array([check_prediction(frame.row(i), NOW, 300_000) is not None for i in range(frame.n)])
    assert (mask == expected).all()


def test_review_tasks_go_to_the_partition_of_their_answers_whatever_the_input_partition():
    from loopline.processors.wire.partitioning import partition_for

    evs = make_events(400, start_ms=NOW - 1000)
    for e in evs:
        e["confidence"] = 0.75  # every one becomes a review task
    # all on partition 0, as a null-key or CRC32 producer may send them; a batch on partition 2
    recs = [InputRecord(SERDE.encode(PREDICTION, e), "p", 0, i) for i, e in enumerate(evs[:300])]
    recs.append(InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs[300:], "b")), "p", 2, 0))
    r = Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000, partitions=4)
    res = r.route(recs, now_ms=NOW)
    tasks = [o for o in res.outputs if o.role == "review_analyst"]
    assert len(tasks) == 400
    for t in tasks:
        assert t.partition == partition_for(t.key, 4)
    homes = [partition_for(e["event_id"].encode(), 4) for e in evs]
    want = sum(h != 0 for h in homes[:300]) + sum(h != 2 for h in homes[300:])
    assert 0 < want < 400 and sum(res.mispartitioned.values()) == want
    assert set(res.mispartitioned) <= {e["model_name"] for e in evs}
    # decisions stay with their input partition (no join depends on them)
    assert {o.partition for o in res.outputs if o.role == "decisions"} == {0, 2}


def test_murmur2_producer_has_no_mispartitioned_predictions():
    from loopline.processors.wire.partitioning import partition_for

    evs = make_events(200, start_ms=NOW - 1000)
    recs = [InputRecord(SERDE.encode(PREDICTION, e), "p", partition_for(e["event_id"].encode(), 4), i)
            for i, e in enumerate(evs)]
    res = Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000, partitions=4).route(recs, now_ms=NOW)
    assert res.decided == 200 and sum(res.mispartitioned.values()) == 0
