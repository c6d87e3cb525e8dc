"""A correction replayed after a crash (seen not yet recorded) is re-emitted, never lost, counted once."""
from __future__ import annotations

from tests.unit.test_feedback import corr, join, task


def test_replay_before_seen_is_recorded_re_emits_the_same_example_and_counts_the_answer_once():
    j, t = join(), task(1)
    j.on_task(t, 1000)
    first = j.on_correction(corr(t, "c1"), 2000, mark_seen=False).examples
    replay = j.on_correction(corr(t, "c1"), 2100, mark_seen=False).examples
    assert len(first) == len(replay) == 1
    assert replay[0] == first[0]  # same correction_id, same answers_so_far: readers dedupe by correction_id
    assert len(j.pending[t["event_id"]]["answers"]) == 1
    second = j.on_correction(corr(t, "c2", label="legit", at=3000), 3000, mark_seen=False).examples
    assert second[0]["answers_so_far"] == 2


def test_replayed_waiting_correction_is_queued_once():
    j, t = join(), task(2)
    j.on_correction(corr(t, "c1"), 1500, mark_seen=False)
    j.on_correction(corr(t, "c1"), 1600, mark_seen=False)
    assert len(j.waiting[t["event_id"]]) == 1
    assert [e["correction_id"] for e in j.on_task(t, 1700).examples] == ["c1"]


def test_after_mark_seen_a_copy_is_a_duplicate():
    j, t = join(), task(3)
    j.on_task(t, 1000)
    assert len(j.on_correction(corr(t, "c1"), 2000, mark_seen=False).examples) == 1
    j.mark_seen("c1", 2000)
    out = j.on_correction(corr(t, "c1"), 2100, mark_seen=False)
    assert out.examples == [] and out.duplicates == 1


def test_a_task_restored_into_pending_joins_the_waiting_correction_at_the_next_tick():
    j, t = join(), task(4)
    j.on_correction(corr(t, "c1"), 1500)  # the task is not known yet: the correction waits
    j.pending[t["event_id"]] = {"task": {k: t[k] for k in (
        "event_id", "model_name", "model_version", "tier", "audit", "sampling_propensity", "reason",
        "policy_version", "created_at", "prediction")}, "answers": [], "expires_at": 20_000}  # from the changelog
    out = j.expire(2000)
    assert [e["correction_id"] for e in out.examples] == ["c1"] and out.orphans == []
    assert t["event_id"] not in j.waiting and len(j.pending[t["event_id"]]["answers"]) == 1
    assert j.expire(100_000).orphans == []


def test_only_active_changelog_records_are_applied_from_the_recovery_buffer():
    from types import SimpleNamespace

    from loopline.streams.feedback import apply_active_changelog_tail

    class Table:
        def __init__(self) -> None:
            self.applied: list = []

        def apply_changelog_batch(self, events) -> None:
            self.applied.extend(e.message.tp for e in events)

    def ev(tp):
        return SimpleNamespace(message=SimpleNamespace(tp=tp))

    table = Table()
    buf = [ev("a0"), ev("s1"), ev("a0")]
    recovery = SimpleNamespace(active_tps={"a0"}, buffers={table: buf})
    assert apply_active_changelog_tail(recovery) == 2
    assert table.applied == ["a0", "a0"] and [e.message.tp for e in buf] == ["s1"]
    assert recovery.buffers[table] is buf  # Faust's reader keeps appending to the same list
