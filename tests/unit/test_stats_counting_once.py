"""Per-tier statistics count each prediction once across crashes and rebalances (issue #16).

The worker routes replayed records again (at-least-once decisions) but gives only
records past the partition's counted mark to the statistics, and never commits
past the mark saved with them. These tests drive :class:`WorkerStats` as the
worker does — split, route, hooks, counted, the consumer's commit — with a dict
as the changelog-backed table, and "crash" by building a new one on that table.
"""
from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from loopline.processors.policy.threshold import ThresholdPolicy
from loopline.processors.routing.router import InputRecord, Router
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events
from loopline.processors.wire.serde import PREDICTION_BATCH, AvroSerde
from loopline.streams.settings import Settings
from loopline.streams.stats import COUNTED, WorkerStats

SERDE = AvroSerde(SchemaCatalogue.load())
SETTINGS = Settings(partitions=4)
TOPIC = SETTINGS.topics.predictions
NOW = 1_800_000_000_000
PER_RECORD = 20


class FakeApp:
    """What WorkerStats needs of a Faust app; the table is a dict that outlives a "crash"."""

    def __init__(self, table: dict) -> None:
        self._table = table
        self.consumer = None
        self.on_partitions_revoked = self.on_partitions_assigned = self.on_rebalance_complete = \
            SimpleNamespace(connect=lambda f: f)

    def Table(self, *args, **kwargs):  # noqa: N802 - Faust's name
        return self._table

    def timer(self, interval):
        return lambda f: f


def records(partition: int = 1, n: int = 10) -> list[InputRecord]:
    evs = make_events(n * PER_RECORD, seed=3, start_ms=NOW - 10_000)
    return [InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs[i * PER_RECORD:(i + 1) * PER_RECORD],
                                                                         f"b{partition}-{i}")), TOPIC, partition, i)
            for i in range(n)]


class Worker:
    def __init__(self, table: dict) -> None:
        self.stats = WorkerStats(SimpleNamespace(settings=SETTINGS), FakeApp(table), 5.0)
        self.router = Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000)
        self.routed = 0  # predictions routed, replays included

    def process(self, recs: list[InputRecord]) -> None:
        """``Worker.route_chunk``: replays are routed without hooks, fresh records with them, then counted."""
        replayed, fresh = self.stats.split(recs)
        for part, hooks in ((replayed, False), (fresh, True)):
            if part:
                result = self.router.route(part, now_ms=NOW)
                self.routed += sum(r.frame.n for r in result.routed)
                if hooks:
                    self.stats.on_routed(result)
        self.stats.counted(fresh)

    def commit(self, partition: int, acked_through: int) -> int:
        """The consumer's commit: the next offset to commit, capped by the ceiling (the state is saved in it)."""
        return min(acked_through + 1, self.stats.commit_ceiling(TP(TOPIC, partition)))

    def counted(self) -> int:
        return sum(m["events"] for m in self.stats.merged().snapshot()["all_time"].values())


def test_a_crash_after_the_commit_counts_each_prediction_once():
    table: dict = {}
    recs = records()
    w = Worker(table)
    w.process(recs[:6])
    committed = w.commit(1, 5)  # records 0..5 acknowledged: the state is saved with them
    assert committed == 6 and table[w.stats._keys[("route", 1)].encode()][COUNTED][TOPIC]["next"] == 6
    w.process(recs[6:8])  # counted in memory only, then kill -9
    w2 = Worker(table)
    w2.process(recs[committed:])
    assert w2.routed == 4 * PER_RECORD and w2.counted() == 10 * PER_RECORD


def test_replays_below_the_saved_mark_are_routed_but_not_counted_again():
    table: dict = {}
    recs = records()
    w = Worker(table)
    w.process(recs[:9])
    assert w.stats.commit_ceiling(TP(TOPIC, 1)) == 9  # saved through record 8
    # the commit itself went only to 5 (acks of 5..8 were not in yet), then the crash
    w2 = Worker(table)
    w2.process(recs[5:])
    assert w2.routed == 5 * PER_RECORD  # decisions for 5..9 published again: at-least-once
    assert w2.counted() == 10 * PER_RECORD  # but 5..8 counted once


def test_the_commit_never_passes_what_the_saved_statistics_counted():
    w = Worker({})
    assert w.stats.commit_ceiling(TP(TOPIC, 2)) == 0  # nothing counted: nothing may be committed
    assert w.stats.commit_ceiling(TP(SETTINGS.topics.decisions, 2)) is None  # topics it does not count: no limit
    w.process(records(partition=2)[:3])
    assert w.commit(2, 7) == 3


def test_a_clean_rebalance_hands_the_mark_to_the_next_owner():
    table: dict = {}
    recs = records(partition=3)
    a = Worker(table)
    a.process(recs[:7])
    assert a.commit(3, 4) == 5  # the revoke's commit, while a batch was still being acknowledged
    a.stats.release([TP(TOPIC, 3)])
    assert a.counted() == 0  # released: forgotten here
    b = Worker(table)
    b.stats.load([TP(TOPIC, 3)])  # after the recovery: counted so far, before new records come
    assert b.counted() == 7 * PER_RECORD
    b.process(recs[5:])
    assert b.counted() == 10 * PER_RECORD


def test_records_delivered_out_of_order_after_a_seek_are_each_counted_once():
    # the offset guard re-reads a hole: 6 arrives first, then 2..5, then 6 again
    recs = records()
    w = Worker({})
    w.process(recs[:2])
    w.process(recs[6:7])
    assert w.commit(1, 6) == 2  # 2..5 not counted yet: the commit waits for them
    w.process(recs[2:7])
    assert w.counted() == 7 * PER_RECORD and w.commit(1, 6) == 7


def test_an_accepted_hole_does_not_hold_the_commit_back():
    recs = records()
    w = Worker({})
    w.process(recs[:3] + recs[5:])  # offsets 3 and 4 hold no records (a hole the consumer accepted)
    assert w.commit(1, 9) == 3
    w.stats.on_hole(TP(TOPIC, 1), 3, 5)
    assert w.commit(1, 9) == 10 and w.counted() == 8 * PER_RECORD


def test_a_batch_in_flight_across_a_revoke_is_counted_by_the_next_owner_only():
    table: dict = {}
    recs = records(partition=0)
    a = Worker(table)
    a.process(recs[:4])
    replayed, fresh = a.stats.split(recs[4:6])  # the batch starts on the old owner...
    assert a.commit(0, 3) == 4
    a.stats.release([TP(TOPIC, 0)])  # ...the partition is revoked while it is published...
    a.stats.on_routed(a.router.route(fresh, now_ms=NOW))  # ...and its hooks run after the revoke
    a.stats.counted(fresh)
    assert a.counted() == 0
    b = Worker(table)
    b.process(recs[4:])  # the revoke's commit stopped at 4: the next owner reads from there
    assert b.counted() == 10 * PER_RECORD and a.counted() == 0


def test_a_save_older_than_the_committed_offset_is_recognised():
    table: dict = {}
    w = Worker(table)
    w.process(records()[:4])
    w.commit(1, 3)
    state = table[w.stats._keys[("route", 1)].encode()]
    w.stats.app.consumer = SimpleNamespace(_committed_offset={TP(TOPIC, 1): 4})
    assert not w.stats._stale("route", 1, state)
    w.stats.app.consumer._committed_offset[TP(TOPIC, 1)] = 6  # committed past the save: a newer save exists
    assert w.stats._stale("route", 1, state) and w.stats._stale("route", 1, None)


def test_a_record_delivered_twice_in_one_take_counts_once():
    recs = records()
    w = Worker({})
    w.process(recs[:3] + recs[2:4])  # the re-read after a hole starts one record early
    assert w.counted() == 4 * PER_RECORD


def test_calibration_outcomes_are_saved_with_the_statistics_and_counted_once_after_a_crash():
    from prometheus_client import CollectorRegistry

    from loopline.processors.policy.policy import Policy, PolicyHolder
    from loopline.processors.wire.partitioning import partition_for
    from loopline.streams.quality import CalibrationRuntime
    from tests.unit.test_autopilot_runtime import POLICY, traffic

    holder = PolicyHolder(Policy.from_toml(POLICY))
    _, examples = traffic(holder, n=2000)
    answers = SETTINGS.topics.corrections
    offsets: dict[int, int] = {}
    recs = []  # one correction record per example, on its event's partition
    for ex in examples:
        p = partition_for(ex["event_id"].encode(), SETTINGS.partitions)
        recs.append((InputRecord(b"", answers, p, offsets.setdefault(p, 0)), ex))
        offsets[p] += 1

    def worker(table):
        stats = WorkerStats(SimpleNamespace(settings=SETTINGS, policy=holder), FakeApp(table), 5.0)
        rt = CalibrationRuntime(holder, CollectorRegistry(), partitions=SETTINGS.partitions)
        stats.attach("calibration", "feedback", rt)
        stats.load([TP(answers, p) for p in range(SETTINGS.partitions)])
        return stats, rt

    def process(stats, rt, batch):
        replayed, fresh = stats.split([r for r, _ in batch])
        counted = [ex for r, ex in batch if r in fresh]
        stats.on_examples(counted)
        rt.on_examples(counted)
        stats.counted(fresh)

    table: dict = {}
    stats, rt = worker(table)
    process(stats, rt, recs[:700])
    for p in range(SETTINGS.partitions):  # a commit: saved with the statistics
        stats.commit_ceiling(TP(answers, p))
    process(stats, rt, recs[700:])
    total = int(rt.tracker.cell("fraud").n.sum())
    assert total == len(examples)
    stats2, rt2 = worker(table)  # kill -9, then the partitions are assigned again
    assert int(rt2.tracker.cell("fraud").n.sum()) == 700
    process(stats2, rt2, recs[500:])  # records after the last commit are read again (and some before it)
    assert int(rt2.tracker.cell("fraud").n.sum()) == total
    stats2.release([TP(answers, p) for p in range(SETTINGS.partitions)])
    assert rt2.trackers == {}


class _Counter:
    """Stands in for the worker's Prometheus counters (only ``labels(...).inc(n)`` is used here)."""

    def labels(self, *args):
        return self

    def inc(self, n: float = 1) -> None:
        pass


def test_an_answer_whose_seen_mark_was_saved_and_whose_statistics_were_not_is_counted_on_replay():
    """CI saw 1,601 of 1,602 answers counted after kill -9 of the join's owner: the join's `seen` entry
    reached its changelog, the statistics did not, and the replayed correction was dropped as a duplicate."""
    import asyncio

    from loopline.processors.feedback.join import FeedbackJoin
    from loopline.processors.policy.policy import Policy, PolicyHolder
    from loopline.processors.wire.partitioning import partition_for
    from loopline.processors.wire.serde import CORRECTION, REVIEW_TASK
    from loopline.streams.feedback import handle_feedback
    from tests.unit.test_autopilot_runtime import POLICY
    from tests.unit.test_feedback import corr, task

    topics = SETTINGS.topics
    holder = PolicyHolder(Policy.from_toml(POLICY))
    tasks = [task(i) for i in range(40)]
    offsets: dict[tuple[str, int], int] = {}

    def record(topic: str, name: str, obj: dict):
        p = partition_for(obj["event_id"].encode(), SETTINGS.partitions)
        o = offsets[(topic, p)] = offsets.get((topic, p), -1) + 1
        msg = SimpleNamespace(value=SERDE.encode(name, obj), topic=topic, partition=p, offset=o, headers=[],
                              key=obj["event_id"].encode())
        return SimpleNamespace(message=msg)

    task_records = [record(topics.review_analyst, REVIEW_TASK, t) for t in tasks]
    answers = [record(topics.corrections, CORRECTION, corr(t, f"c{i}")) for i, t in enumerate(tasks)]
    join_state: tuple[dict, dict, dict] = ({}, {}, {})  # pending, waiting, seen: their changelogs survive a crash
    table: dict = {}
    published: list = []

    def worker():
        w = SimpleNamespace(serde=SERDE, settings=SETTINGS, policy=holder, worker_id="w", example_hooks=[],
                            join=FeedbackJoin(*join_state, pending_ttl_ms=600_000, waiting_ttl_ms=600_000),
                            metrics=SimpleNamespace(corrections=_Counter(), dead_letters=_Counter(),
                                                    processing_errors=_Counter()))

        async def publish(outputs, source=()):
            published.extend(outputs)
        w.publish = publish
        w.stats = WorkerStats(w, FakeApp(table), 5.0)
        w.example_hooks.append(w.stats.on_examples)
        w.stats.load([TP(t, p) for t in (topics.review_analyst, topics.corrections) for p in range(SETTINGS.partitions)])
        return w

    def answered(w) -> int:
        models = w.stats.merged().snapshot()["all_time"].values()
        return sum(t["outcomes"]["answered"] + t["outcomes"]["unlabelled"] for m in models for t in m["tiers"].values())

    w = worker()
    asyncio.run(handle_feedback(w, task_records))
    for p in range(SETTINGS.partitions):  # the tasks are committed: their statistics are saved
        w.stats.commit_ceiling(TP(topics.review_analyst, p))
    asyncio.run(handle_feedback(w, answers))
    assert answered(w) == 40 and len(join_state[2]) == 40  # seen: saved; the statistics: not yet, then kill -9
    w2 = worker()
    assert answered(w2) == 0
    asyncio.run(handle_feedback(w2, answers))  # read again from the committed offsets
    assert answered(w2) == 40
    for p in range(SETTINGS.partitions):
        w2.stats.commit_ceiling(TP(topics.corrections, p))
    w3 = worker()  # and once both were saved, a replay counts nothing twice, nor does a copy in a new record
    copy = record(topics.corrections, CORRECTION, corr(tasks[0], "c0"))
    asyncio.run(handle_feedback(w3, answers[:5] + [copy]))
    assert answered(w3) == 40
    ids = [o for o in published if o.role == "training"]
    assert len(ids) == 40 + 40 + 5  # each replay re-emits its example (at-least-once); the copy emits none


def test_calibration_keeps_the_first_labelled_answer_per_event_across_a_restart():
    """Which answer is an event's first labelled one comes from the join's saved pending answers,
    not from a set that a restarted worker starts without."""
    from prometheus_client import CollectorRegistry

    from loopline.processors.feedback.join import FeedbackJoin
    from loopline.processors.policy.policy import Policy, PolicyHolder
    from loopline.streams.quality import CalibrationRuntime
    from tests.unit.test_autopilot_runtime import POLICY
    from tests.unit.test_feedback import corr, task

    holder = PolicyHolder(Policy.from_toml(POLICY))
    state: tuple[dict, dict, dict] = ({}, {}, {})  # pending, waiting, seen: kept by their changelogs

    def runtime():
        j = FeedbackJoin(*state, pending_ttl_ms=600_000, waiting_ttl_ms=600_000)
        rt = CalibrationRuntime(holder, CollectorRegistry())
        rt.first_labelled = j.first_labelled
        return j, rt

    def outcomes(rt) -> int:
        return int(rt.tracker.cell("fraud").n.sum())

    t = task(7)
    j, rt = runtime()
    j.on_task(t, 0)
    rt.on_examples(j.on_correction(corr(t, "c1", "unsure", None), 1).examples)  # no label: no outcome
    rt.on_examples(j.on_correction(corr(t, "c2", "override", "fraud"), 2).examples)  # the first labelled
    assert outcomes(rt) == 1
    rt.on_examples(j.on_correction(corr(t, "c3", "approve", "legit"), 3).examples)
    assert outcomes(rt) == 1
    j2, rt2 = runtime()  # the worker restarts: a later answer to the same event is not a first one
    rt2.on_examples(j2.on_correction(corr(t, "c4", "override", "fraud"), 4).examples)
    assert outcomes(rt2) == 0
    assert j2.first_labelled(t["event_id"], "c2") is True and j2.first_labelled(t["event_id"], "c3") is False
