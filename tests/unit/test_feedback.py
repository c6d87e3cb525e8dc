"""The correction join in memory: every correction ends in exactly one place."""
from __future__ import annotations

import random

from loopline.processors.feedback.join import FeedbackJoin, effective_label
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde

SERDE = AvroSerde(SchemaCatalogue.load())


def task(i: int, tier: str = "review", audit: bool = False) -> dict:
    ev = make_events(1, seed=i, start_ms=1000)[0]
    return {"task_id": f"{ev['event_id']}:{tier}", "event_id": ev["event_id"], "model_name": "fraud",
            "model_version": "v1", "tier": tier, "priority": 5, "reason": "confidence<0.9",
            "policy_version": "p1", "audit": audit, "sampling_propensity": 0.05 if audit else 1.0,
            "created_at": 1000, "due_by": 5000, "prediction": ev,
            "insights": {"confidence": 0.7, "rule": "x", "override_risk": None, "drift_status": None,
                         "online_prediction": None, "top_contributions": []}}


def corr(t: dict, cid: str, action="override", label="fraud", tier=None, at=2000) -> dict:
    return {"correction_id": cid, "event_id": t["event_id"], "model_name": "fraud", "model_version": "v1",
            "reviewer_id": "r1", "action": action, "corrected_label": label, "tier": tier or t["tier"],
            "reviewed_at": at, "review_seconds": 3.0, "note": None, "source": "test"}


def join():
    return FeedbackJoin({}, {}, {}, pending_ttl_ms=10_000, waiting_ttl_ms=5_000)


def test_task_then_correction_yields_one_valid_example():
    j, t = join(), task(1)
    assert j.on_task(t, 1000).examples == []
    out = j.on_correction(corr(t, "c1"), 2000)
    assert len(out.examples) == 1
    ex = out.examples[0]
    assert ex["prediction"] == t["prediction"] and ex["label"] == "fraud" and ex["effective_label"] == "fraud"
    SERDE.encode("io.loopline.TrainingExample", ex)  # matches the contract


def test_correction_before_task_waits_then_joins():
    j, t = join(), task(2)
    assert j.on_correction(corr(t, "c1"), 1000).examples == []
    assert t["event_id"] in j.waiting
    out = j.on_task(t, 2000)
    assert [e["correction_id"] for e in out.examples] == ["c1"] and t["event_id"] not in j.waiting


def test_duplicate_correction_is_dropped_and_counted():
    j, t = join(), task(3)
    j.on_task(t, 0)
    assert len(j.on_correction(corr(t, "c1"), 1).examples) == 1
    out = j.on_correction(corr(t, "c1"), 2)
    assert out.examples == [] and out.duplicates == 1


def test_orphan_after_waiting_ttl_and_for_expired_task():
    j, t, late = join(), task(4), task(5)
    j.on_correction(corr(t, "c1"), 0)
    assert j.expire(4_999).orphans == []
    orphans = j.expire(5_000).orphans
    assert [c["correction_id"] for c, _ in orphans] == ["c1"] and not j.waiting
    j.on_task(late, 0)
    j.expire(10_000)  # the task expires
    j.on_correction(corr(late, "c2"), 10_001)
    assert [c["correction_id"] for c, _ in j.expire(15_001).orphans] == ["c2"]


def test_conflicting_answers_all_kept_and_rule_applied():
    j, t = join(), task(6)
    j.on_task(t, 0)
    a = j.on_correction(corr(t, "c1", "override", "fraud", "review", at=10), 1).examples[0]
    b = j.on_correction(corr(t, "c2", "approve", "legit", "escalate", at=5), 2).examples[0]
    c = j.on_correction(corr(t, "c3", "override", "fraud", "review", at=20), 3).examples[0]
    d = j.on_correction(corr(t, "c4", "unsure", None, "escalate", at=30), 4).examples[0]
    assert [x["label"] for x in (a, b, c, d)] == ["fraud", "legit", "fraud", None]
    assert [x["effective_label"] for x in (a, b, c, d)] == ["fraud", "legit", "legit", "legit"]
    assert d["answers_so_far"] == 4


def test_effective_label_none_when_nobody_labelled():
    assert effective_label([{"tier": "review", "action": "unsure", "corrected_label": None, "reviewed_at": 1}]) is None


def test_every_correction_ends_in_exactly_one_place_and_state_is_bounded():
    rnd = random.Random(5)
    j = join()
    tasks = [task(i) for i in range(300)]
    events = []
    for i, t in enumerate(tasks):
        if i % 10 != 0:  # 10% of corrections have no task at all
            events.append(("task", rnd.uniform(0, 1000), t))
        events.append(("corr", rnd.uniform(0, 1500), corr(t, f"c{i}")))
        if i % 7 == 0:
            events.append(("corr", rnd.uniform(0, 1500), corr(t, f"c{i}")))  # redelivery
    events.sort(key=lambda e: e[1])
    joined, orphans, dups = set(), set(), 0
    for kind, at, obj in events:
        out = j.on_task(obj, int(at)) if kind == "task" else j.on_correction(obj, int(at))
        joined |= {e["correction_id"] for e in out.examples}
        dups += out.duplicates
        orphans |= {c["correction_id"] for c, _ in j.expire(int(at)).orphans}
    orphans |= {c["correction_id"] for c, _ in j.expire(100_000).orphans}
    assert joined.isdisjoint(orphans)
    assert joined | orphans == {f"c{i}" for i in range(300)}
    assert orphans == {f"c{i}" for i in range(0, 300, 10)}
    assert dups == len(range(0, 300, 7))
    assert not j.pending and not j.waiting and not j.seen  # everything expires: bounded by the TTLs


def test_the_cap_keeps_the_join_bounded_and_every_answer_ends_somewhere():
    """Producers and reviewer tools choose the keys: over ``max_entries`` the state shrinks, the
    tasks closest to expiry go first, and an answer to a dropped task is an orphan that says why."""
    j = FeedbackJoin({}, {}, {}, pending_ttl_ms=10_000, waiting_ttl_ms=5_000, max_entries=10)
    tasks = [task(100 + i) for i in range(25)]
    for i, t in enumerate(tasks):
        j.on_task(t, 1000 + i)  # later tasks expire later
    out = j.expire(1100)
    assert len(j.pending) == 9 and out.evicted == 16
    assert set(j.pending) == {t["event_id"] for t in tasks[16:]}  # the newest stay
    kept = j.on_correction(corr(tasks[-1], "c-kept"), 1200)
    assert len(kept.examples) == 1
    late = j.on_correction(corr(tasks[0], "c-late"), 1200)  # its task was dropped by the cap
    assert late.examples == [] and late.orphans == []
    out = j.expire(1200)  # orphaned at the next tick, not after the waiting TTL
    assert [c["correction_id"] for c, _ in out.orphans] == ["c-late"]
    assert "LOOPLINE_FEEDBACK_MAX_ENTRIES" in out.orphans[0][1]


def test_the_cap_turns_excess_waiting_corrections_into_orphans():
    j = FeedbackJoin({}, {}, {}, pending_ttl_ms=10_000, waiting_ttl_ms=5_000, max_entries=10)
    stray = [task(200 + i) for i in range(30)]  # corrections for tasks that never arrive
    for i, t in enumerate(stray):
        j.on_correction(corr(t, f"w{i}"), 1000 + i)
    out = j.expire(1100)
    assert len(j.waiting) == 9
    assert sorted(c["correction_id"] for c, _ in out.orphans) == sorted(f"w{i}" for i in range(21))
    assert len(out.orphan_sources) == len(out.orphans)
    assert len(j.seen) == 9  # seen ids are capped too (deduplication is weaker past the cap, never wrong)


def test_no_cap_by_zero():
    j = FeedbackJoin({}, {}, {}, pending_ttl_ms=10_000, waiting_ttl_ms=5_000, max_entries=0)
    for i in range(50):
        j.on_task(task(300 + i), 1000)
    assert j.expire(1100).evicted == 0 and len(j.pending) == 50


def test_a_replay_of_the_same_record_re_emits_its_example_and_a_copy_in_another_record_is_a_duplicate():
    j, t = join(), task(41)
    j.on_task(t, 0)
    at = {"topic": "loopline.corrections", "partition": 2, "offset": 7}
    assert len(j.on_correction(corr(t, "c1"), 1, at).examples) == 1
    again = j.on_correction(corr(t, "c1"), 2, dict(at))  # read again after a crash
    assert len(again.examples) == 1 and again.duplicates == 0
    assert len(j.pending[t["event_id"]]["answers"]) == 1  # the answer itself is kept once
    copy = j.on_correction(corr(t, "c1"), 3, {**at, "offset": 8})  # the same answer sent twice
    assert copy.examples == [] and copy.duplicates == 1
    j.seen["old"] = 5  # an entry saved by an earlier version (expiry only) still expires
    j.expire(10_000_000)
    assert not j.seen


def test_between_sweeps_answers_still_orphan_on_time_and_tasks_outlive_their_ttl_until_the_sweep():
    j, t, early = join(), task(1), task(2)
    j.on_task(early, 1000)
    j.on_correction(corr(t, "c1"), 2000)  # its task never comes
    out = j.expire(7_000, sweep=False)  # a tick of a worker whose state is on disk
    assert [c["correction_id"] for c, _ in out.orphans] == ["c1"]  # waiting answers: every tick
    j.expire(12_000, sweep=False)
    assert early["event_id"] in j.pending  # expired, kept until the next sweep
    j.expire(12_000, sweep=True)
    assert early["event_id"] not in j.pending
