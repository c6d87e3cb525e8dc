"""The audit sink on a real broker, a real worker and a real database (PostgreSQL at 127.0.0.1:5432, and SQLite).

Simulated traffic and reviewers go through a real worker; the sink is killed with SIGKILL mid-run and
restarted; then a second sink replays every topic with a new consumer group. The database must hold
exactly one decision row per decided event, one row per answer, task and training example, and the
history query must return the whole chain.
"""
from __future__ import annotations

import contextlib
import os
import signal
import uuid

import pytest
from confluent_kafka import Producer

from loopline.connectors.audit.db import AuditDB
from loopline.connectors.audit.queries import PG_TIME_TO_ANSWER_PERCENTILES, ask, history
from loopline.connectors.producer import PredictionProducer
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, AvroSerde
from tests.conftest import free_port
from tests.helpers import read_topic
from tests.integration.audit_support import get, metric_sum, scratch_postgres, sink_process, wait_for

SERDE = AvroSerde(SchemaCatalogue.load())
TABLES = ("decisions", "review_tasks", "answers", "training_examples")


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    else:
        with scratch_postgres() as url:
            yield url


def counts(url: str) -> dict[str, int]:
    with AuditDB(url) as db:
        return {t: db.query(f"SELECT COUNT(*) FROM {t}")[1][0][0] for t in TABLES}  # noqa: S608 (fixed names)


def column(url: str, table: str, col: str, tail: str = "") -> list:
    with AuditDB(url) as db:
        rows = db.query(f"SELECT {col} FROM {table} {tail}")[1]  # noqa: S608 (fixed names)
    return [r[0] for r in rows] if len(rows[0] if rows else ()) == 1 else rows


def test_sink_writes_each_row_once_through_kill_and_replay(loopline_settings, worker, audit_url, tmp_path):
    s = loopline_settings.model_copy(update={"audit_db_url": audit_url, "audit_port": free_port(),
                                             "audit_group": f"{loopline_settings.topic_namespace}-audit"})
    events = make_events(2000, seed=23)
    ids = [e["event_id"] for e in events]
    sink = sink_process(s, tmp_path / "sink.log").start()
    try:
        with PredictionProducer(s) as p:
            p.send_many(events[:1000])
        wait_for(lambda: counts(audit_url)["decisions"] > 0, 60, "first decision rows")
        os.kill(sink.pid, signal.SIGKILL)  # mid-run: traffic still to come, offsets possibly uncommitted
        sink.proc.wait(10)
        with PredictionProducer(s) as p:
            p.send_many(events[1000:])
        sink = sink_process(s, tmp_path / "sink.log").start()

        # every event decided (the restarted sink has written them all), so every review task is on its topic
        wait_for(lambda: counts(audit_url)["decisions"] >= len(ids), 90, "a decision row per event")
        queues = dict(column(audit_url, "review_tasks", "queue, COUNT(*)", "GROUP BY queue"))
        # reviewers answer every review task; the first 30 tasks get a second answer from another reviewer
        analyst = read_topic(s.kafka_bootstrap, s.topics.review_analyst,
                             lambda m: len(m) >= queues.get("analyst", 0), timeout=30, settle=1.0)
        escalation = read_topic(s.kafka_bootstrap, s.topics.review_escalation,
                                lambda m: len(m) >= queues.get("escalation", 0), timeout=30, settle=1.0)
        tasks = [SERDE.decode(m.value())[1] for m in analyst + escalation]
        assert tasks, "the simulated traffic produced no review task"
        answers = []
        for n, t in enumerate(tasks):
            base = {"event_id": t["event_id"], "model_name": t["model_name"], "model_version": t["model_version"],
                    "tier": t["tier"], "reviewed_at": t["created_at"] + 5000 + n, "review_seconds": 5.0,
                    "note": None, "source": "test"}
            answers.append({**base, "correction_id": f"c-{n}", "reviewer_id": f"r-{n % 5}", "action": "override",
                            "corrected_label": "fraud"})
            if n < 30:
                answers.append({**base, "correction_id": f"c2-{n}", "reviewer_id": "r-senior", "action": "approve",
                                "corrected_label": None})
        prod = Producer({"bootstrap.servers": s.kafka_bootstrap, "enable.idempotence": True})
        for a in answers:
            prod.produce(s.topics.corrections, key=a["event_id"].encode(), value=SERDE.encode(CORRECTION, a))
        prod.flush(10)
        training = read_topic(s.kafka_bootstrap, s.topics.training, lambda m: len(m) >= len(answers), timeout=90,
                              settle=1.0)
        training_ids = sorted(SERDE.decode(m.value())[1]["correction_id"] for m in training)
        assert training_ids == sorted(a["correction_id"] for a in answers)

        want = {"decisions": len(ids), "review_tasks": len(tasks), "answers": len(answers),
                "training_examples": len(training_ids)}
        wait_for(lambda: counts(audit_url) == want, 90, f"audit rows {want}")
        assert sorted(column(audit_url, "decisions", "event_id")) == sorted(ids)  # one row per decided event
        assert sorted(column(audit_url, "answers", "correction_id")) == sorted(a["correction_id"] for a in answers)
        assert sorted(column(audit_url, "review_tasks", "task_id")) == sorted(t["task_id"] for t in tasks)
        assert sorted(column(audit_url, "training_examples", "correction_id")) == training_ids

        # the history of a twice-answered event: decision -> task -> both answers -> both training examples
        t0 = tasks[0]
        with AuditDB(audit_url) as db:
            h = history(db, t0["event_id"])
        assert h["decision"]["event_id"] == t0["event_id"] and h["decision"]["tier"] == t0["tier"]
        assert h["decision"]["policy_version"] == t0["policy_version"]
        assert h["decision"]["model_version"] == "v1"
        assert [x["task_id"] for x in h["review_tasks"]] == [t0["task_id"]]
        assert sorted(a["reviewer_id"] for a in h["answers"]) == ["r-0", "r-senior"]
        assert sorted(x["correction_id"] for x in h["training_examples"]) == ["c-0", "c2-0"]
        # every documented question runs on this database
        with AuditDB(audit_url) as db:
            _, rows = ask(db, "decisions_per_policy_tier", 0, 2**62)
            assert sum(r[2] for r in rows) == len(ids)
            _, rows = ask(db, "inter_reviewer_agreement")
            assert sum(r[1] for r in rows) == 30  # the 30 twice-answered events
            _, rows = ask(db, "reviewer_accuracy")
            assert sum(r[1] for r in rows) == 60
            _, rows = ask(db, "time_to_answer_per_tier")
            assert sum(r[1] for r in rows) == len({t["event_id"] for t in tasks})
            _, rows = ask(db, "override_rate_per_version")
            assert sum(r[3] for r in rows) == len(answers)
            ask(db, "event_history", t0["event_id"])
            ask(db, "override_rate_around_policy_change", "no-such-event", 1000, 1000)
            ask(db, "model_versions_published", "fraud")
            if db.dialect == "postgresql":
                _, rows = db.query(PG_TIME_TO_ANSWER_PERCENTILES)
                assert rows and all(len(r[1]) == 2 for r in rows)
        metrics = get(f"http://{s.web_host}:{s.audit_port}/metrics")
        assert metric_sum(metrics, "loopline_audit_rows_total") > 0
    finally:
        sink.stop()

    # a replay of every topic by a new consumer group adds no row
    before = counts(audit_url)
    replay_settings = s.model_copy(update={"audit_group": f"replay-{uuid.uuid4().hex[:8]}", "audit_port": free_port()})
    replay = sink_process(replay_settings, tmp_path / "replay.log").start()
    try:
        known = {s.topics.review_analyst: len(analyst), s.topics.review_escalation: len(escalation),
                 s.topics.corrections: len(answers), s.topics.training: len(training_ids), s.topics.decisions: 1}
        total = sum(len(read_topic(s.kafka_bootstrap, t, lambda m, n=n: len(m) >= n, timeout=30, settle=1.0))
                    for t, n in known.items())
        url = f"http://{s.web_host}:{replay_settings.audit_port}/metrics"
        wait_for(lambda: metric_sum(get(url), "loopline_audit_records_total") >= total, 90,
                 f"the replay to read {total} records")
        assert metric_sum(get(url), "loopline_audit_rows_total") == 0
    finally:
        replay.stop()
    assert counts(audit_url) == before


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_insert_ignore_skips_known_and_in_batch_duplicates_and_rolls_back_whole(kind, tmp_path):
    from loopline.connectors.audit.migrations import migrate
    from loopline.connectors.audit.rows import TABLES

    cols = TABLES["decisions"].columns

    def row(eid: str) -> tuple:
        return (eid, "fraud", "v1", "p1", "auto", "confidence>=0.9", 0.05, True, 0.95, "legit", 1, 2, "producer", "legit")

    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'i.sqlite3'}" if kind == "sqlite" else stack.enter_context(scratch_postgres()))
        with AuditDB(url) as db:
            migrate(db)
            with pytest.raises(RuntimeError), db.transaction():  # first use rolled back: staging table gone too
                db.insert_ignore("decisions", cols, [row("d")])
                raise RuntimeError("crash before commit")
            with db.transaction():
                assert db.insert_ignore("decisions", cols, [row("a"), row("b"), row("a")]) == 2
            with db.transaction():
                assert db.insert_ignore("decisions", cols, [row("b"), row("c")]) == 1
            with pytest.raises(RuntimeError), db.transaction():
                db.insert_ignore("decisions", cols, [row("d")])
                raise RuntimeError("crash before commit")
            with db.transaction():
                assert db.insert_ignore("decisions", cols, [row("e")]) == 1
            assert sorted(r[0] for r in db.query("SELECT event_id FROM decisions")[1]) == ["a", "b", "c", "e"]
            assert db.query("SELECT audited FROM decisions WHERE event_id = 'a'")[1][0][0] in (True, 1)
