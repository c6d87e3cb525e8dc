"""Decoded Loopline records -> audit table rows. Pure functions: no Kafka, no database.

Every row has a stable primary key taken from the record itself, so writing the same record
twice (re-delivery, a replay by a new consumer group, a restart after ``kill -9``) adds nothing:

============== ================================ =============================================
table          key                              from
============== ================================ =============================================
decisions      event_id                         DecisionBatch (expanded per event) / RoutingDecision
review_tasks   task_id                          ReviewTask on both review topics
answers        correction_id                    CorrectionEvent
training_...   correction_id                    TrainingExample
policy_events  event_id                         PolicyEvent
model_updates  (model_name, role, version)      ModelUpdate (metadata + sha256 of the bytes, never the bytes)
drift_events   sha256 of the record's fields    DriftEvent
dead_letters   partition:offset on its topic    headers only (payload: size + sha256)
undecodable    topic:partition:offset           records the sink could not decode
============== ================================ =============================================
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from loopline.processors.errors import LooplineError
from loopline.processors.routing.router import iter_decisions
from loopline.processors.wire.names import CORRECTION, DRIFT_EVENT, MODEL_UPDATE, POLICY_EVENT, REVIEW_TASK, TRAINING_EXAMPLE
from loopline.processors.wire.serde import AvroSerde


@dataclass(frozen=True)
class Table:
    """One audit table: its columns (in insert order) and the event-time column retention uses."""

    name: str
    columns: tuple[str, ...]
    time_column: str


TABLES: dict[str, Table] = {t.name: t for t in (
    Table("decisions", ("event_id", "model_name", "model_version", "policy_version", "tier", "reason",
                        "sampling_propensity", "audited", "confidence", "predicted_label", "emitted_at",
                        "decided_at", "served_by", "served_label"), "decided_at"),
    Table("review_tasks", ("task_id", "event_id", "model_name", "model_version", "tier", "priority", "reason",
                           "policy_version", "audit", "sampling_propensity", "confidence", "predicted_label",
                           "override_risk", "created_at", "due_by", "queue"), "created_at"),
    Table("answers", ("correction_id", "event_id", "model_name", "model_version", "reviewer_id", "action",
                      "corrected_label", "tier", "reviewed_at", "review_seconds", "note", "source"), "reviewed_at"),
    Table("training_examples", ("correction_id", "event_id", "model_name", "model_version", "reviewer_id", "action",
                                "label", "effective_label", "answers_so_far", "tier", "audit", "sampling_propensity",
                                "reason", "policy_version", "predicted_label", "task_created_at", "reviewed_at",
                                "review_seconds"), "reviewed_at"),
    Table("policy_events", ("event_id", "kind", "worker", "old_version", "new_version", "source", "model_name",
                            "overlay", "evidence", "detail", "changed_at"), "changed_at"),
    Table("model_updates", ("model_name", "role", "version", "parent_version", "examples_seen", "metrics",
                            "model_format", "model_bytes_sha256", "model_bytes_size", "hmac_sha256",
                            "published_at"), "published_at"),
    Table("drift_events", ("drift_id", "model_name", "model_version", "signal", "detector", "score", "threshold",
                           "drift_window", "state", "detected_at"), "detected_at"),
    Table("dead_letters", ("record_id", "error_class", "error_type", "error_message", "source_topic",
                           "source_partition", "source_offset", "payload_size", "payload_sha256",
                           "dead_lettered_at"), "dead_lettered_at"),
    Table("undecodable", ("record_id", "topic", "error_type", "error_message", "payload_size", "payload_sha256",
                          "seen_at"), "seen_at"),
)}

#: Topic roles (attributes of :class:`loopline.streams.topics.TopicNames`) the sink consumes.
ROLES = ("decisions", "review_analyst", "review_escalation", "corrections", "training", "policy_events",
         "model_updates", "drift", "dead_letter")

#: The Avro type each single-type role carries (decisions: batch or single decision, see ``iter_decisions``).
_EXPECTED = {"review_analyst": REVIEW_TASK, "review_escalation": REVIEW_TASK, "corrections": CORRECTION,
             "training": TRAINING_EXAMPLE, "policy_events": POLICY_EVENT, "model_updates": MODEL_UPDATE,
             "drift": DRIFT_EVENT}


class UnexpectedRecordError(LooplineError):
    """A record of a type that does not belong on the topic it was read from."""


@dataclass(frozen=True)
class Record:
    """What the sink needs of one Kafka record."""

    role: str
    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int = 0


def _sha(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def _header(headers, name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return None if v is None else v.decode("utf-8", "replace")
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def rows_for(rec: Record, serde: AvroSerde) -> list[tuple[str, tuple]]:
    """The ``(table, row)`` pairs one record becomes. Raises on a record it cannot decode."""
    if rec.role == "dead_letter":
        h = rec.headers
        return [("dead_letters", (f"{rec.partition}:{rec.offset}", _header(h, "loopline.error.class"),
                                  _header(h, "loopline.error.type"), _header(h, "loopline.error.message"),
                                  _header(h, "loopline.source.topic"), _int(_header(h, "loopline.source.partition")),
                                  _int(_header(h, "loopline.source.offset")), len(rec.value or b""), _sha(rec.value),
                                  rec.timestamp_ms))]
    if rec.role == "decisions":
        return [("decisions", (d["event_id"], d["model_name"], d["model_version"], d["policy_version"], d["tier"],
                               d["reason"], d["sampling_propensity"], d["audited"], d["confidence"],
                               d["predicted_label"], d["emitted_at"], d["decided_at"],
                               d.get("served_by") or "producer", d.get("served_label") or d["predicted_label"]))
                for d in iter_decisions(serde, rec.value)]
    name, o = serde.decode(rec.value)
    if name != _EXPECTED[rec.role]:
        raise UnexpectedRecordError(f"{name} does not belong on the {rec.role} topic")
    if rec.role in ("review_analyst", "review_escalation"):
        p, ins = o["prediction"], o.get("insights") or {}
        return [("review_tasks", (o["task_id"], o["event_id"], o["model_name"], o["model_version"], o["tier"],
                                  o["priority"], o["reason"], o["policy_version"], o["audit"], o["sampling_propensity"],
                                  p["confidence"], p["predicted_label"], ins.get("override_risk"), o["created_at"],
                                  o["due_by"], rec.role.split("_", 1)[1]))]
    if rec.role == "corrections":
        return [("answers", (o["correction_id"], o["event_id"], o["model_name"], o["model_version"], o["reviewer_id"],
                             o["action"], o["corrected_label"], o["tier"], o["reviewed_at"], o["review_seconds"],
                             o["note"], o["source"]))]
    if rec.role == "training":
        return [("training_examples", (o["correction_id"], o["event_id"], o["model_name"], o["model_version"],
                                       o["reviewer_id"], o["action"], o["label"], o["effective_label"],
                                       o["answers_so_far"], o["tier"], o["audit"], o["sampling_propensity"], o["reason"],
                                       o["policy_version"], o["prediction"]["predicted_label"], o["task_created_at"],
                                       o["reviewed_at"], o["review_seconds"]))]
    if rec.role == "policy_events":
        return [("policy_events", (o["event_id"], o["kind"], o["worker"], o["old_version"], o["new_version"],
                                   o["source"], o["model_name"], o["overlay"],
                                   json.dumps(o["evidence"], sort_keys=True), o["detail"], o["changed_at"]))]
    if rec.role == "model_updates":
        return [("model_updates", (o["model_name"], o["role"], o["version"], o["parent_version"], o["examples_seen"],
                                   json.dumps(o["metrics"], sort_keys=True), o["model_format"], _sha(o["model_bytes"]),
                                   len(o["model_bytes"]), o["hmac_sha256"], o["published_at"]))]
    fields = (o["model_name"], o["model_version"], o["signal"], o["detector"], o["score"], o["threshold"],
              o["window"], o["state"], o["detected_at"])
    return [("drift_events", (_sha(json.dumps(fields).encode()), *fields))]


def undecodable_row(rec: Record, exc: Exception) -> tuple[str, tuple]:
    """The row that keeps a record the sink could not decode (no payload: its size and sha256)."""
    return ("undecodable", (f"{rec.topic}:{rec.partition}:{rec.offset}", rec.topic, type(exc).__name__,
                            str(exc)[:500], len(rec.value or b""), _sha(rec.value), rec.timestamp_ms))


def group_rows(records: Iterable[Record], serde: AvroSerde) -> tuple[dict[str, list[tuple]], int]:
    """Rows per table for a batch of records, and how many records could not be decoded.

    A record that fails to decode becomes an ``undecodable`` row alone; the others are kept.
    """
    out: dict[str, list[tuple]] = {}
    bad = 0
    for rec in records:
        try:
            pairs = rows_for(rec, serde)
        except Exception as exc:  # noqa: BLE001 - errors are data: the record is kept as an undecodable row
            pairs = [undecodable_row(rec, exc)]
            bad += 1
        for table, row in pairs:
            out.setdefault(table, []).append(row)
    return out, bad
