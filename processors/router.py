"""The prediction hot path, free of any Kafka client: bytes in, records out.

:class:`Router.route` takes one agent batch of Kafka records from the
predictions topic and returns everything to publish:

* one ``DecisionBatch`` per source partition (decisions in input order, written
  to the same partition number, so decisions stay co-partitioned with their
  predictions and corrections);
* one ``ReviewTask`` record per review/escalate decision (tasks are single
  records: people and reviewer tools read them one case at a time);
* one dead-letter record per bad input: undecodable records with their
  original bytes, invalid predictions with their own bytes (a bad event inside
  a ``PredictionBatch`` is re-encoded alone so the good events of the batch are
  not duplicated), and headers naming the error class, message and source.

Every input prediction ends in exactly one place: a decision or a dead letter.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from processors.errors import DecodeError, LooplineError, UnexpectedTypeError
from processors.serde import (
    DECISION_BATCH,
    PREDICTION,
    PREDICTION_BATCH,
    REVIEW_TASK,
    AvroSerde,
)
from processors.validation import check_prediction

HEADER_PREFIX = "loopline."


@dataclass(slots=True)
class InputRecord:
    value: bytes | None
    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, bytes]] = ()
    key: bytes | None = None


@dataclass(slots=True)
class OutputRecord:
    role: str  # "decisions" | "review_analyst" | "review_escalation" | "dead_letter"
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class RouteResult:
    outputs: list[OutputRecord]
    predictions: int = 0
    decided: int = 0
    dead_letters: int = 0
    by_model_tier: Counter = field(default_factory=Counter)
    dead_by_class: Counter = field(default_factory=Counter)
    decided_events: list[dict] = field(default_factory=list)  # valid predictions, in decision order
    decisions: list[Any] = field(default_factory=list)
    latencies_ms: list[int] = field(default_factory=list)


class Policy(Protocol):
    def decide_batch(self, events: list[dict], now_ms: int) -> list[Any]: ...


class InsightsProvider(Protocol):
    def insights(self, event: dict, decision: Any) -> dict: ...


def dead_letter(rec: InputRecord, exc: LooplineError | Exception, value: bytes | None = None,
                batch_index: int | None = None, worker: str = "") -> OutputRecord:
    """The dead-letter record for ``rec``: original bytes, original headers plus error headers."""
    error_class = getattr(exc, "error_class", type(exc).__name__)
    message = str(exc)[:500]
    headers = list(rec.headers or ())
    headers += [
        ("loopline.error.class", error_class.encode()),
        ("loopline.error.type", type(exc).__name__.encode()),
        ("loopline.error.message", message.encode()),
        ("loopline.source.topic", rec.topic.encode()),
        ("loopline.source.partition", str(rec.partition).encode()),
        ("loopline.source.offset", str(rec.offset).encode()),
        ("loopline.failed_at", str(int(time.time() * 1000)).encode()),
    ]
    if batch_index is not None:
        headers.append(("loopline.source.batch_index", str(batch_index).encode()))
    if worker:
        headers.append(("loopline.worker", worker.encode()))
    return OutputRecord("dead_letter", rec.key, rec.value if value is None else value, rec.partition, headers)


class Router:
    """Decode → validate → policy → outputs for one batch of Kafka records."""

    def __init__(self, serde: AvroSerde, policy: Policy, max_skew_ms: int,
                 insights: InsightsProvider | None = None, worker: str = "") -> None:
        self.serde = serde
        self.policy = policy
        self.max_skew_ms = max_skew_ms
        self.insights = insights
        self.worker = worker

    def route(self, records: Sequence[InputRecord], now_ms: int | None = None) -> RouteResult:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        outputs: list[OutputRecord] = []
        result = RouteResult(outputs)
        events: list[dict] = []
        parts: list[int] = []
        decode, check, skew = self.serde.decode, check_prediction, self.max_skew_ms
        for rec in records:
            try:
                name, obj = decode(rec.value)
            except DecodeError as exc:
                outputs.append(dead_letter(rec, exc, worker=self.worker))
                result.dead_by_class[exc.error_class] += 1
                continue
            if name == PREDICTION_BATCH:
                items = obj["events"]
                batched = True
            elif name == PREDICTION:
                items = (obj,)
                batched = False
            else:
                exc2 = UnexpectedTypeError(f"{name} does not belong on the predictions topic")
                outputs.append(dead_letter(rec, exc2, worker=self.worker))
                result.dead_by_class[exc2.error_class] += 1
                continue
            result.predictions += len(items)
            for i, ev in enumerate(items):
                err = check(ev, now_ms, skew)
                if err is None:
                    events.append(ev)
                    parts.append(rec.partition)
                else:
                    value = self.serde.encode(PREDICTION, ev) if batched else None
                    outputs.append(dead_letter(rec, err, value=value, batch_index=i if batched else None,
                                               worker=self.worker))
                    result.dead_by_class[err.error_class] += 1
        result.dead_letters = len(outputs)
        if events:
            self._decide(events, parts, now_ms, result)
        return result

    def _decide(self, events: list[dict], parts: list[int], now_ms: int, result: RouteResult) -> None:
        decisions = self.policy.decide_batch(events, now_ms)
        by_part: dict[int, list[dict]] = {}
        counts = result.by_model_tier
        tasks = []
        lat = result.latencies_ms
        for ev, d, p in zip(events, decisions, parts):
            tier = d.tier
            counts[(ev["model_name"], tier)] += 1
            lat.append(now_ms - ev["emitted_at"])
            rec = {
                "event_id": ev["event_id"], "model_name": ev["model_name"], "model_version": ev["model_version"],
                "tier": tier, "reason": d.reason, "policy_version": d.policy_version,
                "sampling_propensity": d.sampling_propensity, "audited": d.audited,
                "confidence": ev["confidence"], "predicted_label": ev["predicted_label"],
                "emitted_at": ev["emitted_at"], "decided_at": now_ms,
            }
            lst = by_part.get(p)
            if lst is None:
                lst = by_part[p] = []
            lst.append(rec)
            if tier != "auto" or d.audited:
                tasks.append((ev, d, p))
        encode = self.serde.encode
        for p, decs in by_part.items():
            batch_id = uuid.uuid4().hex
            result.outputs.append(OutputRecord("decisions", batch_id.encode(),
                                               encode(DECISION_BATCH, {"batch_id": batch_id, "decisions": decs}), p))
        for ev, d, p in tasks:
            result.outputs.append(self._task(ev, d, p, now_ms))
        result.decided = len(events)
        result.decided_events = events
        result.decisions = decisions

    def _task(self, ev: dict, d: Any, partition: int, now_ms: int) -> OutputRecord:
        tier = "escalate" if d.tier == "escalate" else "review"
        insights = {"confidence": ev["confidence"], "rule": d.reason, "override_risk": None,
                    "drift_status": None, "online_prediction": None, "top_contributions": []}
        if self.insights is not None:
            insights.update(self.insights.insights(ev, d))
        task = {
            "task_id": f"{ev['event_id']}:{tier}", "event_id": ev["event_id"], "model_name": ev["model_name"],
            "model_version": ev["model_version"], "tier": tier, "priority": d.priority, "reason": d.reason,
            "policy_version": d.policy_version, "audit": bool(d.audited),
            "sampling_propensity": d.sampling_propensity, "created_at": now_ms,
            "due_by": d.due_by_ms or now_ms, "prediction": ev, "insights": insights,
        }
        role = "review_escalation" if tier == "escalate" else "review_analyst"
        return OutputRecord(role, ev["event_id"].encode(), self.serde.encode(REVIEW_TASK, task), partition)


def iter_decisions(serde: AvroSerde, value: bytes):
    """Yield the ``RoutingDecision`` dicts held by one record of the decisions topic."""
    name, obj = serde.decode(value)
    if name == DECISION_BATCH:
        yield from obj["decisions"]
    else:
        yield obj
