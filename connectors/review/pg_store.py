"""The review server's state in PostgreSQL, so several review-server processes share one queue.

Same contract as :class:`loopline.connectors.review.store.ReviewStore` (the SQLite default), plus:

* **leases stay exclusive across processes**: ``claim_next`` picks the most urgent free task with
  ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the leasing ``UPDATE`` (a row another process is
  leasing at that moment is skipped, never handed out twice); ``claim`` and ``complete`` are single
  conditional ``UPDATE ... RETURNING`` statements, so the lease check and the write are one atomic
  step in the database, not in one process's memory;
* tables are prefixed ``rs_`` so the review store can share a database with the audit trail;
* the schema is versioned (table ``rs_schema_version``): each process applies the pending
  :data:`_MIGRATIONS` in order under an advisory lock, so an older store is upgraded in place
  (version 2 adds the workbench's ``urgency``/``reason``/``audit`` columns, filled from the stored
  tasks, and the ``rs_reviewer_answers`` table of the per-reviewer counters; version 3 the
  ``rs_meta`` table holding the Kafka cluster id the tasks came from).

Selected by ``LOOPLINE_REVIEW_DB_URL=postgresql://...`` (see :func:`open_store`).
"""
from __future__ import annotations

import json
import threading

from loopline.connectors.review import store as store_module
from loopline.connectors.review.settings import QUEUE_OF_TIER, QUEUES
from loopline.connectors.review.store import (
    LeaseError,
    QueueFilter,
    ReviewStore,
    TaskNotFound,
    Urgency,
    _json_default,
)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS rs_tasks (
        task_id TEXT PRIMARY KEY, queue TEXT NOT NULL, priority INTEGER NOT NULL, due_by BIGINT NOT NULL,
        created_at BIGINT NOT NULL, model_name TEXT NOT NULL, body TEXT NOT NULL,
        leased_by TEXT, lease_until DOUBLE PRECISION, claimed_at DOUBLE PRECISION, done INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS rs_tasks_queue ON rs_tasks (done, queue, priority DESC, due_by)",
    "CREATE INDEX IF NOT EXISTS rs_tasks_created ON rs_tasks (created_at)",
    "CREATE INDEX IF NOT EXISTS rs_tasks_leases ON rs_tasks (lease_until) WHERE leased_by IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS rs_labels (model_name TEXT NOT NULL, label TEXT NOT NULL, PRIMARY KEY (model_name, label))",
    "CREATE TABLE IF NOT EXISTS rs_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS rs_answers (id BIGSERIAL PRIMARY KEY, model_name TEXT NOT NULL,
        predicted_label TEXT NOT NULL, reason TEXT NOT NULL, event_id TEXT NOT NULL, action TEXT NOT NULL,
        corrected_label TEXT, confidence DOUBLE PRECISION NOT NULL, answered_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rs_answers_similar ON rs_answers (model_name, predicted_label, reason, id)",
    """CREATE TABLE IF NOT EXISTS rs_reviewers (name TEXT PRIMARY KEY, role TEXT NOT NULL, pii_clearance INTEGER NOT NULL,
        salt BYTEA NOT NULL, hash BYTEA NOT NULL)""",
]
# Version 2: the workbench (issue #21): urgency order, reason/audit filters, per-reviewer counters.
# ``%(weight)s`` is the store's priority weight in ms (fills ``urgency`` of tasks already stored).
_SCHEMA_V2 = [
    "ALTER TABLE rs_tasks ADD COLUMN IF NOT EXISTS urgency BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE rs_tasks ADD COLUMN IF NOT EXISTS reason TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE rs_tasks ADD COLUMN IF NOT EXISTS audit INTEGER NOT NULL DEFAULT 0",
    "UPDATE rs_tasks SET urgency = due_by - priority::bigint * %(weight)s, "
    "reason = coalesce(body::jsonb ->> 'reason', ''), "
    "audit = CASE WHEN (body::jsonb -> 'audit') = 'true'::jsonb THEN 1 ELSE 0 END",
    "CREATE INDEX IF NOT EXISTS rs_tasks_urgency ON rs_tasks (done, queue, leased_by, urgency)",
    "CREATE INDEX IF NOT EXISTS rs_tasks_due ON rs_tasks (done, queue, leased_by, due_by)",
    "CREATE INDEX IF NOT EXISTS rs_tasks_reasons ON rs_tasks (queue, reason) WHERE done = 0",
    "CREATE INDEX IF NOT EXISTS rs_tasks_models ON rs_tasks (queue, model_name) WHERE done = 0",
    """CREATE TABLE IF NOT EXISTS rs_reviewer_answers (id BIGSERIAL PRIMARY KEY, reviewer TEXT NOT NULL,
        event_id TEXT NOT NULL, action TEXT NOT NULL, label TEXT, audit INTEGER NOT NULL,
        answered_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rs_reviewer_answers_who ON rs_reviewer_answers (reviewer, answered_at)",
    "CREATE INDEX IF NOT EXISTS rs_reviewer_answers_event ON rs_reviewer_answers (event_id)",
]
# (version, statements) in order; a store records the highest version applied in rs_schema_version.
# Version 1 is the schema before versioning (CREATE ... IF NOT EXISTS, so it also adopts such a store).
_SCHEMA_V3 = ["CREATE TABLE IF NOT EXISTS rs_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"]
_MIGRATIONS: list[tuple[int, list[str]]] = [(1, _SCHEMA), (2, _SCHEMA_V2), (3, _SCHEMA_V3)]
SCHEMA_VERSION = _MIGRATIONS[-1][0]
_LOCK_ID = 7_302_024  # advisory lock held while migrating the schema


def _pg(fragment: str) -> str:
    """A :class:`QueueFilter` SQL fragment (constant text, ``?`` placeholders) in psycopg's style."""
    return fragment.replace("?", "%s")


class PgReviewStore(ReviewStore):
    """:class:`ReviewStore` on PostgreSQL. Thread-safe (one connection behind a lock per process)."""

    def __init__(self, url: str, lease_seconds: float = 300.0, task_ttl_seconds: float = 7 * 86400.0,
                 max_tasks: int = 100_000, *, audit_sla_seconds: float | None = None, audit_priority: int = 0,
                 priority_weight_seconds: float = 60.0) -> None:
        import psycopg

        self.path = url.split("@")[-1]  # host/db only: never the password
        self.urgency = Urgency(audit_sla_seconds, audit_priority, priority_weight_seconds)
        self.lease_seconds = lease_seconds
        self.task_ttl_seconds = task_ttl_seconds
        self.max_tasks = max_tasks
        self._pg = psycopg.connect(url, autocommit=True, connect_timeout=10)
        self._lock = threading.RLock()
        self._answering: set[str] = set()  # task ids whose answer this process is publishing (begin_answer)
        self._migrate()

    def _migrate(self) -> None:
        """Apply the pending :data:`_MIGRATIONS` in one transaction (one process at a time)."""
        weight = {"weight": int(self.urgency.priority_weight_seconds * 1000)}
        with self._pg.transaction():
            self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            self._pg.execute("CREATE TABLE IF NOT EXISTS rs_schema_version (version INTEGER NOT NULL)")
            row = self._pg.execute("SELECT max(version) FROM rs_schema_version").fetchone()
            current = (row[0] if row else None) or 0
            for version, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements:
                    self._pg.execute(sql, weight if "%(weight)s" in sql else None)
                self._pg.execute("INSERT INTO rs_schema_version VALUES (%s)", (version,))

    def schema_version(self) -> int:
        """The highest migration applied to this database."""
        with self._lock:
            return int(self._x("SELECT max(version) FROM rs_schema_version").fetchone()[0] or 0)

    def close(self) -> None:
        with self._lock:
            self._pg.close()

    def _x(self, sql: str, params=()):
        return self._pg.execute(sql, params)

    # ------------------------------------------------------------ counters
    def _bump(self, name: str, n: int = 1) -> None:
        if n:
            self._x("INSERT INTO rs_counters VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                    "SET value = rs_counters.value + EXCLUDED.value", (name, n))

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._x("SELECT value FROM rs_counters WHERE name = %s", (name,)).fetchone()
            return int(row[0]) if row else 0

    # ------------------------------------------------------------ tasks
    def add_tasks(self, tasks: list[dict], now: float) -> int:
        for task in tasks:
            if task["tier"] not in QUEUE_OF_TIER:
                raise ValueError(f"task {task['task_id']!r} has tier {task['tier']!r}, not a review tier")
        added = 0
        cutoff_ms = (now - self.task_ttl_seconds) * 1000
        with self._lock, self._pg.transaction():
            for task in tasks:
                if task["created_at"] < cutoff_ms:
                    self._bump("dropped_ttl")
                    continue
                task = self.urgency.admit(task)
                cur = self._x(
                    "INSERT INTO rs_tasks (task_id, queue, priority, due_by, created_at, model_name, body,"
                    " urgency, reason, audit) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (task["task_id"], QUEUE_OF_TIER[task["tier"]], int(task["priority"]), int(task["due_by"]),
                     int(task["created_at"]), task["model_name"], json.dumps(task, default=_json_default),
                     self.urgency.of(task), str(task.get("reason") or ""), int(bool(task.get("audit")))))
                if cur.rowcount == 0:
                    continue
                added += 1
                known = {r[0] for r in self._x("SELECT label FROM rs_labels WHERE model_name = %s",
                                                 (task["model_name"],)).fetchall()}
                total = self._x("SELECT COUNT(*) FROM rs_labels").fetchone()[0]
                for lb in store_module.labels_to_remember(task, known, total):  # a bounded table
                    self._x("INSERT INTO rs_labels VALUES (%s, %s) ON CONFLICT DO NOTHING", (task["model_name"], lb))
            if added:
                self._enforce_bounds(now)
        return added

    def _enforce_bounds(self, now: float) -> None:
        cutoff = int((now - self.task_ttl_seconds) * 1000)
        cur = self._x("DELETE FROM rs_tasks WHERE created_at < %s AND done = 0", (cutoff,))
        self._bump("dropped_ttl", cur.rowcount)
        self._x("DELETE FROM rs_tasks WHERE created_at < %s AND done = 1", (cutoff,))
        n = self._x("SELECT COUNT(*) FROM rs_tasks WHERE done = 0").fetchone()[0]
        if n > self.max_tasks:
            cur = self._x("DELETE FROM rs_tasks WHERE task_id IN (SELECT task_id FROM rs_tasks WHERE done = 0 "
                          "ORDER BY urgency DESC, due_by DESC LIMIT %s FOR UPDATE SKIP LOCKED)", (n - self.max_tasks,))
            self._bump("dropped_overflow", cur.rowcount)

    def broker_cluster(self, cluster_id: str) -> int:
        with self._lock, self._pg.transaction():
            row = self._x("SELECT value FROM rs_meta WHERE name = 'cluster_id' FOR UPDATE").fetchone()
            retired = 0
            if row is not None and row[0] != cluster_id:
                retired = self._x("DELETE FROM rs_tasks WHERE done = 0").rowcount
                self._bump("dropped_broker_gone", retired)
            self._x("INSERT INTO rs_meta VALUES ('cluster_id', %s) ON CONFLICT (name) "
                    "DO UPDATE SET value = EXCLUDED.value", (cluster_id,))
            return retired

    def expire_leases(self, now: float) -> int:
        with self._lock:
            if self._x("SELECT 1 FROM rs_tasks WHERE leased_by IS NOT NULL AND lease_until < %s AND done = 0 LIMIT 1",
                       (now,)).fetchone() is None:
                return 0
            with self._pg.transaction():
                cur = self._x("UPDATE rs_tasks SET leased_by = NULL, lease_until = NULL, claimed_at = NULL "
                              "WHERE done = 0 AND leased_by IS NOT NULL AND lease_until < %s", (now,))
                self._bump("lease_expiries", cur.rowcount)
            return cur.rowcount

    def waiting(self, queue: str, now: float, limit: int = 50, offset: int = 0,
                filters: QueueFilter | None = None) -> list[dict]:
        self.expire_leases(now)
        where, args = (filters or QueueFilter()).sql(now)
        with self._lock:
            rows = self._x(
                f"SELECT body FROM rs_tasks WHERE done = 0 AND queue = %s AND leased_by IS NULL{_pg(where)} "  # noqa: S608 - constant SQL fragments, values bound
                "ORDER BY urgency ASC, due_by ASC, task_id LIMIT %s OFFSET %s",
                (queue, *args, limit, max(0, offset))).fetchall()
        return [json.loads(r[0]) for r in rows]

    def count_waiting(self, queue: str, now: float, filters: QueueFilter | None = None) -> int:
        self.expire_leases(now)
        where, args = (filters or QueueFilter()).sql(now)
        with self._lock:
            sql = f"SELECT COUNT(*) FROM rs_tasks WHERE done = 0 AND queue = %s AND leased_by IS NULL{_pg(where)}"  # noqa: S608 - constant fragments
            return int(self._x(sql, (queue, *args)).fetchone()[0])

    def release(self, task_id: str, reviewer: str) -> bool:
        with self._lock:
            return self._x("UPDATE rs_tasks SET leased_by = NULL, lease_until = NULL, claimed_at = NULL "
                           "WHERE task_id = %s AND leased_by = %s AND done = 0", (task_id, reviewer)).rowcount > 0

    def facets(self, queue: str) -> dict[str, list[str]]:
        with self._lock:
            models = [r[0] for r in self._x("SELECT DISTINCT model_name FROM rs_tasks WHERE done = 0 AND queue = %s "
                                            "ORDER BY 1 LIMIT 50", (queue,)).fetchall()]
            reasons = [r[0] for r in self._x("SELECT DISTINCT reason FROM rs_tasks WHERE done = 0 AND queue = %s "
                                             "ORDER BY 1 LIMIT 50", (queue,)).fetchall()]
        return {"model": models, "reason": [r for r in reasons if r]}

    def queue_stats(self, now: float) -> dict[str, dict]:
        self.expire_leases(now)
        out = {q: {"waiting": 0, "leased": 0, "oldest_age_seconds": 0.0} for q in QUEUES}
        with self._lock:
            for q in QUEUES:
                total = self._x("SELECT COUNT(*) FROM rs_tasks WHERE done = 0 AND queue = %s", (q,)).fetchone()[0]
                waiting, oldest = self._x("SELECT COUNT(*), MIN(created_at) FROM rs_tasks WHERE done = 0 AND queue = %s "
                                          "AND leased_by IS NULL", (q,)).fetchone()
                out[q] = {"waiting": waiting, "leased": total - waiting,
                          "oldest_age_seconds": max(0.0, now - oldest / 1000.0) if oldest is not None else 0.0}
        return out

    def past_due(self, now: float) -> dict[str, int]:
        with self._lock:
            return {q: self._x("SELECT COUNT(*) FROM rs_tasks WHERE done = 0 AND queue = %s AND leased_by IS NULL "
                               "AND due_by < %s", (q, int(now * 1000))).fetchone()[0] for q in QUEUES}

    def get(self, task_id: str) -> dict:
        with self._lock:
            row = self._x("SELECT body, leased_by, lease_until, claimed_at, done FROM rs_tasks WHERE task_id = %s",
                          (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        task = json.loads(row[0])
        task["_lease"] = {"leased_by": row[1], "lease_until": row[2], "claimed_at": row[3], "done": bool(row[4])}
        return task

    def claim(self, task_id: str, reviewer: str, now: float) -> dict:
        """Lease ``task_id`` to ``reviewer`` in one conditional UPDATE (free, expired, or already theirs)."""
        self.expire_leases(now)  # counts the expiries, as the SQLite store does
        with self._lock:
            row = self._x(
                "UPDATE rs_tasks SET claimed_at = CASE WHEN leased_by = %s AND lease_until >= %s THEN claimed_at "
                "ELSE %s END, leased_by = %s, lease_until = %s "
                "WHERE task_id = %s AND done = 0 AND (leased_by IS NULL OR leased_by = %s OR lease_until < %s) "
                "RETURNING task_id",
                (reviewer, now, now, reviewer, now + self.lease_seconds, task_id, reviewer, now)).fetchone()
            task = self.get(task_id)  # TaskNotFound when unknown
            if row is None:
                if task["_lease"]["done"]:
                    raise LeaseError("this task has been answered already")
                raise LeaseError("another reviewer is working on this task")
            return task

    def claim_next(self, queue: str, reviewer: str, now: float, filters: QueueFilter | None = None) -> dict | None:
        """Lease the most urgent free task of ``queue`` matching ``filters`` (urgency order, as
        :meth:`waiting`); rows other processes are leasing are skipped."""
        self.expire_leases(now)
        where, args = (filters or QueueFilter()).sql(now)
        with self._lock:
            row = self._x(
                "UPDATE rs_tasks SET leased_by = %s, lease_until = %s, claimed_at = %s WHERE task_id = ("  # noqa: S608 - constant SQL fragments, values bound
                "SELECT task_id FROM rs_tasks WHERE done = 0 AND queue = %s AND (leased_by IS NULL OR lease_until < %s)"
                f"{_pg(where)} ORDER BY urgency ASC, due_by ASC, task_id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "AND done = 0 AND (leased_by IS NULL OR lease_until < %s) RETURNING task_id",
                (reviewer, now + self.lease_seconds, now, queue, now, *args, now)).fetchone()
            return None if row is None else self.get(row[0])

    def check_lease(self, task_id: str, reviewer: str, now: float) -> dict:
        task = self.get(task_id)
        lease = task["_lease"]
        if lease["done"]:
            raise LeaseError("this task has been answered already")
        if lease["leased_by"] != reviewer or (lease["lease_until"] or 0) < now:
            raise LeaseError("you do not hold the lease on this task (it expired or was never claimed)")
        return task

    def end_answer(self, task_id: str, published: bool) -> None:
        """After ``begin_answer`` (inherited: lease check + in-process mark): record the task answered once
        its answer reached Kafka. Across processes the lease keeps one holder per task."""
        with self._lock:
            if published:
                self._x("UPDATE rs_tasks SET done = 1 WHERE task_id = %s", (task_id,))
            self._answering.discard(task_id)

    def complete(self, task_id: str, reviewer: str, now: float) -> dict:
        """Mark answered in one conditional UPDATE: only the holder of a live lease, only once."""
        with self._lock:
            row = self._x("UPDATE rs_tasks SET done = 1 WHERE task_id = %s AND done = 0 AND leased_by = %s "
                          "AND lease_until >= %s RETURNING task_id", (task_id, reviewer, now)).fetchone()
            if row is None:
                self.check_lease(task_id, reviewer, now)  # raises the precise LeaseError / TaskNotFound
                raise LeaseError("you do not hold the lease on this task (it expired or was never claimed)")
            task = self.get(task_id)
            task["_lease"]["done"] = False  # as ReviewStore.complete: the lease state seen by the check
            return task

    def reopen(self, task_id: str) -> None:
        with self._lock:
            self._x("UPDATE rs_tasks SET done = 0 WHERE task_id = %s", (task_id,))

    def labels(self, model_name: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._x("SELECT label FROM rs_labels WHERE model_name = %s ORDER BY label",
                                          (model_name,)).fetchall()]

    def record_answer(self, task: dict, action: str, corrected_label: str | None, now: float) -> None:
        p = task["prediction"]
        with self._lock, self._pg.transaction():
            new_id = self._x(
                "INSERT INTO rs_answers (model_name, predicted_label, reason, event_id, action, corrected_label,"
                " confidence, answered_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (task["model_name"], p["predicted_label"], task["reason"], task["event_id"], action,
                 corrected_label, float(p["confidence"]), now)).fetchone()[0]
            if new_id % 500 == 0:
                self._x("DELETE FROM rs_answers WHERE id <= %s", (new_id - self.MAX_ANSWERS,))

    def similar_answers(self, task: dict, limit: int = 5) -> list[dict]:
        p = task["prediction"]
        with self._lock:
            rows = self._x(
                "SELECT event_id, action, corrected_label, confidence, answered_at FROM rs_answers"
                " WHERE model_name = %s AND predicted_label = %s AND reason = %s AND event_id != %s"
                " ORDER BY id DESC LIMIT %s",
                (task["model_name"], p["predicted_label"], task["reason"], task["event_id"], limit)).fetchall()
        return [{"event_id": r[0], "action": r[1], "corrected_label": r[2], "confidence": r[3],
                 "answered_at": r[4]} for r in rows]

    # ------------------------------------------------------------ reviewer counters
    def record_reviewer_answer(self, reviewer: str, task: dict, action: str, label: str | None, now: float) -> None:
        with self._lock, self._pg.transaction():
            new_id = self._x(
                "INSERT INTO rs_reviewer_answers (reviewer, event_id, action, label, audit, answered_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (reviewer, task["event_id"], action, label, int(bool(task.get("audit"))), now)).fetchone()[0]
            if new_id % 500 == 0:
                self._x("DELETE FROM rs_reviewer_answers WHERE answered_at < %s", (now - self.task_ttl_seconds,))

    def reviewer_counters(self, reviewer: str, since: float) -> dict:
        with self._lock:
            answered = self._x("SELECT COUNT(*) FROM rs_reviewer_answers WHERE reviewer = %s AND answered_at >= %s",
                               (reviewer, since)).fetchone()[0]
            rows = self._x(
                "SELECT a.audit, a.label = b.label FROM rs_reviewer_answers a JOIN rs_reviewer_answers b"
                " ON a.event_id = b.event_id AND b.reviewer != a.reviewer"
                " WHERE a.reviewer = %s AND a.label IS NOT NULL AND b.label IS NOT NULL"
                " AND a.id = (SELECT MAX(id) FROM rs_reviewer_answers WHERE event_id = a.event_id"
                " AND reviewer = a.reviewer)"
                " AND b.id = (SELECT MAX(id) FROM rs_reviewer_answers WHERE event_id = b.event_id"
                " AND reviewer != a.reviewer AND label IS NOT NULL) LIMIT 10000", (reviewer,)).fetchall()
        return {"answered": int(answered), "compared_others": len(rows), "agree_others": sum(1 for _, m in rows if m),
                "compared_audits": sum(1 for a, _ in rows if a), "agree_audits": sum(1 for a, m in rows if a and m)}

    # ------------------------------------------------------------ reviewers
    def put_reviewer(self, name: str, role: str, pii_clearance: bool, salt: bytes, digest: bytes) -> None:
        with self._lock:
            self._x("INSERT INTO rs_reviewers VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                    "role = EXCLUDED.role, pii_clearance = EXCLUDED.pii_clearance, salt = EXCLUDED.salt, "
                    "hash = EXCLUDED.hash", (name, role, int(pii_clearance), salt, digest))

    def reviewer(self, name: str) -> dict | None:
        with self._lock:
            row = self._x("SELECT name, role, pii_clearance, salt, hash FROM rs_reviewers WHERE name = %s",
                          (name,)).fetchone()
        if row is None:
            return None
        return {"name": row[0], "role": row[1], "pii_clearance": bool(row[2]), "salt": bytes(row[3]),
                "hash": bytes(row[4])}

    def reviewers(self) -> list[dict]:
        with self._lock:
            rows = self._x("SELECT name, role, pii_clearance FROM rs_reviewers ORDER BY name").fetchall()
        return [{"name": n, "role": r, "pii_clearance": bool(p)} for n, r, p in rows]

    def remove_reviewer(self, name: str) -> bool:
        with self._lock:
            return self._x("DELETE FROM rs_reviewers WHERE name = %s", (name,)).rowcount > 0


def open_store(settings) -> ReviewStore:
    """The review store of ``settings`` (a ReviewSettings): PostgreSQL when ``db_url`` is a
    ``postgresql://`` URL, else the SQLite file ``db_path`` (the embedded default)."""
    url = getattr(settings, "db_url", None)
    if url and url.startswith(("postgresql://", "postgres://")):
        return PgReviewStore(url, settings.lease_seconds, settings.task_ttl_seconds, settings.max_tasks,
                             audit_sla_seconds=settings.audit_sla_seconds, audit_priority=settings.audit_priority,
                             priority_weight_seconds=settings.priority_weight_seconds)
    if url and url.startswith("sqlite:///"):
        return ReviewStore(url[len("sqlite:///"):], settings.lease_seconds, settings.task_ttl_seconds, settings.max_tasks,
                           audit_sla_seconds=settings.audit_sla_seconds, audit_priority=settings.audit_priority,
                           priority_weight_seconds=settings.priority_weight_seconds)
    if url:
        raise ValueError(f"LOOPLINE_REVIEW_DB_URL: use sqlite:///path or postgresql://..., not {url.split(':', 1)[0]!r}:")
    return ReviewStore(settings.db_path, settings.lease_seconds, settings.task_ttl_seconds, settings.max_tasks,
                       audit_sla_seconds=settings.audit_sla_seconds, audit_priority=settings.audit_priority,
                       priority_weight_seconds=settings.priority_weight_seconds)
