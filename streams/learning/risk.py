"""Route-worker side of learning: hot-swap the newest verified override-risk and online models.

``register_risk_scorer(worker, app)`` sets ``worker.risk_scorer`` (a
:class:`loopline.processors.learning.scorer.RiskScorer`: ``score_frame(frame)`` →
P(override) per row or None) and adds it to ``worker.insight_providers``
(override_risk, online_prediction, top_contributions). A background task tails
*every* partition of the model-updates topic with its own group-less consumer
(every route worker needs every snapshot). A snapshot failing its HMAC or
format check is refused, counted (``loopline_snapshots_refused_total``) and
dead-lettered with its original bytes; the previous model stays in use.
"""
from __future__ import annotations

import asyncio
import logging
import time

import faust

from loopline.processors.errors import DecodeError, ModelLimitError
from loopline.processors.learning.scorer import RiskScorer
from loopline.processors.routing.router import InputRecord, dead_letter
from loopline.streams.kafka_security import kafka_security
from loopline.streams.learning.kafka_io import UpdateTail
from loopline.streams.learning.runtime import warn_dev_key

log = logging.getLogger("loopline.risk")


def register_risk_scorer(worker, app: faust.App) -> None:
    s = worker.settings
    topic = s.topics.model_updates
    warn_dev_key(s)
    scorer = worker.risk_scorer = RiskScorer(s.snapshot_hmac_key.get_secret_value().encode(), max_models=s.learn_max_models)
    worker.insight_providers.append(scorer)
    # a challenger promoted on audited evidence serves auto-tier decisions (LOOPLINE_SERVING=auto; docs/loop.md)
    worker.router.server = scorer if s.serving == "auto" else None
    metrics = worker.learning_metrics
    assert metrics is not None  # built by the worker for every route agent

    def apply(messages) -> list:
        """Swap in what verifies; return dead letters for what does not."""
        dead = []
        now = time.time()
        for m in messages:
            if m.value() is None:  # a tombstone: on a compacted topic an ordinary delete, not a snapshot
                log.debug("tombstone at %s[%d]@%d (a delete)", m.topic(), m.partition(), m.offset())
                continue
            rec = InputRecord(m.value(), m.topic(), m.partition(), m.offset(), list(m.headers() or ()), m.key())
            try:
                _, up = worker.serde.decode(m.value())
                swapped = scorer.accept(up)
            except (DecodeError, ModelLimitError) as exc:  # SnapshotError is a DecodeError: HMAC mismatch, unknown format
                log.error("model snapshot refused at %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), exc)
                metrics.refused.labels(getattr(exc, "error_class", "decode")).inc()
                dead.append(dead_letter(rec, exc, worker=worker.worker_id))
                continue
            if swapped:
                metrics.updates.labels(worker.metrics.model_label(up["model_name"]), up["role"]).inc()
                newest = (up.get("metrics") or {}).get("newest_reviewed_at_ms")
                if up["role"] == "override_risk" and newest:
                    metrics.latency.labels(worker.metrics.model_label(up["model_name"]), "in_use").observe(max(now - newest / 1000.0, 0.0))
        return dead

    @app.task
    async def tail_model_updates() -> None:
        while True:  # a broken consumer is rebuilt (from the start: accept() ignores versions it holds)
            tail = None
            try:
                tail = await asyncio.to_thread(UpdateTail, s.kafka_bootstrap, topic, kafka_security(s).librdkafka())
                while True:
                    msgs = await asyncio.to_thread(tail.poll, 500, 0.05)
                    if not msgs:
                        continue
                    dead = apply(msgs)
                    if dead:
                        await worker.publish(dead)
                        worker.metrics.dead_letters.labels(topic, "snapshot").inc(len(dead))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model-updates tail failed; restarting in 1 s")
                await asyncio.sleep(1.0)
            finally:
                if tail is not None:
                    await asyncio.to_thread(tail.close)
