"""The "learn" agent: TrainingExamples in, HMAC-signed ModelUpdate snapshots out.

``register_learner(worker, app)`` (LOOPLINE_AGENTS=learn) declares:

* a start-up task that restores each model from its newest ``learner``
  snapshot on the model-updates topic and re-reads the training records after
  it (offsets at or below a model's last learned offset are skipped, so the
  agent's own re-delivery of them is harmless), then opens the gate for the agent;
* the agent on the training topic: batches via ``take_events``, learns per
  model, dead-letters undecodable records, publishes snapshots when due;
* a timer that publishes due snapshots when traffic stops;
* metrics (:class:`~loopline.streams.learning.metrics.LearningMetrics`) and a ``/learning`` JSON page
  (:func:`learning_stats`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from loopline.processors.routing.router import InputRecord
from loopline.streams.acks import acked_on_success, withhold_unacked
from loopline.streams.kafka_security import kafka_security
from loopline.streams.learning.kafka_io import read_to_end
from loopline.streams.learning.runtime import LearnerRuntime
from loopline.streams.publish import PublishAbandoned

log = logging.getLogger("loopline.learner")


def learning_stats(worker) -> dict:
    """JSON-ready learning state of this worker (for GET /stats): learner and/or risk scorer."""
    out: dict = {}
    rt = worker.learning
    if rt is not None:
        out["learner"] = rt.stats()
    scorer = worker.risk_scorer
    if scorer is not None:
        out["risk_scorer"] = {f"{m}/{r}": s.version for (m, r), s in sorted(scorer.slots.items())}
    return out


def register_learner(worker, app: faust.App) -> None:
    s = worker.settings
    names = s.topics
    rt = worker.learning = LearnerRuntime(s, worker.serde, worker.worker_id, policy=worker.policy)
    metrics = worker.learning_metrics
    assert metrics is not None  # built by the worker for every learn or route agent
    label = worker.metrics.model_label  # model names come from producers: capped, the rest as __other__
    kw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=s.partitions)
    source = app.topic(names.training, **kw)
    worker.t_out["model_updates"] = app.topic(names.model_updates, **kw)
    ready = asyncio.Event()
    lock = asyncio.Lock()

    async def publish_due(force: bool = False) -> None:
        async with lock:
            if rt.due() or (force and rt.pending):
                snaps = rt.snapshots()
            elif force and rt.state_due():  # learning paused: leave a fresh resume point
                snaps = rt.snapshots(with_state=True, models_only=False)
            else:
                return
            await worker.publish([rec for rec, _ in snaps])
            for _, up in snaps:
                metrics.updates.labels(label(up["model_name"]), up["role"]).inc()
            for model, lr in rt.learners.items():
                metrics.features_dropped.labels(label(model)).set(lr.features_dropped())
                for role in ("champion", "challenger"):
                    f1 = lr.online_f1(role)
                    if f1 is not None:
                        metrics.f1.labels(label(model), role).set(f1)

    def account(counts, latencies) -> None:
        now = time.time()
        for model, c in counts.items():
            for outcome, n in c.items():
                metrics.examples.labels(label(model), outcome).inc(n)
        for model, stamps in latencies.items():
            h = metrics.latency.labels(label(model), "learned")
            for ts in stamps:
                h.observe(max(now - ts / 1000.0, 0.0))

    async def handle(records: list[InputRecord]) -> None:
        counts, latencies, dead = rt.learn_records(records)
        if dead:
            await worker.publish(dead)
            for d in dead:
                cls = dict(d.headers).get("loopline.error.class", b"decode").decode()
                worker.metrics.dead_letters.labels(names.training, cls).inc()
        account(counts, latencies)
        await publish_due()

    @app.task
    async def restore() -> None:
        try:
            security = kafka_security(s).librdkafka()
            updates = await asyncio.to_thread(read_to_end, s.kafka_bootstrap, names.model_updates,
                                              security=security)
            rt.restore(updates)
            parts = range(s.partitions)
            starts = rt.catch_up_starts(parts)
            msgs = await asyncio.to_thread(read_to_end, s.kafka_bootstrap, names.training, starts, security=security)
            recs = [InputRecord(m.value(), m.topic(), m.partition(), m.offset(), list(m.headers() or ()), m.key())
                    for m in msgs]
            for i in range(0, len(recs), 2000):
                await handle(recs[i:i + 2000])
            await publish_due(force=True)
            log.info("learner restored %d models, caught up %d records", len(rt.learners), len(recs))
        except Exception:
            log.exception("learner restore failed; learning from the agent's offsets only")
        finally:
            rt.restored = True
            ready.set()

    @app.agent(source, name="loopline.learn")
    async def learn(stream):
        async for events in stream.take_events(500, within=0.05):
            await ready.wait()
            recs = [InputRecord(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                                list(e.message.headers or ()), e.message.key) for e in events]
            try:
                with acked_on_success(events):  # stopping mid-publish leaves the batch unacknowledged
                    await handle(recs)
            except PublishAbandoned:  # stopping: what is buffered stays uncommitted too, so the stop is prompt
                withhold_unacked(app.consumer, set(source.topics))
                return
            except Exception:  # a bug must not stop learning; the records stay on the topic for a rebuild
                log.exception("learning failed for a batch of %d records", len(recs))
                worker.metrics.processing_errors.labels("learn").inc()

    @app.timer(interval=float(getattr(s, "learn_publish_interval_seconds", 0.5)))
    async def publish_timer() -> None:
        if ready.is_set():
            await publish_due(force=True)

