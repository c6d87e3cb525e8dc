"""The Faust layer: app factory, topic declarations, the route agent, web views.

Agents are thin loops: they turn Faust events into :class:`InputRecord` s, call
the pure :class:`~loopline.processors.routing.router.Router`, publish what it returns and update
metrics once per batch. An agent batch holds up to ``take_max`` Kafka records,
and each record may be a ``PredictionBatch`` of hundreds of predictions, so
Faust's per-record cost is paid per batch of predictions.

Delivery: outputs of a batch are sent with ``force=True`` and awaited before the
batch is acknowledged (``take_events`` acks after the loop body), so offsets are
committed only for records whose outputs are on the broker — at-least-once.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.routing.router import InputRecord, Router, dead_letter
from loopline.streams.acks import acked_on_success, withhold_unacked
from loopline.streams.confluent import build_serde
from loopline.streams.control import worker_control_middleware
from loopline.streams.conventions import apply_conventions
from loopline.streams.kafka_security import kafka_security
from loopline.streams.lag import register_lag_metrics
from loopline.streams.learning.metrics import LearningMetrics
from loopline.streams.metrics import WorkerMetrics
from loopline.streams.publish import PublishAbandoned, Publisher
from loopline.streams.settings import Settings
from loopline.streams.stall_guard import register_stall_guard

if TYPE_CHECKING:
    from loopline.processors.feedback.join import FeedbackJoin
    from loopline.processors.learning.scorer import RiskScorer
    from loopline.streams.drift.agent import DriftAgent
    from loopline.streams.drift.extension import DriftRuntime
    from loopline.streams.drift.reader import DriftReader
    from loopline.streams.learning.runtime import LearnerRuntime
    from loopline.streams.policy import PolicyRuntime
    from loopline.streams.quality import CalibrationRuntime
    from loopline.streams.stats import WorkerStats

log = logging.getLogger("loopline.worker")



def _extensions() -> dict[str, Callable[[LooplineWorker, faust.App], object]]:
    """Agents beyond "route": name in ``LOOPLINE_AGENTS`` -> the function that declares them on the app."""
    from loopline.streams.drift.extension import register_drift
    from loopline.streams.feedback import register_feedback
    from loopline.streams.learning.agent import register_learner

    return {"feedback": register_feedback, "drift": register_drift, "learn": register_learner}


class CompositeInsights:
    """Merges the insights of every provider (later providers win on the same key); a failing one is skipped."""

    def __init__(self, providers: list) -> None:
        self.providers = providers

    def insights(self, event: dict, tier: str, reason: str, override_risk: float | None = None) -> dict:
        out: dict = {}
        for p in self.providers:
            try:
                out.update(p.insights(event, tier, reason, override_risk))
            except Exception:
                log.exception("insights provider %r failed", p)
        return out


def apply_fetch_max_wait(wait_ms: int) -> None:
    """Make Faust's consumer use ``fetch_max_wait_ms=wait_ms`` instead of its hard-coded 1500 ms.

    The embedded broker (Tansu) answers a fetch only when its max-wait expires,
    even if records arrive sooner, so 1500 ms would add ~0.4-1.5 s to every
    decision. Faust exposes no setting for it; this wraps the factory of its
    aiokafka consumer (process-wide: one worker app per process) and sets the
    value aiokafka reads when it builds its fetcher at start.
    """
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    original = getattr(cls, "_loopline_original_create", None) or cls._create_worker_consumer

    def create(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    cls._loopline_original_create = original
    cls._create_worker_consumer = create


def threshold_policy_toml(settings: Settings) -> str:
    """The policy file equivalent to the two confidence thresholds of the settings (no file configured)."""
    sla_minutes = settings.review_sla_seconds / 60.0
    return (f'version = "threshold-v1"\n'
            f'description = "LOOPLINE_AUTO_CONFIDENCE_THRESHOLD / LOOPLINE_ESCALATE_CONFIDENCE_THRESHOLD"\n'
            f"[defaults.tiers.auto]\nmin_confidence = {settings.auto_confidence_threshold!r}\n"
            f"[defaults.tiers.review]\nsla_minutes = {sla_minutes!r}\n"
            f"[defaults.tiers.escalate]\nsla_minutes = {sla_minutes!r}\n"
            f"below_confidence = {settings.escalate_confidence_threshold!r}\n")


def build_policy(settings: Settings) -> PolicyHolder:
    """The tiered policy from ``LOOPLINE_POLICY_FILE``, else one made of the two confidence thresholds.

    Either way a :class:`PolicyHolder`, so it can be replaced and overlaid while
    running. An invalid policy file raises ``ConfigError`` naming the bad field.
    """
    if settings.policy_file:
        return PolicyHolder.from_file(settings.policy_file)
    return PolicyHolder(Policy.from_toml(threshold_policy_toml(settings), source="<settings>"))


class LooplineWorker:
    """Everything one worker process holds: app, topics, router, metrics, readiness.

    Every capability that plugs in is a typed attribute declared here (``None``
    when this worker does not run it), so extensions read each other through
    declared names, never through ``getattr``. (Named ``LooplineWorker`` so it is
    not mistaken for Faust's own ``Worker``, which runs it.)
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.kafka_bootstrap:
            raise ValueError("the worker needs LOOPLINE_KAFKA_BOOTSTRAP (or run `loopline up`)")
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.serde = build_serde(settings)
        self.metrics = WorkerMetrics()
        self.policy = build_policy(settings)
        # Extension points (drift, learning, calibration plug in here; see EXTENSIONS):
        # route_hooks: called with each RouteResult after its outputs are on the broker.
        # example_hooks: called with each list of joined TrainingExample dicts the feedback agent publishes.
        # insight_providers: objects with insights(event, tier, reason) -> dict merged into ReviewTask.insights.
        self.route_hooks: list[Callable[[Any], None]] = []
        self.example_hooks: list[Callable[[list[dict]], None]] = []
        self.insight_providers: list[Any] = []
        # stats_providers: section name -> callable returning a JSON-able dict, merged into GET /stats.
        self.stats_providers: dict[str, Callable[[], dict]] = {}
        # capabilities, set by their register_* function when this worker runs them
        self.stats: WorkerStats | None = None
        self.policy_runtime: PolicyRuntime | None = None
        self.join: FeedbackJoin | None = None
        self.drift: DriftRuntime | None = None
        self.drift_reader: DriftReader | None = None
        self.drift_agent: DriftAgent | None = None
        self.learning: LearnerRuntime | None = None
        self.learning_metrics: LearningMetrics | None = None
        self.calibration: CalibrationRuntime | None = None
        self.router = Router(self.serde, self.policy, int(settings.max_clock_skew_seconds * 1000),
                             insights=CompositeInsights(self.insight_providers), worker=self.worker_id,
                             partitions=settings.partitions, decision_events=settings.decision_events)
        self.ready = False
        self.publisher = Publisher(self._send, lambda: self.app.should_stop,
                                   max_dead_letter_bytes=settings.dead_letter_max_bytes,
                                   stall_seconds=settings.publish_stall_seconds, worker=self.worker_id,
                                   on_retry=self.metrics.publish_retries.inc, on_dead_letter=self._dead_lettered)
        self.metrics.publish_stalled.set_function(self.publisher.waiting_seconds)
        self.app = self._build_app()
        apply_conventions(self.metrics.registry, settings.expected_workers)

    def _build_app(self) -> faust.App:
        s = self.settings
        apply_fetch_max_wait(s.fetch_max_wait_ms)
        from loopline.streams.recovery_guard import apply_watermark_guard

        apply_watermark_guard(lambda *clamp: self.metrics.watermark_clamps.inc())
        from loopline.streams.offset_guard import apply_offset_guard

        apply_offset_guard(frozenset(s.topics.compacted()).__contains__)
        app = faust.App(
            s.app_id,
            broker=f"kafka://{s.kafka_bootstrap}",
            value_serializer="raw",
            key_serializer="raw",
            store="memory://",
            datadir=str(s.data_dir),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            topic_disable_leader=True,
            broker_session_timeout=s.session_timeout_seconds,
            broker_heartbeat_interval=max(s.session_timeout_seconds / 3, 0.5),
            consumer_group_instance_id=s.group_instance_id,
            broker_max_poll_records=5000,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_linger_ms=5,
            producer_max_batch_size=1_048_576,
            producer_request_timeout=s.publish_request_timeout_seconds,
            stream_buffer_maxsize=16384,
            web_enabled=True,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_port=s.web_port,
            web_in_thread=False,
            web_application_options={"middlewares": [worker_control_middleware(self)]},  # docs/security.md
            broker_credentials=kafka_security(s).faust_credentials(),  # SASL / TLS, docs/security.md
        )
        names = s.topics
        kw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                  partitions=s.partitions)
        self.t_predictions = app.topic(names.predictions, **kw)
        self.t_out = {
            "policy_events": app.topic(names.policy_events, **kw),
            "decisions": app.topic(names.decisions, **kw),
            "review_analyst": app.topic(names.review_analyst, **kw),
            "review_escalation": app.topic(names.review_escalation, **kw),
            "dead_letter": app.topic(names.dead_letter, **kw),
        }
        if s.decision_events:
            self.t_out["decision_events"] = app.topic(names.decision_events, **kw)
        from loopline.streams.policy import PolicyRuntime
        from loopline.streams.stats import TierCollector, WorkerStats

        self.policy_runtime = PolicyRuntime(self, app)
        agents = s.agent_set
        if agents & {"route", "feedback"}:
            self.stats = WorkerStats(self, app, s.stats_flush_seconds)
            self.route_hooks.append(self.stats.on_routed)
            self.example_hooks.append(self.stats.on_examples)
            self.metrics.registry.register(TierCollector(lambda: self.stats, self.metrics.model_label))
        if "route" in agents:
            self._register_agents(app)
        if agents & {"route", "learn"}:
            self.learning_metrics = LearningMetrics.create(self.metrics.registry)
        for name, register in _extensions().items():
            if name in agents:
                register(self, app)
        if "route" in agents:  # the override-risk model from the learning loop, hot-swapped
            from loopline.streams.learning.risk import register_risk_scorer

            register_risk_scorer(self, app)
        if "learn" in agents:
            from loopline.streams.learning.agent import learning_stats

            self.stats_providers["learning"] = lambda: learning_stats(self)
        if "feedback" in agents:  # calibration, slices and the autopilot learn from the joined corrections
            from loopline.streams.quality import register_calibration

            register_calibration(self, app)
            if self.settings.autonomy_error_budget > 0:  # autonomy follows the audited error (issue #17)
                from loopline.streams.autonomy import register_autonomy

                register_autonomy(self, app)
        register_lag_metrics(self, app)
        register_stall_guard(self, app)
        self._register_views(app)

        @app.on_rebalance_complete.connect
        async def _ready(sender, **kwargs) -> None:  # noqa: ANN001
            self.ready = True

        return app

    @property
    def risk_scorer(self) -> RiskScorer | None:
        """The override-risk model the router consults (None until the learning loop publishes one)."""
        return self.router.risk_scorer

    @risk_scorer.setter
    def risk_scorer(self, scorer: RiskScorer | None) -> None:
        self.router.risk_scorer = scorer  # one reference assignment: hot swap between batches

    async def log_policy_change(self, change: Any) -> None:
        """Publish a policy change (overlay set/cleared, replacement) as a PolicyEvent."""
        assert self.policy_runtime is not None  # built with the app
        await self.policy_runtime.log_change(change)

    def stats_report(self, state: bool = False) -> dict:
        """``GET /stats``: this worker's per-tier statistics plus every extension's section."""
        merged = self.stats.merged() if self.stats is not None else None
        if state:
            return {"worker": self.worker_id, "tier_stats_state": merged.to_state() if merged else None}
        out = {"worker": self.worker_id, "scope": "worker", "policy_version": self.policy.version,
               "partitions": sorted(self.stats.parts) if self.stats is not None else [],
               "tiers": merged.snapshot() if merged is not None else None}
        for name, provider in self.stats_providers.items():
            try:
                out[name] = provider()
            except Exception as exc:
                log.exception("stats provider %s failed", name)
                out[name] = {"error": str(exc)}
        return out

    # ----------------------------------------------------------------- agents
    def _register_agents(self, app: faust.App) -> None:
        s = self.settings

        @app.agent(self.t_predictions, name="loopline.route")
        async def route(stream):
            async for events in stream.take_events(s.take_max, within=s.take_within):
                try:
                    with acked_on_success(events):  # an interrupted batch is not acknowledged (streams/acks.py)
                        await self.handle_predictions(events)
                except PublishAbandoned:
                    buffered = withhold_unacked(app.consumer, {s.topics.predictions})
                    log.warning("stopping with %d records unpublished and %d not processed; they stay uncommitted",
                                len(events), buffered)
                    return

    async def handle_predictions(self, events) -> None:
        """Route one take of Kafka records in chunks of at most ``chunk_bytes`` input bytes.

        Chunking bounds memory: a take of 256 ``PredictionBatch`` records could hold
        over 100,000 predictions.
        """
        chunk: list[InputRecord] = []
        size = 0
        limit = self.settings.chunk_bytes
        for e in events:
            m = e.message
            chunk.append(InputRecord(m.value, m.topic, m.partition, m.offset, list(m.headers or ()), m.key))
            size += len(m.value or b"")
            if size >= limit:
                await self.route_chunk(chunk)
                chunk, size = [], 0
        if chunk:
            await self.route_chunk(chunk)

    async def route_chunk(self, records: list[InputRecord]) -> None:
        """Route, publish, then count: records counted before (replayed after a crash or a
        rebalance) are routed and published again but not given to the route hooks."""
        if self.stats is None:
            await self._route(records, hooks=True)
            return
        replayed, fresh = self.stats.split(records)
        if replayed:
            await self._route(replayed, hooks=False)
        if fresh:
            await self._route(fresh, hooks=True)
            self.stats.counted(fresh)

    async def _route(self, records: list[InputRecord], hooks: bool) -> None:
        started = time.perf_counter()
        try:
            result = self.router.route(records)
        except Exception as exc:  # a bug must not lose the batch: dead-letter every record of it
            log.exception("route failed for a batch of %d records", len(records))
            self.metrics.processing_errors.labels("route").inc()
            outs = [dead_letter(r, exc, worker=self.worker_id) for r in records]
            await self.publish(outs, records)
            self.metrics.dead_letters.labels(self.settings.topics.predictions, "internal").inc(len(outs))
            return
        await self.publish(result.outputs, records)
        for hook in self.route_hooks if hooks else ():
            try:
                hook(result)
            except Exception:  # an extension's bug must not stop routing
                log.exception("route hook %r failed", hook)
                self.metrics.processing_errors.labels("route_hook").inc()
        self.metrics.record_route(self.settings.topics.predictions, len(records), result)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.last_batch_ts.set(time.time())

    async def publish(self, outputs, source=()) -> None:
        """Send every output and wait until the broker has acknowledged each one.

        See :mod:`loopline.streams.publish`: per-output futures (a retry never
        re-sends an acknowledged output), unpublishable outputs become bounded
        dead letters, transient errors are retried (``/readyz`` turns red after
        ``publish_stall_seconds``). If the worker stops meanwhile, every message
        still in flight is left uncommitted (read again by the next owner) and
        :class:`~loopline.streams.publish.PublishAbandoned` is raised.
        """
        # On PublishAbandoned the agents' acked_on_success withholds the acks of the interrupted
        # batch only. (Marking every in-flight message of the consumer instead left gaps that a
        # still-running agent's later acks let Faust fill and commit: 150 predictions lost in the
        # rolling-SIGTERM fault test.)
        await self.publisher.publish(outputs, source)

    async def _send(self, o):
        return await self.t_out[o.role].send(key=o.key, value=o.value, partition=o.partition,
                                             headers=o.headers or None, force=True)

    def _dead_lettered(self, error_class: str) -> None:
        self.metrics.dead_letters.labels("output", error_class).inc()

    # ------------------------------------------------------------------ views
    def _register_views(self, app: faust.App) -> None:
        registry = self.metrics.registry

        @app.page("/metrics")
        async def metrics_view(web, request):
            return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        @app.page("/stats")
        async def stats_view(web, request):
            fmt = request.query.get("format", "report")
            if fmt not in ("report", "state"):
                return web.json({"error": f"format must be report or state, got {fmt!r}"}, status=400)
            return web.json(self.stats_report(state=fmt == "state"))

        if self.learning_metrics is not None:
            from loopline.streams.learning.agent import learning_stats

            @app.page("/learning")
            async def learning_view(web, request):
                return web.json(learning_stats(self))

        @app.page("/healthz")
        async def healthz(web, request):
            return web.json({"status": "ok", "worker": self.worker_id})

        @app.page("/readyz")
        async def readyz(web, request):
            stalled = self.publisher.stalled
            ready = self.ready and not app.rebalancing and not stalled
            body = {"ready": ready, "worker": self.worker_id}
            if stalled:
                body["reason"] = f"publishing has been failing for {self.publisher.waiting_seconds():.0f}s"
            return web.json(body, status=200 if ready else 503)


#: Kept for code written against 0.1 (see docs/changelog.md); new code says ``LooplineWorker``.
Worker = LooplineWorker


def create_worker(settings: Settings | None = None) -> LooplineWorker:
    return LooplineWorker(settings or Settings())


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM (exit 0); a crash exits 3 with one sentence."""
    from loopline.streams.lifecycle import run_faust_worker
    from loopline.streams.worker_logging import register_activity_log

    worker = create_worker(settings)
    register_activity_log(worker, worker.app, settings.activity_log_seconds)
    run_faust_worker(worker.app, settings)
