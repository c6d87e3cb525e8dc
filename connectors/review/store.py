"""The review server's state in one SQLite file: waiting tasks, leases, labels seen, reviewers.

Guarantees:

* a task is stored once per ``task_id`` (redelivered records are ignored);
* bounded: tasks whose ``created_at`` is older than ``task_ttl_seconds`` are dropped
  (counter ``dropped_ttl``), and beyond ``max_tasks`` waiting tasks the ones that would be
  reviewed last (least urgent, see :class:`Urgency`) are dropped (counter ``dropped_overflow``);
* a leased task is invisible to everyone else until its lease ends; an expired lease puts
  it back in the queue (counter ``lease_expiries``);
* ``complete`` succeeds once per task, only for the reviewer holding a live lease.

Thread-safe (one connection behind a lock).

>>> s = ReviewStore(":memory:", lease_seconds=60)
>>> s.add_task({"task_id": "e1:review", "event_id": "e1", "model_name": "m", "tier": "review",
...             "priority": 1, "due_by": 5, "created_at": 0,
...             "prediction": {"predicted_label": "legit"}}, now=0)
True
>>> s.claim("e1:review", "ana", now=1)["task_id"]
'e1:review'
>>> s.waiting("analyst", now=2)
[]
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from loopline.connectors.review.settings import ESCALATION, QUEUE_OF_TIER, QUEUES


class LeaseError(Exception):
    """The reviewer does not hold a live lease on the task (or it was answered already)."""


class TaskNotFound(Exception):
    """No task with this id is stored."""


#: labels remembered per model for the "Correct to" list of models without a declared label set, and in
#: all (producers choose labels and model names: the table stays bounded; models with a declared set
#: do not need it)
MAX_LABELS_PER_MODEL = 100
MAX_LABEL_ROWS = 20_000

def labels_to_remember(task: dict, known: set[str], total: int) -> list[str]:
    """The labels of ``task``'s prediction to add to the labels-seen table, within its bounds.

    ``known``: the labels already stored for the task's model; ``total``: rows in the table.
    Shared by the SQLite and PostgreSQL stores.
    """
    pred = task.get("prediction") or {}
    labels = {pred.get("predicted_label")} | set((pred.get("class_probabilities") or {}).keys())
    room = max(0, min(MAX_LABELS_PER_MODEL - len(known), MAX_LABEL_ROWS - total))
    return sorted(lb for lb in labels if lb and lb not in known)[:room]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, queue TEXT NOT NULL, priority INTEGER NOT NULL, due_by INTEGER NOT NULL,
    created_at INTEGER NOT NULL, model_name TEXT NOT NULL, body TEXT NOT NULL,
    leased_by TEXT, lease_until REAL, claimed_at REAL, done INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (done, queue, priority DESC, due_by);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at);
CREATE INDEX IF NOT EXISTS tasks_waiting ON tasks (done, queue, leased_by, created_at);
CREATE INDEX IF NOT EXISTS tasks_leases ON tasks (lease_until) WHERE leased_by IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (done, queue, leased_by, due_by);
CREATE TABLE IF NOT EXISTS labels (model_name TEXT NOT NULL, label TEXT NOT NULL, PRIMARY KEY (model_name, label));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (id INTEGER PRIMARY KEY AUTOINCREMENT, model_name TEXT NOT NULL,
    predicted_label TEXT NOT NULL, reason TEXT NOT NULL, event_id TEXT NOT NULL, action TEXT NOT NULL,
    corrected_label TEXT, confidence REAL NOT NULL, answered_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS answers_similar ON answers (model_name, predicted_label, reason, id);
CREATE TABLE IF NOT EXISTS reviewer_answers (id INTEGER PRIMARY KEY AUTOINCREMENT, reviewer TEXT NOT NULL,
    event_id TEXT NOT NULL, action TEXT NOT NULL, label TEXT, audit INTEGER NOT NULL, answered_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reviewer_answers_who ON reviewer_answers (reviewer, answered_at);
CREATE INDEX IF NOT EXISTS reviewer_answers_event ON reviewer_answers (event_id);
CREATE TABLE IF NOT EXISTS reviewers (name TEXT PRIMARY KEY, role TEXT NOT NULL, pii_clearance INTEGER NOT NULL,
    salt BLOB NOT NULL, hash BLOB NOT NULL);
"""


class ReviewStore:
    """See the module docstring. ``now`` arguments are epoch seconds (floats)."""

    def __init__(self, path: str | Path, lease_seconds: float = 300.0, task_ttl_seconds: float = 7 * 86400.0,
                 max_tasks: int = 100_000, *, audit_sla_seconds: float | None = None, audit_priority: int = 0,
                 priority_weight_seconds: float = 60.0) -> None:
        self.path = str(path)
        self.urgency = Urgency(audit_sla_seconds, audit_priority, priority_weight_seconds)
        self.lease_seconds = lease_seconds
        self.task_ttl_seconds = task_ttl_seconds
        self.max_tasks = max_tasks
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        migrate_urgency(self._db, self.urgency)
        self._lock = threading.RLock()
        self._answering: set[str] = set()  # task ids whose answer is being published (see begin_answer)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ counters
    def _bump(self, name: str, n: int = 1) -> None:
        if n:
            self._db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                             (name, n, n))

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            return row[0] if row else 0

    # ------------------------------------------------------------ tasks
    def add_task(self, task: dict, now: float) -> bool:
        """Store a decoded ReviewTask; False when its task_id is known or it is already too old."""
        return self.add_tasks([task], now) == 1

    def add_tasks(self, tasks: list[dict], now: float) -> int:
        """Store decoded ReviewTasks in one transaction (bounds enforced once); how many were new."""
        for task in tasks:
            if task["tier"] not in QUEUE_OF_TIER:
                raise ValueError(f"task {task['task_id']!r} has tier {task['tier']!r}, not a review tier")
        added = 0
        cutoff_ms = (now - self.task_ttl_seconds) * 1000
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for task in tasks:
                    if task["created_at"] < cutoff_ms:
                        self._bump("dropped_ttl")
                        continue
                    task = self.urgency.admit(task)
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO tasks (task_id, queue, priority, due_by, created_at, model_name, body,"
                        " urgency, reason, audit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (task["task_id"], QUEUE_OF_TIER[task["tier"]], int(task["priority"]), int(task["due_by"]),
                         int(task["created_at"]), task["model_name"], json.dumps(task, default=_json_default),
                         self.urgency.of(task), str(task.get("reason") or ""), int(bool(task.get("audit")))))
                    if cur.rowcount == 0:
                        continue
                    added += 1
                    known = {r[0] for r in self._db.execute("SELECT label FROM labels WHERE model_name = ?",
                                                             (task["model_name"],))}
                    total = self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
                    fresh = labels_to_remember(task, known, total)
                    self._db.executemany("INSERT OR IGNORE INTO labels VALUES (?, ?)",
                                         [(task["model_name"], lb) for lb in fresh])
                if added:
                    self._enforce_bounds(now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def _enforce_bounds(self, now: float) -> None:
        cutoff = int((now - self.task_ttl_seconds) * 1000)
        cur = self._db.execute("DELETE FROM tasks WHERE created_at < ? AND done = 0", (cutoff,))
        self._bump("dropped_ttl", cur.rowcount)
        self._db.execute("DELETE FROM tasks WHERE created_at < ? AND done = 1", (cutoff,))
        n = self._db.execute("SELECT COUNT(*) FROM tasks WHERE done = 0").fetchone()[0]
        if n > self.max_tasks:
            cur = self._db.execute(
                "DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM tasks WHERE done = 0 "
                "ORDER BY urgency DESC, due_by DESC LIMIT ?)", (n - self.max_tasks,))
            self._bump("dropped_overflow", cur.rowcount)

    def broker_cluster(self, cluster_id: str) -> int:
        """Record the Kafka cluster the tasks come from; returns how many open tasks were retired.

        When the cluster id is another one than the stored one (the embedded broker keeps
        everything in memory and starts with a new id, so a restart replaced it), every open
        task is retired: its prediction, decision and join state are gone with the old broker,
        and an answer to it could only become an orphan dead letter. Counted as
        ``dropped_broker_gone``. A Kafka cluster keeps its id across restarts: nothing retires.
        """
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'cluster_id'").fetchone()
            retired = 0
            if row is not None and row[0] != cluster_id:
                retired = self._db.execute("DELETE FROM tasks WHERE done = 0").rowcount
                self._bump("dropped_broker_gone", retired)
            self._db.execute("INSERT INTO meta VALUES ('cluster_id', ?) ON CONFLICT (name) "
                             "DO UPDATE SET value = excluded.value", (cluster_id,))
            return retired

    def expire_leases(self, now: float) -> int:
        """Return tasks with an expired lease to their queue; how many."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM tasks WHERE leased_by IS NOT NULL AND lease_until < ? AND done = 0 "
                                "LIMIT 1", (now,)).fetchone() is None:
                return 0  # read-only fast path: no write transaction per page view
            cur = self._db.execute("UPDATE tasks SET leased_by = NULL, lease_until = NULL, claimed_at = NULL "
                                   "WHERE done = 0 AND leased_by IS NOT NULL AND lease_until < ?", (now,))
            self._bump("lease_expiries", cur.rowcount)
            return cur.rowcount

    def waiting(self, queue: str, now: float, limit: int = 50, offset: int = 0,
                filters: QueueFilter | None = None) -> list[dict]:
        """Unleased tasks of a queue, most urgent first (see :class:`Urgency`), optionally filtered."""
        self.expire_leases(now)
        where, args = (filters or QueueFilter()).sql(now)
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM tasks WHERE done = 0 AND queue = ? AND leased_by IS NULL{where} "  # noqa: S608 - constant SQL fragments, values bound
                "ORDER BY urgency ASC, due_by ASC, task_id LIMIT ? OFFSET ?",
                (queue, *args, limit, max(0, offset))).fetchall()
        return [json.loads(r[0]) for r in rows]

    def count_waiting(self, queue: str, now: float, filters: QueueFilter | None = None) -> int:
        """How many unleased tasks of ``queue`` match ``filters`` (the "of N" of a queue page)."""
        self.expire_leases(now)
        where, args = (filters or QueueFilter()).sql(now)
        with self._lock:
            sql = f"SELECT COUNT(*) FROM tasks WHERE done = 0 AND queue = ? AND leased_by IS NULL{where}"  # noqa: S608 - constant fragments
            return self._db.execute(sql, (queue, *args)).fetchone()[0]

    def release(self, task_id: str, reviewer: str) -> bool:
        """Give a task back to its queue now (the reviewer quit); False without an own live lease."""
        with self._lock:
            return self._db.execute("UPDATE tasks SET leased_by = NULL, lease_until = NULL, claimed_at = NULL "
                                    "WHERE task_id = ? AND leased_by = ? AND done = 0",
                                    (task_id, reviewer)).rowcount > 0

    def facets(self, queue: str) -> dict[str, list[str]]:
        """Distinct models and reasons of the waiting tasks of ``queue`` (filter choices; at most 50 each)."""
        with self._lock:
            models = [r[0] for r in self._db.execute(
                "SELECT DISTINCT model_name FROM tasks WHERE done = 0 AND queue = ? ORDER BY 1 LIMIT 50", (queue,))]
            reasons = [r[0] for r in self._db.execute(
                "SELECT DISTINCT reason FROM tasks WHERE done = 0 AND queue = ? ORDER BY 1 LIMIT 50", (queue,))]
        return {"model": models, "reason": [r for r in reasons if r]}

    def queue_stats(self, now: float) -> dict[str, dict]:
        """Per queue: waiting (unleased), leased, oldest waiting age in seconds (by created_at)."""
        self.expire_leases(now)
        out = {q: {"waiting": 0, "leased": 0, "oldest_age_seconds": 0.0} for q in QUEUES}
        with self._lock:
            for q in QUEUES:
                total = self._db.execute("SELECT COUNT(*) FROM tasks WHERE done = 0 AND queue = ?", (q,)).fetchone()[0]
                waiting, oldest = self._db.execute(
                    "SELECT COUNT(*), MIN(created_at) FROM tasks WHERE done = 0 AND queue = ? AND leased_by IS NULL",
                    (q,)).fetchone()
                out[q] = {"waiting": waiting, "leased": total - waiting,
                          "oldest_age_seconds": max(0.0, now - oldest / 1000.0) if oldest is not None else 0.0}
        return out

    def past_due(self, now: float) -> dict[str, int]:
        """Per queue: waiting (unleased) tasks whose ``due_by`` has passed — an index range count
        (index ``tasks_due``), cheap enough for every scrape. Call after :meth:`queue_stats`
        (which expires leases) to count tasks whose lease just ended as waiting."""
        out = {}
        with self._lock:
            for q in QUEUES:
                out[q] = self._db.execute(
                    "SELECT COUNT(*) FROM tasks WHERE done = 0 AND queue = ? AND leased_by IS NULL AND due_by < ?",
                    (q, int(now * 1000))).fetchone()[0]
        return out

    def get(self, task_id: str) -> dict:
        """The task with its lease state (``leased_by``, ``lease_until``, ``claimed_at``, ``done``)."""
        with self._lock:
            row = self._db.execute("SELECT body, leased_by, lease_until, claimed_at, done FROM tasks WHERE task_id = ?",
                                   (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        task = json.loads(row[0])
        task["_lease"] = {"leased_by": row[1], "lease_until": row[2], "claimed_at": row[3], "done": bool(row[4])}
        return task

    def claim(self, task_id: str, reviewer: str, now: float) -> dict:
        """Lease a task to ``reviewer`` (renews an own live lease, keeping its claim time)."""
        self.expire_leases(now)
        with self._lock:
            task = self.get(task_id)
            lease = task["_lease"]
            if lease["done"]:
                raise LeaseError("this task has been answered already")
            if lease["leased_by"] not in (None, reviewer):
                raise LeaseError("another reviewer is working on this task")
            claimed_at = lease["claimed_at"] if lease["leased_by"] == reviewer else now
            self._db.execute("UPDATE tasks SET leased_by = ?, lease_until = ?, claimed_at = ? WHERE task_id = ?",
                             (reviewer, now + self.lease_seconds, claimed_at, task_id))
            return self.get(task_id)

    def claim_next(self, queue: str, reviewer: str, now: float, filters: QueueFilter | None = None) -> dict | None:
        """Lease the most urgent waiting task of ``queue`` (matching ``filters``) to ``reviewer``."""
        with self._lock:
            for task in self.waiting(queue, now, limit=1, filters=filters):
                return self.claim(task["task_id"], reviewer, now)
        return None

    def check_lease(self, task_id: str, reviewer: str, now: float) -> dict:
        """The task if ``reviewer`` holds a live lease on it, else :class:`LeaseError`."""
        self.expire_leases(now)
        task = self.get(task_id)
        lease = task["_lease"]
        if lease["done"]:
            raise LeaseError("this task has been answered already")
        if lease["leased_by"] != reviewer:
            raise LeaseError("you do not hold the lease on this task (it expired or was never claimed)")
        return task

    def begin_answer(self, task_id: str, reviewer: str, now: float) -> dict:
        """Check the lease and mark the task *being answered* in this process (not on disk).

        Until :meth:`end_answer`, other submits for the task get :class:`LeaseError`. The mark
        lives in memory only, so a crash while publishing leaves the task open for a resubmit.
        """
        with self._lock:
            task = self.check_lease(task_id, reviewer, now)
            if task_id in self._answering:
                raise LeaseError("an answer to this task is being published right now")
            self._answering.add(task_id)
            return task

    def end_answer(self, task_id: str, published: bool) -> None:
        """After :meth:`begin_answer`: record the task answered if its answer reached Kafka."""
        with self._lock:
            if published:
                self._db.execute("UPDATE tasks SET done = 1 WHERE task_id = ?", (task_id,))
            self._answering.discard(task_id)

    def complete(self, task_id: str, reviewer: str, now: float) -> dict:
        """Mark answered, atomically with the lease check; returns the task (with ``_lease``)."""
        with self._lock:
            task = self.check_lease(task_id, reviewer, now)
            self._db.execute("UPDATE tasks SET done = 1 WHERE task_id = ?", (task_id,))
            return task

    def reopen(self, task_id: str) -> None:
        """Undo ``complete`` (used when publishing the answer failed); the lease is kept."""
        with self._lock:
            self._db.execute("UPDATE tasks SET done = 0 WHERE task_id = ?", (task_id,))

    def labels(self, model_name: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT label FROM labels WHERE model_name = ? ORDER BY label", (model_name,))]

    MAX_ANSWERS = 10_000  # recent answers kept for "similar cases" (oldest trimmed)

    def record_answer(self, task: dict, action: str, corrected_label: str | None, now: float) -> None:
        """Remember an answer so reviewers of similar cases can see it; keeps the last MAX_ANSWERS."""
        p = task["prediction"]
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO answers (model_name, predicted_label, reason, event_id, action, corrected_label,"
                " confidence, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task["model_name"], p["predicted_label"], task["reason"], task["event_id"], action,
                 corrected_label, float(p["confidence"]), now))
            if cur.lastrowid % 500 == 0:  # trim in batches, not on every insert
                self._db.execute("DELETE FROM answers WHERE id <= ?", (cur.lastrowid - self.MAX_ANSWERS,))

    def similar_answers(self, task: dict, limit: int = 5) -> list[dict]:
        """The latest answers to cases with the same model, predicted label and routing rule (index range)."""
        p = task["prediction"]
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, action, corrected_label, confidence, answered_at FROM answers"
                " WHERE model_name = ? AND predicted_label = ? AND reason = ? AND event_id != ?"
                " ORDER BY id DESC LIMIT ?",
                (task["model_name"], p["predicted_label"], task["reason"], task["event_id"], limit)).fetchall()
        return [{"event_id": r[0], "action": r[1], "corrected_label": r[2], "confidence": r[3],
                 "answered_at": r[4]} for r in rows]

    def escalate_copy(self, task: dict, now: float, escalation: dict | None = None, due_by: int | None = None,
                      priority: int | None = None) -> bool:
        """Store an escalation copy of an analyst task (tier escalate, task_id ``<event_id>:escalate``),
        with ``escalation`` (who, when, why, the original reason) and the escalation's own due time
        and priority when given; the note joins the task's ``notes`` thread."""
        copy = {k: v for k, v in task.items() if k != "_lease"}
        copy.update(tier="escalate", task_id=f"{task['event_id']}:escalate", created_at=int(now * 1000))
        if escalation is not None:
            copy["escalation"] = escalation
            copy["notes"] = list(task.get("notes") or []) + (
                [{"by": escalation["by"], "at": escalation["at"], "text": escalation["note"], "action": "escalate"}]
                if escalation.get("note") else [])
        if due_by is not None:
            copy["due_by"] = int(due_by)
        if priority is not None:
            copy["priority"] = int(priority)
        assert QUEUE_OF_TIER[copy["tier"]] == ESCALATION
        return self.add_task(copy, now)

    # ------------------------------------------------------------ reviewer counters
    def record_reviewer_answer(self, reviewer: str, task: dict, action: str, label: str | None, now: float) -> None:
        """Remember who answered what (per-reviewer counters); kept for ``task_ttl_seconds``."""
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO reviewer_answers (reviewer, event_id, action, label, audit, answered_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (reviewer, task["event_id"], action, label, int(bool(task.get("audit"))), now))
            if cur.lastrowid % 500 == 0:
                self._db.execute("DELETE FROM reviewer_answers WHERE answered_at < ?", (now - self.task_ttl_seconds,))

    def reviewer_counters(self, reviewer: str, since: float) -> dict:
        """``answered`` since ``since``; ``agree_others``/``compared_others``: this reviewer's labels on
        events someone else also labelled (escalations, double reviews) and how many matched;
        ``agree_audits``/``compared_audits``: the same restricted to audit tasks."""
        with self._lock:
            answered = self._db.execute("SELECT COUNT(*) FROM reviewer_answers WHERE reviewer = ? AND answered_at >= ?",
                                        (reviewer, since)).fetchone()[0]
            rows = self._db.execute(
                "SELECT a.audit, a.label = b.label FROM reviewer_answers a JOIN reviewer_answers b"
                " ON a.event_id = b.event_id AND b.reviewer != a.reviewer"
                " WHERE a.reviewer = ? AND a.label IS NOT NULL AND b.label IS NOT NULL"
                " AND a.id = (SELECT MAX(id) FROM reviewer_answers WHERE event_id = a.event_id AND reviewer = a.reviewer)"
                " AND b.id = (SELECT MAX(id) FROM reviewer_answers WHERE event_id = b.event_id AND reviewer != a.reviewer"
                " AND label IS NOT NULL) LIMIT 10000", (reviewer,)).fetchall()
        return {"answered": answered, "compared_others": len(rows), "agree_others": sum(1 for _, m in rows if m),
                "compared_audits": sum(1 for a, _ in rows if a), "agree_audits": sum(1 for a, m in rows if a and m)}

    # ------------------------------------------------------------ reviewers
    def put_reviewer(self, name: str, role: str, pii_clearance: bool, salt: bytes, digest: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO reviewers VALUES (?, ?, ?, ?, ?)",
                             (name, role, int(pii_clearance), salt, digest))

    def reviewer(self, name: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT name, role, pii_clearance, salt, hash FROM reviewers WHERE name = ?",
                                   (name,)).fetchone()
        if row is None:
            return None
        return {"name": row[0], "role": row[1], "pii_clearance": bool(row[2]), "salt": row[3], "hash": row[4]}

    def reviewers(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT name, role, pii_clearance FROM reviewers ORDER BY name").fetchall()
        return [{"name": n, "role": r, "pii_clearance": bool(p)} for n, r, p in rows]

    def remove_reviewer(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM reviewers WHERE name = ?", (name,)).rowcount > 0


class Urgency:
    """One urgency order for every queue: ``urgency = due_by - priority x weight`` (ms; smaller is
    more urgent), so due time and priority mix and every task's place is fixed when it arrives —
    a task is overtaken only by tasks that arrive soon after it, never for ever (no starvation).

    Audit tasks get their own due time (``created_at + audit_sla_seconds``) and at least
    ``audit_priority``, so the audit sample is answered while the audit-based error estimate needs it.

    >>> u = Urgency(1800, 200, 60)
    >>> t = u.admit({"audit": True, "tier": "review", "priority": 0, "created_at": 0, "due_by": 14_400_000})
    >>> t["due_by"], t["priority"], u.of(t)
    (1800000, 200, -10200000)
    """

    def __init__(self, audit_sla_seconds: float | None, audit_priority: int, priority_weight_seconds: float) -> None:
        self.audit_sla_seconds = audit_sla_seconds
        self.audit_priority = audit_priority
        self.priority_weight_seconds = priority_weight_seconds

    def admit(self, task: dict) -> dict:
        """``task`` with the audit due time and priority applied (a copy when changed)."""
        if not task.get("audit") or task.get("tier") != "review" or self.audit_sla_seconds is None:
            return task
        out = dict(task)
        out["due_by"] = min(int(task["due_by"]), int(task["created_at"] + self.audit_sla_seconds * 1000))
        out["priority"] = max(int(task["priority"]), self.audit_priority)
        return out

    def of(self, task: dict) -> int:
        return int(task["due_by"]) - int(task["priority"]) * int(self.priority_weight_seconds * 1000)


@dataclass(frozen=True)
class QueueFilter:
    """Filters of a queue page: model, reason, kind (``audit`` | ``regular``), due (``overdue`` |
    ``hour`` = due within the next hour), event_id (exact). Empty fields do not filter."""

    model: str = ""
    reason: str = ""
    kind: str = ""
    due: str = ""
    event_id: str = ""

    def sql(self, now: float) -> tuple[str, list]:
        where, args = "", []
        if self.model:
            where, args = where + " AND model_name = ?", args + [self.model]
        if self.reason:
            where, args = where + " AND reason = ?", args + [self.reason]
        if self.kind in ("audit", "regular"):
            where += " AND audit = ?"
            args.append(1 if self.kind == "audit" else 0)
        if self.due == "overdue":
            where, args = where + " AND due_by < ?", args + [int(now * 1000)]
        elif self.due == "hour":
            where, args = where + " AND due_by < ?", args + [int((now + 3600) * 1000)]
        if self.event_id:
            where += " AND task_id IN (?, ?)"
            args += [f"{self.event_id}:review", f"{self.event_id}:escalate"]
        return where, args

    def active(self) -> bool:
        return any((self.model, self.reason, self.kind, self.due, self.event_id))


def migrate_urgency(db: sqlite3.Connection, urgency: Urgency) -> None:
    """Add the ``urgency``, ``reason`` and ``audit`` columns to a store written by an older version
    (filled from due time, priority and the stored task)."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(tasks)")}
    if "urgency" not in cols:
        db.execute("ALTER TABLE tasks ADD COLUMN urgency INTEGER NOT NULL DEFAULT 0")
        db.execute("UPDATE tasks SET urgency = due_by - priority * ?", (int(urgency.priority_weight_seconds * 1000),))
    if "reason" not in cols:
        db.execute("ALTER TABLE tasks ADD COLUMN reason TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE tasks ADD COLUMN audit INTEGER NOT NULL DEFAULT 0")
        db.execute("UPDATE tasks SET reason = coalesce(json_extract(body, '$.reason'), ''), "
                   "audit = coalesce(json_extract(body, '$.audit'), 0)")
    db.execute("CREATE INDEX IF NOT EXISTS tasks_urgency ON tasks (done, queue, leased_by, urgency)")
    db.execute("DROP INDEX IF EXISTS tasks_reason")
    db.execute("CREATE INDEX IF NOT EXISTS tasks_reasons ON tasks (queue, reason) WHERE done = 0")
    db.execute("CREATE INDEX IF NOT EXISTS tasks_models ON tasks (queue, model_name) WHERE done = 0")


def _json_default(obj):
    if isinstance(obj, bytes):
        return obj.hex()
    if hasattr(obj, "timestamp"):
        return int(obj.timestamp() * 1000)
    raise TypeError(f"cannot store {type(obj).__name__} in a task")
