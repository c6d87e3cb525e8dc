"""The drift agent: merges every worker's ``DriftSummary`` per model and publishes the verdicts.

``loopline.drift-sketches`` is keyed by model, so in a consumer group one
worker owns a model and sees every worker's summaries of it. The agent hands
them to :class:`~loopline.processors.drift.coordinator.DriftCoordinator`, publishes the
resulting ``DriftEvent`` s on ``loopline.drift`` (key: model), retrain requests
on ``loopline.retrain-requests`` (policy ``retrain``), the reference layouts
as ``DriftReference`` records (so workers bin instead of shipping raw rows)
and sets the Prometheus metrics.

State that survives a restart: the table ``loopline-drift-state`` (changelog)
holds per model the reference profiles and the active alarms. A new owner
restores the references (workers keep binning with them) and resolves the
alarms it cannot continue (detector state is not persisted:
``window = "drift agent restarted: detector state reset"``); drift that
persists is detected again from the restored reference.

Bad records (undecodable, wrong type, a summary that does not parse) go to the
dead-letter topic with their original bytes.
"""
from __future__ import annotations

import hashlib
import logging
import time

import faust
from prometheus_client import Counter, Gauge

from loopline.processors.drift.coordinator import DriftCoordinator
from loopline.processors.drift.histogram import summary_from_bytes, summary_to_bytes
from loopline.processors.drift.reference import ReferenceProfile
from loopline.processors.errors import DecodeError, LooplineError, UnexpectedTypeError
from loopline.processors.routing.router import InputRecord, OutputRecord, dead_letter
from loopline.processors.wire.names import DRIFT_KIND_HEADER as KIND_HEADER
from loopline.processors.wire.names import DRIFT_REFERENCE, DRIFT_SUMMARY, RETRAIN_REQUEST
from loopline.processors.wire.serde import DRIFT_EVENT
from loopline.streams.acks import acked_on_success
from loopline.streams.feedback import StrKeys

log = logging.getLogger("loopline.drift")
RESTART_WINDOW = "drift agent restarted: detector state reset"


class DriftMetrics:
    """``loopline_drift_score`` / ``_active`` / ``_detections_total`` on the worker's registry."""

    def __init__(self, registry) -> None:
        self.score = Gauge("loopline_drift_score", "Latest drift score per model, signal and detector",
                           ["model", "signal", "detector"], registry=registry)
        self.active = Gauge("loopline_drift_active", "1 while drift is active on a signal of a model",
                            ["model", "signal"], registry=registry)
        self.detections = Counter("loopline_drift_detections_total", "Drift alarms started",
                                  ["model", "signal"], registry=registry)
        self._series: dict[str, set[tuple]] = {}  # model -> gauge label sets this worker exports

    def update(self, monitor, events: list[dict]) -> None:
        series = self._series.setdefault(monitor.model_name, set())
        for name, labels, value in monitor.metric_samples():
            if name == "loopline_drift_score":
                key = ("score", labels["model"], labels["signal"], labels["detector"])
                self.score.labels(*key[1:]).set(value)
            elif name == "loopline_drift_active":
                key = ("active", labels["model"], labels["signal"])
                self.active.labels(*key[1:]).set(value)
            else:
                continue
            series.add(key)
        for e in events:
            if e["state"] == "started":
                self.detections.labels(e["model_name"], e["signal"]).inc()

    def drop(self, model: str) -> None:
        """Stop exporting ``model``'s gauges (another worker owns it now: a stale 1 would keep alerts firing)."""
        for key in self._series.pop(model, set()):
            gauge = self.score if key[0] == "score" else self.active
            try:
                gauge.remove(*key[1:])
            except KeyError:
                pass


def retrain_request(action: dict, event: dict, now_ms: int) -> dict:
    ident = f"{action['model_name']}|{action['model_version']}|{action['signal']}|{action['detector']}|{action['at']}"
    return {"request_id": hashlib.blake2b(ident.encode(), digest_size=12).hexdigest(),
            "model_name": action["model_name"], "model_version": action["model_version"],
            "reason": action.get("reason", ""), "signal": action["signal"], "detector": action["detector"],
            "score": float(event["score"]), "threshold": float(event["threshold"]),
            "detected_at": int(action["at"]), "requested_at": now_ms}


class DriftAgent:
    """The agent's I/O around one :class:`DriftCoordinator` (see the module docstring)."""

    def __init__(self, worker, rt, table) -> None:
        s = worker.settings
        self.worker, self.rt, self.table = worker, rt, table
        self.coordinator = DriftCoordinator(rt.config, rt.policies, expected_partitions=s.partitions,
                                            idle_ms=int(s.drift_idle_seconds * 1000),
                                            baselines=rt.references,
                                            max_models=s.drift_max_models)
        self.metrics = DriftMetrics(worker.metrics.registry)
        self._republished: dict[str, float] = {}
        self._partition: dict[str, int] = {}

    def forget(self, revoked: set[int]) -> None:
        """Drop the in-memory state of models on revoked drift-sketches partitions.

        A later owner restores it from the table; if this worker gets the
        partition back, it restores too rather than continue from stale state.
        """
        for model, p in list(self._partition.items()):
            if p in revoked:
                self.coordinator.models.pop(model, None)
                del self._partition[model]
                self.metrics.drop(model)

    async def handle(self, events) -> None:
        serde, worker = self.worker.serde, self.worker
        now_ms = int(time.time() * 1000)
        outputs: list[OutputRecord] = []
        touched: dict[str, bool] = {}
        for e in events:
            m = e.message
            if dict(m.headers or ()).get(KIND_HEADER) == b"reference":
                continue  # our own layouts, for the workers
            rec = InputRecord(m.value, m.topic, m.partition, m.offset, list(m.headers or ()), m.key)
            try:
                name, obj = serde.decode(m.value)
                if name != DRIFT_SUMMARY:
                    raise UnexpectedTypeError(f"{name} does not belong on {m.topic}")
                try:
                    obj["summary"] = summary_from_bytes(obj["summary"])
                except LooplineError as exc:
                    raise DecodeError(str(exc)) from exc
                model = obj["model_name"]
                if model not in self.coordinator.models:
                    outputs += self._restore(model, now_ms)
                self._partition[model] = m.partition
                if self.coordinator.ingest(obj, now_ms):
                    held = self.coordinator.models[model].monitor.profiles()
                    touched[model] = touched.get(model, False) or self.coordinator.stale_layouts(obj["summary"], held)
            except DecodeError as exc:
                outputs.append(dead_letter(rec, exc, worker=worker.worker_id))
                worker.metrics.dead_letters.labels(m.topic, exc.error_class).inc()
            except Exception as exc:  # a bug or a broken summary must not lose the record
                log.exception("drift agent failed on %s[%d]@%d", m.topic, m.partition, m.offset)
                outputs.append(dead_letter(rec, exc, worker=worker.worker_id))
                worker.metrics.dead_letters.labels(m.topic, getattr(exc, "error_class", "internal")).inc()
        for model, stale in touched.items():
            if model in self.coordinator.models:  # (not evicted by max_models within this take)
                outputs += self._advance(model, stale, now_ms)
        if outputs:
            await worker.publish(outputs)

    def _advance(self, model: str, stale: bool, now_ms: int) -> list[OutputRecord]:
        serde, c = self.worker.serde, self.coordinator
        events, actions = c.advance(model, now_ms)
        out = [OutputRecord("drift", model.encode(), serde.encode(DRIFT_EVENT, e)) for e in events]
        by_key = {(e["model_version"], e["signal"], e["detector"], e["detected_at"]): e for e in events}
        for a in actions:
            if a["action"] == "retrain_request":
                ev = by_key[(a["model_version"], a["signal"], a["detector"], a["at"])]
                out.append(OutputRecord("retrain_requests", model.encode(),
                                        serde.encode(RETRAIN_REQUEST, retrain_request(a, ev, now_ms))))
            elif a["action"] in ("alert", "clear"):
                log.warning("drift %s on %s: %s (%s)", a["action"], model, a["signal"], a["detector"])
        force = stale and time.monotonic() - self._republished.get(model, 0.0) > 2.0
        profiles = c.references_to_publish(model, force=force)
        if profiles is not None:
            self._republished[model] = time.monotonic()
            out.append(self._reference_record(model, profiles, now_ms))
        if events or profiles is not None:
            self._save(model)
        self.metrics.update(c.models[model].monitor, events)
        return out

    def _reference_record(self, model: str, profiles: list[ReferenceProfile], now_ms: int) -> OutputRecord:
        value = self.worker.serde.encode(DRIFT_REFERENCE, {
            "model_name": model, "published_at": now_ms,
            "profiles": summary_to_bytes([p.to_json() for p in profiles]), "reason": "reference layouts"})
        return OutputRecord("drift_sketches", model.encode(), value, headers=[("loopline.drift.kind", b"reference")])

    def _save(self, model: str) -> None:
        mon = self.coordinator.models[model].monitor
        st = mon.status()
        active = []
        for signal, d in st["signals"].items():
            for det, v in d["detectors"].items():
                if v["active"]:
                    active.append([st["model_version"], signal, det, v["score"] or 0.0, v["threshold"]])
        self.table[model] = {"profiles": [p.to_json() for p in mon.profiles().values()], "active": active}

    def _restore(self, model: str, now_ms: int) -> list[OutputRecord]:
        state = self.table.get(model)
        profiles = [ReferenceProfile.from_json(p) for p in (state or {}).get("profiles", [])]
        self.coordinator.model(model, restored=profiles)
        out = []
        for version, signal, det, score, threshold in (state or {}).get("active", []):
            ev = {"model_name": model, "model_version": version, "signal": signal, "detector": det,
                  "score": float(score), "threshold": float(threshold), "window": RESTART_WINDOW,
                  "state": "resolved", "detected_at": now_ms}
            out.append(OutputRecord("drift", model.encode(), self.worker.serde.encode(DRIFT_EVENT, ev)))
        if profiles:
            out.append(self._reference_record(model, profiles, now_ms))
            self.coordinator.references_to_publish(model)
        if state and state.get("active"):
            self.table[model] = {**state, "active": []}
        return out


def register_drift_agent(worker, app: faust.App, rt) -> None:
    s = worker.settings
    table = app.Table("loopline-drift-state", default=None, key_type=bytes, value_type=None,
                      partitions=s.partitions, use_partitioner=True)
    agent_state = DriftAgent(worker, rt, StrKeys(table))
    worker.drift_agent = agent_state

    @app.agent(worker.t_out["drift_sketches"], name="loopline.drift")
    async def drift(stream):
        async for events in stream.take_events(200, within=0.2):
            with acked_on_success(events):  # an interrupted batch is not acknowledged (streams/acks.py)
                await agent_state.handle(events)

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs) -> None:  # noqa: ANN001
        topic = worker.settings.topics.drift_sketches
        agent_state.forget({tp.partition for tp in revoked if tp.topic == topic})
