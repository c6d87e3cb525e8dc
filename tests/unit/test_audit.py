"""The audit trail without a broker: records from the in-memory router and join -> SQLite rows, once each."""
from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from loopline.connectors.audit.db import AuditDB, AuditDBError
from loopline.connectors.audit.migrations import MIGRATIONS, current_version, migrate
from loopline.connectors.audit.queries import history
from loopline.connectors.audit.rows import TABLES, Record, group_rows
from loopline.connectors.audit.sink import SinkMetrics
from loopline.connectors.cli.main import main
from loopline.processors.feedback.join import FeedbackJoin
from loopline.processors.policy.threshold import ThresholdPolicy
from loopline.processors.routing.router import InputRecord, Router
from loopline.processors.testing import FlipEveryOther, make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events
from loopline.processors.wire.serde import CORRECTION, MODEL_UPDATE, PREDICTION_BATCH, REVIEW_TASK, TRAINING_EXAMPLE, AvroSerde

SERDE = AvroSerde(SchemaCatalogue.load())
NOW = 1_800_000_000_000


def answer(t: dict, cid: str, reviewer: str, at: int, label: str | None = "fraud", action: str = "override") -> dict:
    return {"correction_id": cid, "event_id": t["event_id"], "model_name": "fraud", "model_version": "v1",
            "reviewer_id": reviewer, "action": action, "corrected_label": label, "tier": t["tier"],
            "reviewed_at": at, "review_seconds": 3.0, "note": None, "source": "test"}


def traffic(seed: int = 5, now: int = NOW, second: int = 0, prefix: str = "c"
            ) -> tuple[list[Record], list[dict], list[dict]]:
    """Kafka-shaped records of 300 routed predictions, answers to every task, and their training examples.

    The first ``second`` tasks get a second answer from reviewer ``r9``: ``legit`` on even ones, ``fraud`` on odd ones.
    """
    evs = make_events(300, seed=seed, start_ms=now - 1000)
    router = Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000, worker="w1", max_decisions_per_record=64)
    res = router.route([InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs, "b")), "p", 0, 1)],
                       now_ms=now)
    recs = [Record(o.role, o.role, 0, n, o.value, tuple(o.headers), now) for n, o in enumerate(res.outputs)]
    tasks = [SERDE.decode(o.value)[1] for o in res.outputs if o.role.startswith("review_")]
    join = FeedbackJoin({}, {}, {}, pending_ttl_ms=10**9, waiting_ttl_ms=10**9)
    answers, examples = [], []
    for n, t in enumerate(tasks):
        join.on_task(t, now)
        answers.append(answer(t, f"{prefix}{n}", f"r{n % 3}", now + 1000 + n))
        if n < second:
            # same reviewed_at as the first answer on the second task (both say fraud): a tie must not count the event twice
            answers.append(answer(t, f"{prefix}x{n}", "r9", now + (1000 if n == 1 else 5000) + n,
                                  "legit" if n % 2 == 0 else "fraud"))
    for a in answers:
        examples += join.on_correction(a, now + 1000).examples
    recs += [Record("corrections", "c", 0, n, SERDE.encode(CORRECTION, a), (), NOW) for n, a in enumerate(answers)]
    recs += [Record("training", "t", 0, n, SERDE.encode(TRAINING_EXAMPLE, x), (), NOW) for n, x in enumerate(examples)]
    return recs, tasks, answers


def write(db: AuditDB, records: list[Record]) -> int:
    rows, _ = group_rows(records, SERDE)
    with db.transaction():
        return sum(db.insert_ignore(t, TABLES[t].columns, r) for t, r in rows.items())


@pytest.fixture
def db(tmp_path):
    with AuditDB(f"sqlite:///{tmp_path / 'a.sqlite3'}") as d:
        migrate(d)
        yield d


def count(db: AuditDB, table: str) -> int:
    return db.query(f"SELECT COUNT(*) FROM {table}")[1][0][0]  # noqa: S608 (fixed names)


def test_migrations_are_versioned_and_run_once(db):
    assert current_version(db) == MIGRATIONS[-1][0]
    assert migrate(db) == []
    assert [r[0] for r in db.query("SELECT version FROM schema_migrations")[1]] == [m[0] for m in MIGRATIONS]


def test_every_record_once_and_a_rewrite_adds_nothing(db):
    recs, tasks, answers = traffic()
    assert tasks, "the traffic has review tasks"
    first = write(db, recs)
    assert count(db, "decisions") == 300
    assert count(db, "review_tasks") == len(tasks)
    assert count(db, "answers") == count(db, "training_examples") == len(answers)
    assert first == 300 + 2 * len(tasks) + len(answers)
    assert write(db, recs) == 0  # re-delivery / replay
    assert count(db, "decisions") == 300
    h = history(db, tasks[0]["event_id"])
    assert h["decision"]["tier"] == tasks[0]["tier"] and h["decision"]["policy_version"] == tasks[0]["policy_version"]
    assert [t["task_id"] for t in h["review_tasks"]] == [tasks[0]["task_id"]]
    assert [a["correction_id"] for a in h["answers"]] == ["c0"]
    assert [x["correction_id"] for x in h["training_examples"]] == ["c0"]


def test_bad_record_is_kept_alone_as_undecodable_and_dead_letters_keep_headers_only(db):
    task = traffic()[1][0]
    recs = [Record("corrections", "t.corrections", 2, 9, b"garbage", (), NOW),
            Record("corrections", "t.corrections", 2, 10, SERDE.encode(REVIEW_TASK, task), (), NOW),
            Record("dead_letter", "t.dead-letter", 1, 4, b"secret payload",
                   (("loopline.error.class", b"decode"), ("loopline.source.topic", b"t.predictions"),
                    ("loopline.source.offset", b"77")), NOW),
            Record("review_analyst", "t.review.analyst", 0, 1, SERDE.encode(REVIEW_TASK, task), (), NOW)]
    rows, bad = group_rows(recs, SERDE)
    assert bad == 2 and len(rows["undecodable"]) == 2 and len(rows["review_tasks"]) == 1
    write(db, recs)
    _, dl = db.query("SELECT error_class, source_topic, source_offset, payload_size FROM dead_letters")
    assert dl == [("decode", "t.predictions", 77, len(b"secret payload"))]
    assert "secret" not in json.dumps(db.query("SELECT * FROM dead_letters")[1])
    _, und = db.query("SELECT record_id, error_type FROM undecodable ORDER BY record_id")
    assert und[0][0] == "t.corrections:2:10" and und[0][1] == "UnexpectedRecordError"


def test_model_updates_keep_metadata_not_bytes(db):
    mu = {"model_name": "fraud", "role": "challenger", "version": 3, "parent_version": 2, "examples_seen": 10,
          "trained_through": [], "metrics": {"f1": 0.5}, "model_format": "pickle+hmac", "model_bytes": b"x" * 1000,
          "hmac_sha256": "ab", "published_at": NOW}
    write(db, [Record("model_updates", "m", 0, 0, SERDE.encode(MODEL_UPDATE, mu), (), NOW)])
    _, rows = db.query("SELECT version, model_bytes_size, metrics FROM model_updates")
    assert rows == [(3, 1000, '{"f1": 0.5}')]


def test_retention_deletes_only_rows_past_it(tmp_path):
    from prometheus_client import CollectorRegistry

    from loopline.connectors.audit.sink import AuditSink
    from loopline.streams.settings import Settings

    s = Settings(audit_db_url=f"sqlite:///{tmp_path / 'r.sqlite3'}", audit_retention_days=1)
    sink = AuditSink(s, registry=CollectorRegistry(), serde=SERDE)
    recs, _, _ = traffic()
    sink.write(recs)
    assert sink.retention(now_ms=NOW + 3_600_000) == 0
    deleted = sink.retention(now_ms=NOW + 2 * 86_400_000)
    assert deleted == len(recs) - len([r for r in recs if r.role == "decisions"]) + 300
    assert count(sink.db, "decisions") == 0
    sink.db.close()


def test_metrics_from_an_injected_registry():
    from prometheus_client import CollectorRegistry

    r1, r2 = CollectorRegistry(), CollectorRegistry()
    SinkMetrics.create(r1)
    SinkMetrics.create(r2)  # no duplicate registration: nothing global


def test_bad_urls_are_one_sentence():
    with pytest.raises(AuditDBError, match="sqlite:///path or postgresql://"):
        AuditDB("mysql://x")
    with pytest.raises(AuditDBError, match="sqlite:///path"):
        AuditDB("sqlite://")


def test_cli_history_and_export(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    recs, tasks, _ = traffic()
    with AuditDB(url) as d:
        migrate(d)
        write(d, recs)
    monkeypatch.setenv("LOOPLINE_AUDIT_DB_URL", url)
    ev = tasks[0]["event_id"]
    assert main(["audit", "history", ev]) == 0
    out = capsys.readouterr().out
    assert f"event {ev}" in out and "reviewer=r0" in out and "training" in out
    assert main(["audit", "history", ev, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"]["event_id"] == ev
    assert main(["audit", "history", "no-such-event"]) == 1
    csv_path = tmp_path / "x.csv"
    assert main(["audit", "export", "--from", "2027-01-01T00:00:00Z", "--to", "2030-01-01", "--out", str(csv_path)]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 300  # one answer per answered event, so one row per decision
    assert {r["event_id"] for r in rows if r["reviewer_id"]} == {t["event_id"] for t in tasks}
    with pytest.raises(SystemExit) as e:
        main(["audit", "export", "--from", "yesterday", "--to", "2030-01-01", "--out", str(csv_path)])
    assert e.value.code == 2 and "ISO 8601" in capsys.readouterr().err


def test_documented_questions_answer_on_sqlite(db):
    from loopline.connectors.audit.queries import QUESTIONS, ask

    recs, tasks, answers = traffic(second=20)
    assert len(tasks) >= 20
    later, later_tasks, later_answers = traffic(seed=6, now=NOW + 60_000, prefix="d")
    write(db, recs + later)
    db.execute("INSERT INTO policy_events VALUES (?, 'apply', 'w1', 'p1', 'p2', 'file', NULL, NULL, '{}', '', ?)",
               ("pe-1", NOW + 30_000))
    assert set(QUESTIONS) >= {"event_history", "decisions_per_policy_tier", "reviewer_accuracy",
                              "inter_reviewer_agreement", "time_to_answer_per_tier", "override_rate_around_policy_change"}

    cols, rows = ask(db, "event_history", tasks[0]["event_id"])
    chain = [dict(zip(cols, r)) for r in rows]
    assert [c["reviewer_id"] for c in chain] == ["r0", "r9"] and chain[1]["effective_label"] == "legit"
    assert chain[0]["task_id"] == tasks[0]["task_id"] and chain[0]["policy_version"] == tasks[0]["policy_version"]

    _, rows = ask(db, "decisions_per_policy_tier", NOW - 1, NOW + 1)
    assert sum(r[2] for r in rows) == 300  # the later traffic is outside the range

    _, rows = ask(db, "inter_reviewer_agreement")
    assert sum(r[1] for r in rows) == 20
    assert sum(r[1] * r[2] for r in rows) == pytest.approx(10)  # r9 agrees on the 10 odd ones

    _, rows = ask(db, "reviewer_accuracy")
    acc = {r[0]: (r[1], r[2]) for r in rows}
    assert acc.pop("r9") == (20, pytest.approx(1.0))  # the latest answer is the outcome
    assert sum(n for n, _ in acc.values()) == 20
    assert sum(n * a for n, a in acc.values()) == pytest.approx(10)

    _, rows = ask(db, "time_to_answer_per_tier")
    assert sum(r[1] for r in rows) == len(tasks) + len(later_tasks)

    cols, rows = ask(db, "override_rate_around_policy_change", "pe-1", 120_000, 120_000)
    by = {(r[0], r[1]): r[2] for r in rows}
    assert sum(n for (p, _), n in by.items() if p == "before") == len(answers)
    assert sum(n for (p, _), n in by.items() if p == "after") == len(later_answers)
    with pytest.raises(ValueError, match="takes 3 parameters"):
        ask(db, "override_rate_around_policy_change", "pe-1")


def test_docs_show_each_question_verbatim():
    from pathlib import Path

    from loopline.connectors.audit.queries import PG_TIME_TO_ANSWER_PERCENTILES, QUESTIONS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text()
    for name, (_, sql, _) in QUESTIONS.items():
        assert sql in doc, f"docs/audit.md lacks the SQL of {name}"
    assert PG_TIME_TO_ANSWER_PERCENTILES in doc


def test_cli_questions_without_an_audit_database_fail_in_one_sentence(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "none" / "audit.sqlite3"
    monkeypatch.setenv("LOOPLINE_AUDIT_DB_URL", f"sqlite:///{missing}")
    with pytest.raises(SystemExit) as e:
        main(["audit", "history", "ev-1"])
    assert e.value.code == 2 and "no audit database" in capsys.readouterr().err
    assert not missing.exists()  # a question creates nothing
    empty = tmp_path / "empty.sqlite3"
    AuditDB(f"sqlite:///{empty}").close()
    monkeypatch.setenv("LOOPLINE_AUDIT_DB_URL", f"sqlite:///{empty}")
    with pytest.raises(SystemExit) as e:
        main(["audit", "export", "--from", "2026-01-01", "--to", "2026-01-02", "--out", str(tmp_path / "x.csv")])
    assert e.value.code == 2 and "no audit tables" in capsys.readouterr().err


def test_a_failed_transaction_is_retried_and_commits_nothing_until_written(tmp_path):
    from prometheus_client import CollectorRegistry

    from loopline.connectors.audit.sink import AuditSink
    from loopline.streams.settings import Settings

    url = f"sqlite:///{tmp_path / 'f.sqlite3'}"
    s = Settings(audit_db_url=url)
    sink = AuditSink(s, registry=CollectorRegistry(), serde=SERDE)
    recs, _, _ = traffic()
    real = sink.write
    calls = {"n": 0}

    def flaky(records):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(records)

    sink.write = flaky
    assert sink._write_until_done(recs, stop=lambda: False) is True
    assert calls["n"] == 2 and sink.metrics.db_errors._value.get() == 1
    assert count(sink.db, "decisions") == 300
    calls["n"] = 0
    assert sink._write_until_done(recs, stop=lambda: True) is False  # stopping while failing: not written, not committed
    sink.db.close()


def test_audit_metric_names_are_pinned():
    from pathlib import Path

    from prometheus_client import CollectorRegistry, generate_latest

    pinned = json.loads((Path(__file__).parent / "persisted_names.json").read_text())["audit_metric_types"]
    from loopline.streams.conventions import apply_conventions

    r = CollectorRegistry()
    apply_conventions(r)  # as the sink builds its registry: no *_created series (process-wide in prometheus_client)
    SinkMetrics.create(r)
    text = generate_latest(r).decode()
    assert sorted(" ".join(line.split()[2:4]) for line in text.splitlines() if line.startswith("# TYPE loopline")) == pinned


def test_each_decision_row_says_who_served_it_and_what_the_caller_got(db, capsys, tmp_path, monkeypatch):
    evs = make_events(200, seed=8, start_ms=NOW - 1000)
    router = Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000, worker="w1", max_decisions_per_record=64)
    router.server = FlipEveryOther("challenger:v7")
    res = router.route([InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs, "b")), "p", 0, 1)],
                       now_ms=NOW)
    write(db, [Record(o.role, o.role, 0, n, o.value, tuple(o.headers), NOW) for n, o in enumerate(res.outputs)])
    rows = db.query("SELECT event_id, tier, predicted_label, served_by, served_label FROM decisions")[1]
    assert len(rows) == 200
    by_challenger = [r for r in rows if r[3] == "challenger:v7"]
    assert by_challenger and all(r[1] == "auto" and r[4] != r[2] for r in by_challenger)
    assert all(r[3] == "producer" and r[4] == r[2] for r in rows if r[3] != "challenger:v7")
    h = history(db, by_challenger[0][0])
    assert h["decision"]["served_by"] == "challenger:v7" and h["decision"]["served_label"] == by_challenger[0][4]


def test_a_database_from_before_served_by_migrates_with_its_rows_served_by_the_producer(tmp_path):
    path = tmp_path / "old.sqlite3"
    with AuditDB(f"sqlite:///{path}") as d:
        migrate(d, upto=1)
        d.execute("INSERT INTO decisions VALUES ('e1', 'fraud', 'v1', 'p1', 'auto', 'confident', 1.0, 0, 0.97, "
                  "'legit', 1, 2)")
    with AuditDB(f"sqlite:///{path}") as d:
        assert migrate(d) == [2]
        row = d.query("SELECT served_by, served_label FROM decisions WHERE event_id = 'e1'")[1][0]
    assert tuple(row) == ("producer", "legit")
