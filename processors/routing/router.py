"""The prediction hot path, free of any Kafka client: bytes in, records out.

:class:`Router.route` takes one agent batch of Kafka records from the
predictions topic and returns everything to publish:

* ``DecisionBatch`` records (columnar, at most ``max_decisions_per_record``
  decisions each, in input order), written to the partition of their
  predictions, so decisions stay co-partitioned with predictions and corrections;
* one ``ReviewTask`` record per review/escalate decision and per audit sample
  (tasks are single records: people and reviewer tools read them one case at a time),
  keyed by ``event_id`` and written to ``partition_for(event_id)`` — the partition
  where every correction keyed by ``event_id`` lands (murmur2, Kafka's default) — so
  the feedback join never depends on the partitioner the prediction's producer used
  (null keys, librdkafka's CRC32 ``consistent_random``); predictions that arrived on
  another partition are counted in ``RouteResult.mispartitioned``;
* optionally (``decision_events``) one ``RoutingDecision`` per prediction, keyed by
  ``event_id`` on ``partition_for(event_id)``, for tools that want a row per event;
* one dead-letter record per bad input: undecodable records with their
  original bytes, an invalid single event with its original bytes, an invalid
  event inside a ``PredictionBatch`` re-encoded alone (so the good events of the
  batch are neither lost nor duplicated), with headers naming the error class,
  message and source.

Inputs become :class:`~loopline.processors.wire.frame.PredictionFrame` s first — a columnar
``PredictionBatch`` is one frame without any per-event decoding; single events
are grouped into frames — and validation, policy and outputs work per frame.
Every input prediction ends in exactly one place: a decision or a dead letter.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from loopline.processors.errors import (
    DecodeError,
    LooplineError,
    TruncatedPayloadError,
    UndeclaredLabel,
    UnexpectedTypeError,
)
from loopline.processors.policy.threshold import FrameDecisions
from loopline.processors.routing.frame_checks import invalid_rows
from loopline.processors.routing.validation import check_prediction
from loopline.processors.wire.frame import PredictionFrame, batch_from_events, frame_from_batch, signature
from loopline.processors.wire.names import TIERS
from loopline.processors.wire.partitioning import partitions_for
from loopline.processors.wire.serde import DECISION, DECISION_BATCH, PREDICTION, PREDICTION_BATCH, REVIEW_TASK, AvroSerde


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
class Served:
    """Which events of a frame a challenger serves (the producer serves the rest).

    ``by`` names it (``challenger:<version>``), ``mask`` marks its rows (auto-tier rows
    only: a human decides the others), ``labels`` holds its label for each marked row,
    in row order.
    """

    by: str
    mask: np.ndarray
    labels: list[str]


@dataclass(slots=True)
class Routed:
    """One frame of valid predictions with the policy's decisions (for statistics and drift)."""

    frame: PredictionFrame
    decisions: FrameDecisions
    partition: int
    served: Served | None = None


@dataclass(slots=True)
class RouteResult:
    outputs: list[OutputRecord]
    predictions: int = 0
    decided: int = 0
    dead_letters: int = 0
    by_model_tier: Counter = field(default_factory=Counter)
    dead_by_class: Counter = field(default_factory=Counter)
    routed: list[Routed] = field(default_factory=list)
    latencies_ms: list[np.ndarray] = field(default_factory=list)
    #: model -> valid predictions whose input partition is not ``partition_for(event_id)``
    mispartitioned: Counter = field(default_factory=Counter)


class Policy(Protocol):
    def decide_frame(self, frame: PredictionFrame, now_ms: int) -> FrameDecisions: ...


class RiskScorer(Protocol):
    def score_frame(self, frame: PredictionFrame) -> np.ndarray | None: ...


class Server(Protocol):
    def serve_frame(self, frame: PredictionFrame, auto: np.ndarray) -> Served | None: ...


class InsightsProvider(Protocol):
    def insights(self, event: dict, tier: str, reason: str, override_risk: float | None = None) -> dict:
        """Extra review-task insights for ``event``; ``override_risk`` is the router's score of it when the
        router has one (computed for the whole frame), so a provider need not score the event again."""
        ...


def dead_letter(rec: InputRecord, exc: LooplineError | Exception, value: bytes | None = None,
                batch_index: int | None = None, worker: str = "") -> OutputRecord:
    """The dead-letter record for ``rec``: original bytes, original headers plus error headers."""
    error_class = getattr(exc, "error_class", "internal")
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
    """Decode → frames → validate → policy → outputs for one batch of Kafka records."""

    def __init__(self, serde: AvroSerde, policy: Policy, max_skew_ms: int,
                 insights: InsightsProvider | None = None, worker: str = "",
                 max_decisions_per_record: int = 1000, risk_scorer: RiskScorer | None = None,
                 partitions: int | None = None, decision_events: bool = False) -> None:
        self.serde = serde
        self.policy = policy
        self.max_skew_ms = max_skew_ms
        self.insights = insights
        self.worker = worker
        self.max_decisions_per_record = max_decisions_per_record
        self.risk_scorer = risk_scorer  # hot-swappable: the override-risk model of the learning loop
        #: partitions of the review topics (= of the corrections topic); ``None``: tasks stay on the input partition
        self.partitions = partitions
        #: also one row-wise ``RoutingDecision`` per prediction (role ``decision_events``, key event_id)
        self.decision_events = decision_events
        #: hot-swappable: which auto-tier events a promoted challenger serves (docs/loop.md); None: the producer
        self.server: Server | None = None

    def route(self, records: Sequence[InputRecord], now_ms: int | None = None) -> RouteResult:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        result = RouteResult([])
        singles: dict[int, list[tuple[InputRecord, dict]]] = {}
        for rec in records:
            try:
                name, obj = self.serde.decode(rec.value, expect=(PREDICTION, PREDICTION_BATCH))
            except DecodeError as exc:
                self._dead(result, dead_letter(rec, exc, worker=self.worker), exc.error_class)
                continue
            if name == PREDICTION_BATCH:
                try:
                    frame = frame_from_batch(obj)
                except ValueError as exc:
                    err = TruncatedPayloadError(f"PredictionBatch columns inconsistent: {exc}")
                    self._dead(result, dead_letter(rec, err, worker=self.worker), err.error_class)
                    continue
                result.predictions += frame.n
                if frame.n:
                    self._route_frame(frame, rec.partition, [rec], None, now_ms, result)
            elif name == PREDICTION:
                result.predictions += 1
                singles.setdefault(rec.partition, []).append((rec, obj))
            else:
                err = UnexpectedTypeError(f"{name} does not belong on the predictions topic")
                self._dead(result, dead_letter(rec, err, worker=self.worker), err.error_class)
        for partition, items in singles.items():
            groups: dict[tuple, list[tuple[InputRecord, dict]]] = {}
            for rec, ev in items:
                groups.setdefault(signature(ev), []).append((rec, ev))
            for group in groups.values():
                frame = frame_from_batch(batch_from_events([ev for _, ev in group], batch_id=""))
                self._route_frame(frame, partition, [], [rec for rec, _ in group], now_ms, result)
        return result

    def _dead(self, result: RouteResult, out: OutputRecord, error_class: str) -> None:
        result.outputs.append(out)
        result.dead_letters += 1
        result.dead_by_class[error_class] += 1

    def _route_frame(self, frame: PredictionFrame, partition: int, sources: list[InputRecord],
                     row_sources: list[InputRecord] | None, now_ms: int, result: RouteResult) -> None:
        bad = invalid_rows(frame, now_ms, self.max_skew_ms)
        if bad.any():
            for i in np.flatnonzero(bad).tolist():
                row = frame.row(i)
                err = check_prediction(row, now_ms, self.max_skew_ms)
                if err is None:  # the vectorised filter and the row rules disagree: a bug, say so
                    err = LooplineError("vectorised validation flagged a row the row rules accept")
                if row_sources is not None:  # a single-event record: its original bytes
                    out = dead_letter(row_sources[i], err, worker=self.worker)
                else:
                    out = dead_letter(sources[0], err, value=self.serde.encode(PREDICTION, row), batch_index=i,
                                      worker=self.worker)
                self._dead(result, out, getattr(err, "error_class", "internal"))
            frame = frame.take(~bad)
            if row_sources is not None:  # keep each single event's original record aligned with the frame
                row_sources = [r for r, b in zip(row_sources, bad.tolist(), strict=True) if not b]
            if frame.n == 0:
                return
        frame = self._drop_undeclared(frame, sources, row_sources, result)
        if frame is None:
            return
        risk = self.risk_scorer.score_frame(frame) if self.risk_scorer is not None else None
        if risk is None:
            decisions = self.policy.decide_frame(frame, now_ms)
        else:
            decisions = self.policy.decide_frame(frame, now_ms, override_risk=risk)
        result.decided += frame.n
        served = self.server.serve_frame(frame, decisions.tiers == 0) if self.server is not None else None
        result.routed.append(Routed(frame, decisions, partition, served))
        counts = np.bincount(decisions.tiers, minlength=3)
        for t, name in enumerate(TIERS):
            if counts[t]:
                result.by_model_tier[(frame.model_name, name)] += int(counts[t])
        result.latencies_ms.append(now_ms - frame.emitted_at)
        self._decision_records(frame, decisions, partition, now_ms, result, served)
        homes = None
        if self.partitions:
            homes = partitions_for(frame.event_ids, self.partitions)
            wrong = int(np.count_nonzero(homes != partition))
            if wrong:
                result.mispartitioned[frame.model_name] += wrong
        human = decisions.needs_human()
        if human.any():
            for i in np.flatnonzero(human).tolist():
                result.outputs.append(self._task(frame, decisions, i, partition if homes is None else int(homes[i]),
                                                 now_ms, None if risk is None else float(risk[i])))

    def declared_labels(self, model_name: str) -> tuple[str, ...]:
        """The label set the policy declares for ``model_name`` (empty: not declared, any label passes)."""
        model = getattr(self.policy, "model", None)
        if model is None:
            holder_policy = getattr(self.policy, "policy", None)
            model = getattr(holder_policy, "model", None)
        return tuple(getattr(model(model_name), "labels", ())) if model is not None else ()

    def _drop_undeclared(self, frame: PredictionFrame, sources: list[InputRecord],
                         row_sources: list[InputRecord] | None, result: RouteResult) -> PredictionFrame | None:
        """Dead-letter rows whose predicted label is outside the model's declared set (class
        ``undeclared_label``); the rest of the frame, or None when nothing is left."""
        declared = self.declared_labels(frame.model_name)
        if not declared:
            return frame
        unknown = [i for i, lb in enumerate(frame.labels) if lb not in declared]
        if not unknown:
            return frame
        bad = np.isin(frame.label_codes, np.asarray(unknown, dtype=frame.label_codes.dtype))
        if not bad.any():
            return frame
        for i in np.flatnonzero(bad).tolist():
            label = frame.labels[int(frame.label_codes[i])]
            err = UndeclaredLabel(f"predicted_label {label[:80]!r} is not declared for model "
                                  f"{frame.model_name!r} (declared: {', '.join(declared)})", field="predicted_label")
            row = frame.row(i)
            if row_sources is not None:
                out = dead_letter(row_sources[i], err, worker=self.worker)
            else:
                out = dead_letter(sources[0], err, value=self.serde.encode(PREDICTION, row), batch_index=i,
                                  worker=self.worker)
            self._dead(result, out, err.error_class)
        frame = frame.take(~bad)
        return frame if frame.n else None

    def _decision_records(self, frame: PredictionFrame, d: FrameDecisions, partition: int, now_ms: int,
                          result: RouteResult, served: Served | None = None) -> None:
        step = self.max_decisions_per_record  # bounded record size
        conf = frame.confidence
        labels, served_codes = frame.labels, None
        if served is not None:  # the challenger's labels join the dictionary; label_codes keep their meaning
            labels = list(frame.labels)
            index = {lb: i for i, lb in enumerate(labels)}
            codes = []
            for lb in served.labels:
                if lb not in index:
                    index[lb] = len(labels)
                    labels.append(lb)
                codes.append(index[lb])
            served_codes = frame.label_codes.astype("<i4")  # a copy
            served_codes[served.mask] = np.asarray(codes, dtype="<i4")
        for a in range(0, frame.n, step):
            b = min(a + step, frame.n)
            batch_id = uuid.uuid4().hex
            rec = {
                "batch_id": batch_id, "model_name": frame.model_name, "model_version": frame.model_version,
                "policy_version": d.policy_version, "decided_at": now_ms, "event_ids": frame.event_ids[a:b],
                "tiers": d.tiers[a:b].astype(np.int8).tobytes(), "reasons": d.reasons,
                "reason_codes": d.reason_codes[a:b].astype("<i4").tobytes(),
                "sampling_propensity": d.propensity[a:b].astype("<f8").tobytes(),
                "audited": d.audited[a:b].astype(np.uint8).tobytes(),
                "confidence": np.ascontiguousarray(conf[a:b]).astype("<f8").tobytes(),
                "labels": labels, "label_codes": frame.label_codes[a:b].astype("<i4").tobytes(),
                "emitted_at": frame.emitted_at[a:b].astype("<i8").tobytes(),
            }
            if served is not None and served.mask[a:b].any():
                rec["served_by"] = ["producer", served.by]
                rec["served_by_codes"] = served.mask[a:b].astype(np.uint8).tobytes()
                rec["served_label_codes"] = served_codes[a:b].tobytes()
            else:  # set, not left to the schema's defaults: fastavro would write the bytes default as a str
                rec["served_by"], rec["served_by_codes"], rec["served_label_codes"] = [], b"", b""
            result.outputs.append(OutputRecord("decisions", batch_id.encode(), self.serde.encode(DECISION_BATCH, rec),
                                               partition))
            if self.decision_events:
                self._decision_rows(rec, result)

    def _decision_rows(self, batch: dict, result: RouteResult) -> None:
        ids = batch["event_ids"]
        homes = partitions_for(ids, self.partitions) if self.partitions else [None] * len(ids)
        for row, home in zip(expand_decision_batch(batch), homes):
            result.outputs.append(OutputRecord("decision_events", row["event_id"].encode(),
                                               self.serde.encode(DECISION, row),
                                               None if home is None else int(home)))

    def _task(self, frame: PredictionFrame, d: FrameDecisions, i: int, partition: int, now_ms: int,
              override_risk: float | None = None) -> OutputRecord:
        ev = frame.row(i)
        tier_code = int(d.tiers[i])
        tier = "escalate" if tier_code == 2 else "review"
        reason = d.reasons[int(d.reason_codes[i])]
        insights = {"confidence": ev["confidence"], "rule": reason, "override_risk": override_risk,
                    "drift_status": None, "online_prediction": None, "top_contributions": []}
        if self.insights is not None:
            insights.update(self.insights.insights(ev, tier, reason, override_risk))
        task = {
            "task_id": f"{ev['event_id']}:{tier}", "event_id": ev["event_id"], "model_name": ev["model_name"],
            "model_version": ev["model_version"], "tier": tier, "priority": int(d.priority[i]), "reason": reason,
            "policy_version": d.policy_version, "audit": bool(d.audited[i]),
            "sampling_propensity": float(d.propensity[i]), "created_at": now_ms,
            "due_by": int(d.due_by_ms[i]) or now_ms, "prediction": ev, "insights": insights,
        }
        role = "review_escalation" if tier == "escalate" else "review_analyst"
        return OutputRecord(role, ev["event_id"].encode(), self.serde.encode(REVIEW_TASK, task), partition)


def expand_decision_batch(obj: dict):
    """Yield ``RoutingDecision``-shaped dicts from a decoded ``DecisionBatch``."""
    tiers = np.frombuffer(obj["tiers"], dtype=np.int8).tolist()
    reasons = obj["reasons"]
    rc = np.frombuffer(obj["reason_codes"], dtype="<i4").tolist()
    prop = np.frombuffer(obj["sampling_propensity"], dtype="<f8").tolist()
    aud = np.frombuffer(obj["audited"], dtype=np.uint8).tolist()
    conf = np.frombuffer(obj["confidence"], dtype="<f8").tolist()
    labels = obj["labels"]
    lc = np.frombuffer(obj["label_codes"], dtype="<i4").tolist()
    em = np.frombuffer(obj["emitted_at"], dtype="<i8").tolist()
    by = obj.get("served_by") or ["producer"]  # absent (a v1 writer) or empty: the producer served everything
    byc = np.frombuffer(obj.get("served_by_codes") or b"", dtype=np.uint8).tolist() or [0] * len(obj["event_ids"])
    slc = np.frombuffer(obj.get("served_label_codes") or b"", dtype="<i4").tolist() or lc
    for i, event_id in enumerate(obj["event_ids"]):
        yield {
            "event_id": event_id, "model_name": obj["model_name"], "model_version": obj["model_version"],
            "tier": TIERS[tiers[i]], "reason": reasons[rc[i]], "policy_version": obj["policy_version"],
            "sampling_propensity": prop[i], "audited": bool(aud[i]), "confidence": conf[i],
            "predicted_label": labels[lc[i]], "emitted_at": em[i], "decided_at": obj["decided_at"],
            "served_label": labels[slc[i]] if slc[i] != lc[i] else None, "served_by": by[byc[i]],
        }


def iter_decisions(serde: AvroSerde, value: bytes):
    """Yield the ``RoutingDecision`` dicts held by one record of the decisions topic."""
    name, obj = serde.decode(value)
    if name == DECISION_BATCH:
        yield from expand_decision_batch(obj)
    elif name == DECISION:
        yield obj
    else:
        raise UnexpectedTypeError(f"{name} does not belong on the decisions topic")
