"""Drift in the running pipeline: ``register_drift(worker, app)`` (``LOOPLINE_AGENTS`` contains ``drift``).

Three parts, each a thin loop around pure logic in ``processors/drift``:

* **worker side** (workers that also run ``route``): a route hook counts every
  routed frame into this worker's per-model sketches
  (:class:`~loopline.processors.drift.collector.DriftCollector`, whole columns per
  frame), an example hook counts joined corrections as the error stream, and a
  timer publishes one ``DriftSummary`` per model every
  ``drift_publish_interval_seconds`` to ``loopline.drift-sketches`` (key: model);
* **drift agent** (:mod:`loopline.streams.drift.agent`): consumes drift-sketches in the
  worker group — one owner per model key — merges, evaluates, publishes
  ``DriftEvent`` s, retrain requests, metrics. ``LOOPLINE_DRIFT_AGENT=false``
  leaves it out of route workers (they only collect); then run it in workers
  of their own group (``LOOPLINE_AGENTS=drift``, another ``LOOPLINE_APP_ID``);
* **reader** (:mod:`loopline.streams.drift.reader`): every route worker follows
  ``loopline.drift`` (status for review tasks, ``tighten_routing`` on its own
  policy holder) and the agents' ``DriftReference`` messages (bin layouts).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import faust

from loopline.processors.drift.board import DriftBoard
from loopline.processors.drift.collector import DriftCollector
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.histogram import summary_to_bytes
from loopline.processors.drift.policy import DriftPolicyBook
from loopline.processors.drift.reference import ReferenceProfile
from loopline.processors.errors import ConfigError
from loopline.processors.routing.router import OutputRecord
from loopline.processors.wire.names import DRIFT_KIND_HEADER as KIND_HEADER
from loopline.processors.wire.names import DRIFT_REFERENCE, DRIFT_SUMMARY, RETRAIN_REQUEST  # noqa: F401

log = logging.getLogger("loopline.drift")


def drift_config(settings) -> DriftConfig:
    return DriftConfig(bucket_ms=settings.drift_bucket_ms, bucket_events=settings.drift_bucket_events,
                       reference_events=settings.drift_reference_events,
                       reference_outcomes=settings.drift_reference_outcomes,
                       budget_events=settings.drift_budget_events,
                       budget_per=settings.drift_budget_per)


def load_references(path: str | None) -> list[ReferenceProfile]:
    """Pinned profiles from a file written by ``loopline drift baseline`` (one profile or a JSON list)."""
    if not path:
        return []
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        items = data if isinstance(data, list) else [data]
        return [ReferenceProfile.from_json(d) for d in items]
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise ConfigError(f"drift reference file {path}: {exc}") from exc


def check_drift_settings(settings) -> None:
    """Validate every drift setting (config, policy JSON, reference file); raise ConfigError with a sentence.

    ``loopline worker`` calls it before starting, so a bad value is one sentence, not a traceback.
    """
    if "drift" not in settings.agent_set:
        return
    drift_config(settings)
    DriftPolicyBook.from_json(settings.drift_policy)
    load_references(settings.drift_reference_file)
    # interval, idle time and model cap are bounded (> 0) by Settings itself


class DriftInsights:
    """Review-task insight: the drift status of the task's model."""

    def __init__(self, board: DriftBoard) -> None:
        self.board = board

    def insights(self, event: dict, tier: str, reason: str, override_risk: float | None = None) -> dict:
        return {"drift_status": self.board.status(event["model_name"])}


class DriftRuntime:
    """What one worker holds for drift (collector, board, agent state) and the summary publisher."""

    def __init__(self, worker, config: DriftConfig, policies: DriftPolicyBook,
                 references: list[ReferenceProfile]) -> None:
        self.worker = worker
        self.config = config
        self.policies = policies
        self.references = references
        self.collector = DriftCollector(config, max_models=worker.settings.drift_max_models)
        for model in {p.model_name for p in references}:
            self.collector.set_references(model, [p for p in references if p.model_name == model])
        self.board = DriftBoard(policies)
        self._seq = int(time.time() * 1000) * 1000  # increasing across restarts of the same worker id

    def on_route(self, result) -> None:
        for r in result.routed:
            self.collector.add_frame(r.frame, r.partition)

    def on_examples(self, examples: list[dict]) -> None:
        self.collector.add_examples(examples)

    def summary_records(self) -> list[OutputRecord]:
        serde, now = self.worker.serde, int(time.time() * 1000)
        out = []
        for msg in self.collector.flush():
            self._seq += 1
            value = serde.encode(DRIFT_SUMMARY, {
                "model_name": msg["model_name"], "worker_id": self.worker.worker_id, "seq": self._seq,
                "sent_at": now, "partition_watermarks": msg["partition_watermarks"],
                "summary": summary_to_bytes(msg["summary"])})
            out.append(OutputRecord("drift_sketches", msg["model_name"].encode(), value,
                                    headers=[(KIND_HEADER, b"summary")]))
        return out


class PolicyFileDriftBook(DriftPolicyBook):
    """Drift policies from the routing policy file (``[models.<name>.drift]``), else ``LOOPLINE_DRIFT_POLICY``.

    Read when a model first drifts (its episode state lives in the board from then on).
    """

    def __init__(self, holder, fallback: DriftPolicyBook) -> None:
        super().__init__()
        self.holder = holder
        self.fallback = fallback

    def policy_for(self, model: str):
        opts = getattr(self.holder.policy.model(model), "drift", None)
        if opts is not None:
            return DriftPolicyBook({model: dict(opts)}).policy_for(model)
        return self.fallback.policy_for(model)


def register_drift(worker, app: faust.App) -> None:
    """Declare the drift topics, hooks, publisher, agent and reader on ``app`` for ``worker``."""
    from loopline.streams.drift.agent import register_drift_agent
    from loopline.streams.drift.reader import register_drift_reader

    s = worker.settings
    names = s.topics
    book = PolicyFileDriftBook(worker.policy, DriftPolicyBook.from_json(s.drift_policy))
    rt = worker.drift = DriftRuntime(worker, drift_config(s), book,
                                     load_references(s.drift_reference_file))
    kw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=s.partitions)
    worker.t_out["drift_sketches"] = app.topic(names.drift_sketches, **kw)
    worker.t_out["drift"] = app.topic(names.drift, **kw)
    worker.t_out["retrain_requests"] = app.topic(names.retrain_requests, **kw)
    if "dead_letter" not in worker.t_out:
        worker.t_out["dead_letter"] = app.topic(names.dead_letter, **kw)
    if s.drift_agent or "route" not in s.agent_set:
        register_drift_agent(worker, app, rt)
    if "route" not in s.agent_set:
        return
    worker.route_hooks.append(rt.on_route)
    worker.example_hooks.append(rt.on_examples)
    worker.insight_providers.append(DriftInsights(rt.board))
    register_drift_reader(worker, app, rt)

    @app.timer(interval=s.drift_publish_interval_seconds)
    async def publish_drift_summaries() -> None:
        records = rt.summary_records()
        if records:
            await worker.publish(records)
