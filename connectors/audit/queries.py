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
       a.correction_id, a.reviewer_id, a.action, a.corrected_label, a.reviewed_at, a.review_seconds,
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
