"""Every route worker follows the drift verdicts and the reference layouts.

The drift agent that owns a model may run in another worker (or another
process group), so each route worker reads, outside its consumer group
(every partition, no offsets committed):

* ``loopline.drift`` **from the beginning**: each ``DriftEvent`` is folded into
  the worker's :class:`~loopline.processors.drift.board.DriftBoard` — the status string
  on review tasks — and the model's drift policy says what to do. Routing
  actions are carried out here, on this worker's own policy holder:
  ``tighten_routing`` → ``set_overlay("drift", model, min_confidence_delta=…,
  audit_rate_delta=…)``, ``revert_routing`` → ``clear_overlay("drift", model)``,
  each change logged with ``worker.log_policy_change``. While catching up on
  history, events only update the board; once caught up, the overlay is set
  for models still drifting (a restarted worker does not replay old changes);
* ``loopline.drift-sketches`` **from the end**, only records with header
  ``loopline.drift.kind = reference`` (summaries are skipped undecoded): the
  bin layouts the worker's collector uses from then on.

Undecodable records are logged and counted in
``loopline_processing_errors_total{stage="drift_reader"}`` and skipped: these
topics are written by Loopline itself, and the agent dead-letters what it
reads; the reader must not stop a worker.
"""
from __future__ import annotations

import asyncio
import logging

import faust

from loopline.processors.drift.histogram import summary_from_bytes
from loopline.processors.drift.reference import ReferenceProfile
from loopline.processors.wire.names import DRIFT_KIND_HEADER as KIND_HEADER
from loopline.processors.wire.names import DRIFT_REFERENCE
from loopline.processors.wire.serde import DRIFT_EVENT

log = logging.getLogger("loopline.drift")


class RoutingActions:
    """Carries out drift-policy routing actions on the worker's policy holder."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self._warned = False

    async def run(self, actions: list[dict], event: dict | None = None) -> None:
        holder = self.worker.policy
        for a in actions:
            if a["action"] not in ("tighten_routing", "revert_routing"):
                continue
            if not hasattr(holder, "set_overlay"):
                if not self._warned:
                    log.warning("drift policy tighten_routing needs a tiered policy (LOOPLINE_POLICY_FILE); "
                                "routing left unchanged")
                    self._warned = True
                continue
            evidence = {"detected_at": float(a["at"])}
            if event is not None:
                evidence.update(score=float(event["score"]), threshold=float(event["threshold"]))
            if a["action"] == "tighten_routing":
                change = holder.set_overlay("drift", a["model_name"], min_confidence_delta=a["auto_threshold_delta"],
                                            audit_rate_delta=a["audit_rate_delta"], evidence=evidence)
            else:
                change = holder.clear_overlay("drift", a["model_name"], evidence=evidence)
            if change is None:
                continue
            log.warning("drift policy %s for %s: policy %s -> %s", a["action"], a["model_name"],
                        change.old_version, change.new_version)
            await self.worker.log_policy_change(change)


class DriftReader:
    """The reader loop (see the module docstring)."""

    def __init__(self, worker, rt) -> None:
        self.worker, self.rt = worker, rt
        self.actions = RoutingActions(worker)
        self.caught_up = False
        self.events_read = 0
        self.references_read = 0
        self._positions: dict = {}

    async def run(self) -> None:
        """Follow the topics until cancelled; a failure restarts the consumer where it stopped."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("drift reader failed; restarting in 2 s")
                self.worker.metrics.processing_errors.labels("drift_reader").inc()
                await asyncio.sleep(2.0)

    async def _run_once(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        s = self.worker.settings
        names = s.topics
        consumer = AIOKafkaConsumer(**reader_kwargs(s))
        await consumer.start()
        try:
            tps = {}
            for topic in (names.drift, names.drift_sketches):
                parts = None
                for _ in range(100):
                    await consumer.topics()
                    parts = consumer.partitions_for_topic(topic)
                    if parts:
                        break
                    await asyncio.sleep(0.2)
                tps[topic] = [TopicPartition(topic, p) for p in sorted(parts or ())]
            consumer.assign(tps[names.drift] + tps[names.drift_sketches])
            for tp in tps[names.drift]:
                if tp in self._positions:
                    consumer.seek(tp, self._positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            if tps[names.drift_sketches]:
                await consumer.seek_to_end(*tps[names.drift_sketches])
            pending = {}
            if not self.caught_up and tps[names.drift]:
                ends = await consumer.end_offsets(tps[names.drift])
                pending = {tp: off for tp, off in ends.items() if off > 0}
                if not pending:
                    await self._caught_up()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, msgs in batches.items():
                    for msg in msgs:
                        await self._record(tp.topic == names.drift, msg)
                        if tp.topic == names.drift:
                            self._positions[tp] = msg.offset + 1
                if not self.caught_up:
                    for tp in list(pending):
                        if await consumer.position(tp) >= pending[tp]:
                            del pending[tp]
                    if not pending:
                        await self._caught_up()
        finally:
            await consumer.stop()

    async def _record(self, is_drift: bool, msg) -> None:
        try:
            if is_drift:
                name, ev = self.worker.serde.decode(msg.value)
                if name != DRIFT_EVENT:
                    raise ValueError(f"{name} on the drift topic")
                self.events_read += 1
                actions = self.rt.board.apply(ev)
                if self.caught_up:
                    await self.actions.run(actions, ev)
            elif dict(msg.headers or ()).get(KIND_HEADER) == b"reference":
                name, ref = self.worker.serde.decode(msg.value)
                if name != DRIFT_REFERENCE:
                    raise ValueError(f"{name} marked as a drift reference")
                profiles = [ReferenceProfile.from_json(p) for p in summary_from_bytes(ref["profiles"])]
                self.rt.collector.set_references(ref["model_name"], profiles)
                self.references_read += 1
        except Exception:
            log.exception("drift reader skipped %s[%d]@%d", msg.topic, msg.partition, msg.offset)
            self.worker.metrics.processing_errors.labels("drift_reader").inc()

    async def _caught_up(self) -> None:
        self.caught_up = True
        for model in self.rt.board.models():
            policy = self.rt.board.policy(model)
            if policy.mode == "tighten_routing" and policy.active:
                action = {"action": "tighten_routing", "model_name": model, "at": 0, **policy.adjustments()}
                await self.actions.run([action])


def register_drift_reader(worker, app: faust.App, rt) -> None:
    reader = worker.drift_reader = DriftReader(worker, rt)

    @app.task
    async def drift_reader() -> None:
        await reader.run()


def reader_kwargs(settings) -> dict:
    """The drift reader's aiokafka consumer arguments, with the Kafka security settings (no group)."""
    from loopline.streams.kafka_security import kafka_security

    return {"bootstrap_servers": settings.kafka_bootstrap, "group_id": None, "enable_auto_commit": False,
            "fetch_max_wait_ms": 500, "auto_offset_reset": "earliest", **kafka_security(settings).aiokafka()}
