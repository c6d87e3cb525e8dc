"""Versioned schema migrations for the audit database.

Each migration is ``(version, name, statements)``; versions only grow and an applied
migration is never edited (add a new one instead). :func:`migrate` applies the missing
ones in order, each in its own transaction together with its ``schema_migrations`` row,
so a crash mid-way leaves the database at the previous version. Two processes migrating
at once are serialised (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``).

Times are epoch milliseconds (``BIGINT``) in every table, the same in both databases.
"""
from __future__ import annotations

import time

from loopline.connectors.audit.db import AuditDB

_V1 = [
    """CREATE TABLE IF NOT EXISTS decisions (
        event_id TEXT PRIMARY KEY,
        model_name TEXT NOT NULL, model_version TEXT NOT NULL, policy_version TEXT NOT NULL,
        tier TEXT NOT NULL, reason TEXT NOT NULL, sampling_propensity DOUBLE PRECISION NOT NULL,
        audited BOOLEAN NOT NULL, confidence DOUBLE PRECISION NOT NULL, predicted_label TEXT NOT NULL,
        emitted_at BIGINT NOT NULL, decided_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS decisions_decided_at ON decisions (decided_at)",
    "CREATE INDEX IF NOT EXISTS decisions_policy_tier ON decisions (policy_version, tier)",
    """CREATE TABLE IF NOT EXISTS review_tasks (
        task_id TEXT PRIMARY KEY, event_id TEXT NOT NULL,
        model_name TEXT NOT NULL, model_version TEXT NOT NULL, tier TEXT NOT NULL, priority INTEGER NOT NULL,
        reason TEXT NOT NULL, policy_version TEXT NOT NULL, audit BOOLEAN NOT NULL,
        sampling_propensity DOUBLE PRECISION NOT NULL, confidence DOUBLE PRECISION NOT NULL,
        predicted_label TEXT NOT NULL, override_risk DOUBLE PRECISION,
        created_at BIGINT NOT NULL, due_by BIGINT NOT NULL, queue TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS review_tasks_event ON review_tasks (event_id)",
    "CREATE INDEX IF NOT EXISTS review_tasks_created_at ON review_tasks (created_at)",
    """CREATE TABLE IF NOT EXISTS answers (
        correction_id TEXT PRIMARY KEY, event_id TEXT NOT NULL,
        model_name TEXT NOT NULL, model_version TEXT NOT NULL, reviewer_id TEXT NOT NULL,
        action TEXT NOT NULL, corrected_label TEXT, tier TEXT NOT NULL, reviewed_at BIGINT NOT NULL,
        review_seconds DOUBLE PRECISION NOT NULL, note TEXT, source TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS answers_event ON answers (event_id)",
    "CREATE INDEX IF NOT EXISTS answers_reviewed_at ON answers (reviewed_at)",
    """CREATE TABLE IF NOT EXISTS training_examples (
        correction_id TEXT PRIMARY KEY, event_id TEXT NOT NULL,
        model_name TEXT NOT NULL, model_version TEXT NOT NULL, reviewer_id TEXT NOT NULL, action TEXT NOT NULL,
        label TEXT, effective_label TEXT, answers_so_far INTEGER NOT NULL, tier TEXT NOT NULL,
        audit BOOLEAN NOT NULL, sampling_propensity DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
        policy_version TEXT NOT NULL, predicted_label TEXT NOT NULL, task_created_at BIGINT NOT NULL,
        reviewed_at BIGINT NOT NULL, review_seconds DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS training_examples_event ON training_examples (event_id)",
    "CREATE INDEX IF NOT EXISTS training_examples_reviewed_at ON training_examples (reviewed_at)",
    """CREATE TABLE IF NOT EXISTS policy_events (
        event_id TEXT PRIMARY KEY, kind TEXT NOT NULL, worker TEXT NOT NULL,
        old_version TEXT NOT NULL, new_version TEXT NOT NULL, source TEXT NOT NULL,
        model_name TEXT, overlay TEXT, evidence TEXT NOT NULL, detail TEXT NOT NULL, changed_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS policy_events_changed_at ON policy_events (changed_at)",
    """CREATE TABLE IF NOT EXISTS model_updates (
        model_name TEXT NOT NULL, role TEXT NOT NULL, version BIGINT NOT NULL, parent_version BIGINT,
        examples_seen BIGINT NOT NULL, metrics TEXT NOT NULL, model_format TEXT NOT NULL,
        model_bytes_sha256 TEXT NOT NULL, model_bytes_size BIGINT NOT NULL, hmac_sha256 TEXT NOT NULL,
        published_at BIGINT NOT NULL, PRIMARY KEY (model_name, role, version))""",
    "CREATE INDEX IF NOT EXISTS model_updates_published_at ON model_updates (published_at)",
    """CREATE TABLE IF NOT EXISTS drift_events (
        drift_id TEXT PRIMARY KEY, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
        signal TEXT NOT NULL, detector TEXT NOT NULL, score DOUBLE PRECISION NOT NULL,
        threshold DOUBLE PRECISION NOT NULL, drift_window TEXT NOT NULL, state TEXT NOT NULL,
        detected_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS drift_events_detected_at ON drift_events (detected_at)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        record_id TEXT PRIMARY KEY, error_class TEXT, error_type TEXT, error_message TEXT,
        source_topic TEXT, source_partition INTEGER, source_offset BIGINT,
        payload_size BIGINT NOT NULL, payload_sha256 TEXT NOT NULL, dead_lettered_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dead_letters_at ON dead_letters (dead_lettered_at)",
    """CREATE TABLE IF NOT EXISTS undecodable (
        record_id TEXT PRIMARY KEY, topic TEXT NOT NULL, error_type TEXT NOT NULL, error_message TEXT NOT NULL,
        payload_size BIGINT NOT NULL, payload_sha256 TEXT NOT NULL, seen_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS undecodable_seen_at ON undecodable (seen_at)",
]

#: Who served each decision (DecisionBatch v2): "producer" or "challenger:<version>", and the label the caller got.
#: Rows written before it were all served by the producer with its own label.
_V2 = [
    "ALTER TABLE decisions ADD COLUMN served_by TEXT NOT NULL DEFAULT 'producer'",
    "ALTER TABLE decisions ADD COLUMN served_label TEXT",
    "UPDATE decisions SET served_label = predicted_label WHERE served_label IS NULL",
]

#: Every migration, in order. Never edit an applied one: append.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "audit tables", _V1),
    (2, "decisions: served_by and served_label", _V2),
]

_LOCK_ID = 7_302_023  # PostgreSQL advisory lock taken while migrating


def current_version(db: AuditDB) -> int:
    """The highest applied migration (0 on an empty database)."""
    _, rows = db.query("SELECT MAX(version) FROM schema_migrations")
    return int(rows[0][0] or 0)


def migrate(db: AuditDB, upto: int | None = None) -> list[int]:
    """Apply the missing migrations (up to version ``upto``, default all); returns the versions applied now
    (empty when up to date)."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
               "applied_at BIGINT NOT NULL)")
    applied: list[int] = []
    for version, name, statements in MIGRATIONS:
        if upto is not None and version > upto:
            break
        with db.transaction():
            if db.dialect == "postgresql":
                db.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_ID,))
            _, done = db.query("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
            if done:
                continue
            for sql in statements:
                db.execute(sql)
            db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                       (version, name, int(time.time() * 1000)))
            applied.append(version)
    return applied
