"""The documented audit questions as functions (docs/audit.md gives the same SQL).

Read-only: nothing here writes to the database.
"""
from __future__ import annotations

import csv
from pathlib import Path

from loopline.connectors.audit.db import AuditDB

HISTORY_SQL = {
    "decision": "SELECT * FROM decisions WHERE event_id = ?",
    "review_tasks": "SELECT * FROM review_tasks WHERE event_id = ? ORDER BY created_at, task_id",
    "answers": "SELECT * FROM answers WHERE event_id = ? ORDER BY reviewed_at, correction_id",
    "training_examples": "SELECT * FROM training_examples WHERE event_id = ? ORDER BY reviewed_at, correction_id",
}

#: One row per (decision, answer): decisions without an answer appear once with empty answer columns.
EXPORT_SQL = """
SELECT d.event_id, d.model_name, d.model_version, d.policy_version, d.tier, d.reason, d.audited,
       d.sampling_propensity, d.confidence, d.predicted_label, d.emitted_at, d.decided_at,
       d.served_by, d.served_label, a.correction_id, a.reviewer_id, a.action, a.corrected_label, a.reviewed_at, a.review_seconds,
       x.effective_label
FROM decisions d
LEFT JOIN answers a ON a.event_id = d.event_id
LEFT JOIN training_examples x ON x.correction_id = a.correction_id
WHERE d.decided_at >= ? AND d.decided_at < ?
ORDER BY d.decided_at, d.event_id, a.reviewed_at, a.correction_id
"""


def _dicts(cols: list[str], rows: list[tuple]) -> list[dict]:
    return [dict(zip(cols, r)) for r in rows]


def history(db: AuditDB, event_id: str) -> dict:
    """Everything the audit trail knows of one prediction: its decision (policy and model versions),
    the review tasks it produced, every answer (reviewer, action, label) and the training examples
    those answers became. Empty lists (and ``decision: None``) where nothing was recorded."""
    out: dict = {"event_id": event_id}
    for part, sql in HISTORY_SQL.items():
        rows = _dicts(*db.query(sql, (event_id,)))
        out[part] = (rows[0] if rows else None) if part == "decision" else rows
    return out


def export_csv(db: AuditDB, from_ms: int, to_ms: int, out: Path) -> int:
    """Write the decisions of ``[from_ms, to_ms)`` with their answers to ``out`` (CSV); returns data rows."""
    cols, rows = db.iter_query(EXPORT_SQL, (from_ms, to_ms))
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for row in rows:  # streamed: memory stays bounded for any range
            w.writerow(row)
            n += 1
    return n


_ANSWER_LABELS = """answer_labels AS (
  SELECT a.event_id, a.reviewer_id, a.correction_id, d.tier,
         COALESCE(a.corrected_label, CASE WHEN a.action = 'approve' THEN d.predicted_label END) AS label
  FROM answers a JOIN decisions d ON d.event_id = a.event_id
  WHERE a.action IN ('approve', 'override')
)"""

#: The documented questions: name -> (what it answers, SQL with ``?`` parameters, parameter names).
#: The same text is in docs/audit.md (a test keeps them identical) and runs unchanged on SQLite and PostgreSQL
#: (psycopg gets ``%s`` for each ``?``).
QUESTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "event_history": (
        "The full history of one event: its decision (tier, reason, policy and model versions), the review task, "
        "every answer (reviewer, action, label) and the training example each answer became.",
        """SELECT d.event_id, d.decided_at, d.tier, d.reason, d.policy_version, d.model_name, d.model_version,
       d.predicted_label, d.confidence, d.audited,
       t.task_id, t.queue, t.created_at AS task_created_at,
       a.correction_id, a.reviewer_id, a.action, a.corrected_label, a.reviewed_at,
       x.effective_label, x.answers_so_far
FROM decisions d
LEFT JOIN review_tasks t ON t.event_id = d.event_id
LEFT JOIN answers a ON a.event_id = d.event_id
LEFT JOIN training_examples x ON x.correction_id = a.correction_id
WHERE d.event_id = ?
ORDER BY a.reviewed_at, a.correction_id""",
        ("event_id",)),
    "decisions_per_policy_tier": (
        "Decisions per policy version and tier in a time range (epoch ms), with the audited share of each.",
        """SELECT policy_version, tier, COUNT(*) AS decisions,
       SUM(CASE WHEN audited THEN 1 ELSE 0 END) AS audited,
       MIN(decided_at) AS first_decided_at, MAX(decided_at) AS last_decided_at
FROM decisions
WHERE decided_at >= ? AND decided_at < ?
GROUP BY policy_version, tier
ORDER BY policy_version, tier""",
        ("from_ms", "to_ms")),
    "reviewer_accuracy": (
        "Each reviewer's answers against the event's outcome (the final effective label: escalation beats "
        "analyst review beats audit, the latest answer wins within a tier), on events with at least two "
        "labelled answers so nobody is scored against their own answer alone.",
        f"""WITH {_ANSWER_LABELS},
outcome AS (
  SELECT x.event_id, x.effective_label AS label
  FROM training_examples x
  WHERE x.answers_so_far = (SELECT MAX(y.answers_so_far) FROM training_examples y WHERE y.event_id = x.event_id)
),
multi AS (SELECT event_id FROM answer_labels GROUP BY event_id HAVING COUNT(*) >= 2)
SELECT l.reviewer_id, COUNT(*) AS scored_answers,
       AVG(CASE WHEN l.label = o.label THEN 1.0 ELSE 0.0 END) AS accuracy
FROM answer_labels l
JOIN outcome o ON o.event_id = l.event_id
JOIN multi m ON m.event_id = l.event_id
GROUP BY l.reviewer_id
ORDER BY l.reviewer_id""",  # noqa: S608 (a constant CTE, no input)
        ()),
    "inter_reviewer_agreement": (
        "Inter-reviewer agreement per decision tier: over every pair of different reviewers who labelled the same "
        "event, the share of pairs that gave the same label.",
        f"""WITH {_ANSWER_LABELS}
SELECT p.tier, COUNT(*) AS pairs,
       AVG(CASE WHEN p.label = q.label THEN 1.0 ELSE 0.0 END) AS agreement
FROM answer_labels p
JOIN answer_labels q ON q.event_id = p.event_id AND p.reviewer_id < q.reviewer_id
GROUP BY p.tier
ORDER BY p.tier""",  # noqa: S608 (a constant CTE, no input)
        ()),
    "time_to_answer_per_tier": (
        "Time from prediction (emitted_at) to its first answer, per decision tier, in seconds.",
        """SELECT d.tier, COUNT(*) AS answered_events,
       AVG(f.first_answer_at - d.emitted_at) / 1000.0 AS mean_seconds,
       MIN(f.first_answer_at - d.emitted_at) / 1000.0 AS min_seconds,
       MAX(f.first_answer_at - d.emitted_at) / 1000.0 AS max_seconds
FROM decisions d
JOIN (SELECT event_id, MIN(reviewed_at) AS first_answer_at FROM answers GROUP BY event_id) f
  ON f.event_id = d.event_id
GROUP BY d.tier
ORDER BY d.tier""",
        ()),
    "override_rate_around_policy_change": (
        "What a policy change did: the override rate (share of answers that overrode the prediction) per tier, "
        "for decisions in a window of the given length (ms) before and after the change recorded by one PolicyEvent.",
        """WITH change AS (SELECT changed_at FROM policy_events WHERE event_id = ?)
SELECT CASE WHEN d.decided_at < c.changed_at THEN 'before' ELSE 'after' END AS period,
       d.tier, COUNT(*) AS answers,
       AVG(CASE WHEN a.action = 'override' THEN 1.0 ELSE 0.0 END) AS override_rate
FROM answers a
JOIN decisions d ON d.event_id = a.event_id
CROSS JOIN change c
WHERE d.decided_at >= c.changed_at - ? AND d.decided_at < c.changed_at + ?
GROUP BY CASE WHEN d.decided_at < c.changed_at THEN 'before' ELSE 'after' END, d.tier
ORDER BY period DESC, d.tier""",
        ("policy_event_id", "window_ms", "window_ms")),
    "override_rate_per_version": (
        "What a model or policy version did: the override rate per model version and policy version, "
        "with the first and last decision time of each (compare the rows before and after a change).",
        """SELECT d.model_name, d.model_version, d.policy_version, COUNT(*) AS answers,
       AVG(CASE WHEN a.action = 'override' THEN 1.0 ELSE 0.0 END) AS override_rate,
       MIN(d.decided_at) AS first_decided_at, MAX(d.decided_at) AS last_decided_at
FROM answers a
JOIN decisions d ON d.event_id = a.event_id
GROUP BY d.model_name, d.model_version, d.policy_version
ORDER BY d.model_name, MIN(d.decided_at)""",
        ()),
    "model_versions_published": (
        "The model updates published (metadata only: version, parent, examples seen, metrics, sha256 of the "
        "snapshot), to put next to the override rate per version.",
        """SELECT model_name, role, version, parent_version, examples_seen, metrics, model_bytes_sha256, published_at
FROM model_updates
WHERE model_name = ?
ORDER BY published_at, role, version""",
        ("model_name",)),
}


def ask(db: AuditDB, name: str, *params) -> tuple[list[str], list[tuple]]:
    """Run the documented question ``name`` with its parameters; returns (columns, rows)."""
    _, sql, names = QUESTIONS[name]
    if len(params) != len(names):
        raise ValueError(f"{name} takes {len(names)} parameters ({', '.join(names) or 'none'}), not {len(params)}")
    return db.query(sql, params)

#: PostgreSQL only (SQLite has no percentile_cont): p50 and p95 of the time from prediction to answer per tier.
PG_TIME_TO_ANSWER_PERCENTILES = """SELECT d.tier, percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY (f.first_answer_at - d.emitted_at) / 1000.0)
       AS p50_p95_seconds
FROM decisions d
JOIN (SELECT event_id, MIN(reviewed_at) AS first_answer_at FROM answers GROUP BY event_id) f
  ON f.event_id = d.event_id
GROUP BY d.tier"""
