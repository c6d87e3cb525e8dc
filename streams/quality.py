"""Calibration, slices and the threshold autopilot inside a worker (hooks, a timer, metrics, stats).

:func:`register_calibration` plugs a :class:`CalibrationRuntime` into a worker:

* an **example hook** (joined ``TrainingExample`` dicts from the feedback agent)
  feeds :class:`~loopline.processors.quality.reliability.CalibrationTracker` and
  :class:`~loopline.processors.quality.slices.SliceStats`; each event counts once, with its first
  labelled answer (a bounded set of recent event ids drops later answers);
* a **route hook** feeds slice volume and routed share from every routed frame;
* a **timer** runs :class:`~loopline.processors.quality.autopilot.Autopilot` for every model
  whose policy section has an enabled ``autopilot`` table; a moved threshold
  becomes the ``autopilot`` overlay on ``worker.policy``
  (``set_overlay("autopilot", model, min_confidence=..., evidence=...)``) and is
  logged with ``worker.log_policy_change`` (a ``PolicyEvent`` with the evidence);
* Prometheus gauges on ``worker.metrics.registry`` (bounded labels: model,
  and slice = ``attribute=value`` for at most top_k + 1 values per dimension).

Drift state: the drift board of ``worker.drift`` (status ``drifting: ...``), read at each tick.

Turning the autopilot off: ``enabled = false`` in ``[models.X.autopilot]`` (or
remove the table) and apply the policy; the overlay is cleared at the next tick
and the file's ``min_confidence`` is in force again.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from loopline.processors.quality.autopilot import Autopilot
from loopline.processors.quality.reliability import CalibrationTracker
from loopline.processors.quality.slices import SliceStats
from loopline.processors.wire.partitioning import partition_for

log = logging.getLogger("loopline.calibration")
OVERLAY = "autopilot"


def _model_section(holder, model: str):
    base = getattr(holder, "base", None)
    return None if base is None else base.model(model)


def drift_reader(worker) -> Callable[[str], bool]:
    """``drift_active(model)`` from whatever drift state the worker has (False when none)."""
    def active(model: str) -> bool:
        drift = worker.drift  # None until register_drift ran (or when this worker runs no drift)
        return drift is not None and str(drift.board.status(model)).startswith("drifting")

    return active


class CalibrationRuntime:
    """The calibration state of one worker and the autopilot loop; no Faust inside (testable alone)."""

    def __init__(self, holder, registry: CollectorRegistry, drift_active: Callable[[str], bool] = lambda m: False,
                 window_ms: int | None = None, model_label: Callable[[str], str] = str,
                 seen_capacity: int = 200_000, autopilot_specs: dict | None = None,
                 slice_specs: dict | None = None, max_slice_series: int = 200, partitions: int = 1) -> None:
        self.holder = holder
        self.partitions = partitions
        # explicit specs (model -> spec) win over the policy file's; for embedding and tests
        self._ap_specs = autopilot_specs or {}
        self._slice_specs = slice_specs or {}
        self.max_slice_series = max_slice_series  # bound of loopline_slice_error_rate series per worker
        self.model_label = model_label
        specs = [self.spec_for(m) for m in self.configured_models()]
        minutes = max([s.window_minutes for s in specs if s is not None] or [60.0])
        self.window_ms = window_ms or int(minutes * 60_000)
        #: one tracker per input partition (of the event's id), saved with that partition's statistics
        #: (``attach`` on WorkerStats): outcomes survive a crash and move with the partition
        self.trackers: dict[int, CalibrationTracker] = {}
        self._merged: CalibrationTracker | None = None
        self.keeps: Callable[[int], bool] = lambda p: True  # the worker's: False for a revoked partition
        self.slices = SliceStats(self.slices_for, window_ms=self.window_ms)
        self.autopilot = Autopilot(self.spec_for, drift_active)
        #: ``(event_id, correction_id) -> bool | None``: whether that answer is the event's first labelled
        #: one, from state that survives a crash (the worker's join); None falls back to ``_seen``
        self.first_labelled: Callable[[str, str], bool | None] = lambda event_id, correction_id: None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_capacity = seen_capacity
        self._due: dict[str, float] = {}
        self.g_ece = Gauge("loopline_calibration_ece",
                           "Expected calibration error of verified outcomes (recent windows)", ["model"],
                           registry=registry)
        self.g_err = Gauge("loopline_auto_error_rate_estimate",
                           "Estimated error rate of the auto tier at the autopilot's threshold", ["model"],
                           registry=registry)
        self.g_budget = Gauge("loopline_auto_error_budget", "Error budget of the auto tier", ["model"],
                              registry=registry)
        self.g_thr = Gauge("loopline_autopilot_threshold", "Auto-approval threshold set by the autopilot", ["model"],
                           registry=registry)
        self.g_slice = Gauge("loopline_slice_error_rate", "Verified error rate per slice (recent windows)",
                             ["model", "slice"], registry=registry)

    # ------------------------------------------------------------------ policy
    def configured_models(self) -> list[str]:
        base = getattr(self.holder, "base", None)
        names = set(self._ap_specs) | set(self._slice_specs)
        return sorted(names if base is None else names | set(base.spec.models))

    def spec_for(self, model: str):
        if model in self._ap_specs:
            return self._ap_specs[model]
        return getattr(_model_section(self.holder, model), "autopilot", None)

    def slices_for(self, model: str):
        if model in self._slice_specs:
            return self._slice_specs[model]
        return getattr(_model_section(self.holder, model), "slices", ()) or ()

    def class_offset(self, model: str, label: str) -> float:
        """How far ``label``'s own threshold sits above the model's global one in the policy file (0 if none)."""
        mp = _model_section(self.holder, model)
        if mp is None:
            return 0.0
        return mp.min_confidence_by_class.get(label, mp.min_confidence) - mp.min_confidence

    def threshold(self, model: str) -> float | None:
        """The autopilot's threshold: its overlay if set, else the policy file's ``min_confidence``."""
        ov = getattr(self.holder, "overlays", {}).get((OVERLAY, model))
        if ov is not None and ov.min_confidence is not None:
            return ov.min_confidence
        mp = _model_section(self.holder, model)
        return None if mp is None else mp.min_confidence

    # ------------------------------------------------------------------ hooks
    def on_examples(self, examples: list[dict]) -> None:
        """Example hook: first labelled answer per event into calibration and slices."""
        fresh = []
        for e in examples:
            if e.get("effective_label") is None:
                fresh.append(e)  # counts as an answer for label coverage, not as an outcome
                continue
            eid = e["event_id"]
            cid = e.get("correction_id")
            first = None if cid is None else self.first_labelled(eid, cid)
            if first is None:  # not known to the join (tests, embedding): the first seen by this process
                first = eid not in self._seen
            if eid not in self._seen:
                self._seen[eid] = None
                if len(self._seen) > self._seen_capacity:
                    self._seen.popitem(last=False)
            if first:
                fresh.append(e)
        if fresh:
            groups: dict[int, list[dict]] = {}
            for e in fresh:
                groups.setdefault(partition_for(e["event_id"].encode(), self.partitions), []).append(e)
            for p, rows in groups.items():
                if self.keeps(p):
                    self._tracker(p).update_examples(rows, self.class_offset)
            self._merged = None
            self.slices.update_examples(fresh, self.class_offset)

    # ------------------------------------------------------------ per partition
    @property
    def tracker(self) -> CalibrationTracker:
        """This worker's partitions merged (what the autopilot, the metrics and ``GET /stats`` read)."""
        if self._merged is None:
            merged = CalibrationTracker(window_ms=self.window_ms)
            for p in sorted(self.trackers):
                merged.merge(self.trackers[p])
            self._merged = merged
        return self._merged

    def _tracker(self, p: int) -> CalibrationTracker:
        t = self.trackers.get(p)
        if t is None:
            t = self.trackers[p] = CalibrationTracker(window_ms=self.window_ms)
        return t

    def state_of(self, p: int) -> dict | None:
        t = self.trackers.get(p)
        return None if t is None else t.to_state()

    def restore(self, p: int, state: dict | None) -> None:
        if state:
            self.trackers[p] = CalibrationTracker.from_state(state)
        else:
            self.trackers.pop(p, None)
        self._merged = None

    def drop(self, p: int) -> None:
        self.trackers.pop(p, None)
        self._merged = None

    def on_route(self, result) -> None:
        """Route hook: slice volume and routed share of every routed frame."""
        for r in result.routed:
            self.slices.update_routed(r.frame, r.decisions)

    # ------------------------------------------------------------------ autopilot
    def autopilot_models(self) -> list[str]:
        return [m for m in self.configured_models() if self.spec_for(m) is not None]

    async def tick(self, log_change, now_ms: int | None = None, force: bool = False) -> list:
        """Evaluate every due model; apply and log moved thresholds. Returns the adjustments."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        out = []
        overlaid = {m for (name, m) in getattr(self.holder, "overlays", {}) if name == OVERLAY}
        for model in sorted(set(self.autopilot_models()) | overlaid):
            spec = self.spec_for(model)
            if spec is None or not spec.enabled:
                if (OVERLAY, model) in getattr(self.holder, "overlays", {}):
                    change = self.holder.clear_overlay(OVERLAY, model, now_ms=now_ms)
                    await log_change(change)
                continue
            if not force and now_ms < self._due.get(model, 0):
                continue
            self._due[model] = now_ms + spec.interval_seconds * 1000
            current = self.threshold(model)
            pooled = self.tracker.cell(model, scope="recent", kind="eligible")
            fresh = self.tracker.cell(model, scope="current", kind="eligible")
            adj = self.autopilot.evaluate(model, current, pooled, self.slices.eligible(model), now_ms, fresh)
            if adj.moved:
                change = self.holder.set_overlay(OVERLAY, model, min_confidence=adj.new_threshold,
                                                 evidence=adj.evidence, now_ms=now_ms)
                await log_change(change)
            out.append(adj)
        self.refresh_metrics()
        return out

    def refresh_metrics(self) -> None:
        for model in self.tracker.models():
            ece = self.tracker.ece(model, scope="recent")
            if ece is not None:
                self.g_ece.labels(self.model_label(model)).set(ece)
        for model in self.autopilot_models():
            label = self.model_label(model)
            spec = self.spec_for(model)
            self.g_budget.labels(label).set(spec.error_budget)
            thr = self.autopilot.thresholds.get(model, self.threshold(model))
            if thr is not None:
                self.g_thr.labels(label).set(thr)
            last = self.autopilot.last.get(model)
            if last is not None and "estimate" in last.evidence:
                self.g_err.labels(label).set(last.evidence["estimate"])
        self.g_slice.clear()  # only the slices reported now: a value that left the top-K loses its series
        rows_out = []
        for model in self.slices.models():
            for dim, rows in self.slices.report(model).items():
                attr = dim.split(":", 1)[1]
                for r in rows:
                    if r["verified_error_rate"] is not None:
                        rows_out.append((r["verified_error_rate"], self.model_label(model), f"{attr}={r['slice']}"))
        # bounded: the max_slice_series worst slices of all models (ties: by name, stable across scrapes)
        rows_out.sort(key=lambda row: (-row[0], row[1], row[2]))
        for rate, model_label, slice_label in rows_out[:self.max_slice_series]:
            self.g_slice.labels(model_label, slice_label).set(rate)

    def stats(self) -> dict:
        """The ``calibration`` section of ``GET /stats`` (see :func:`loopline.connectors.cli.policy_status.policy_status`)."""
        auto = {}
        for model in self.autopilot_models():
            spec, mp = self.spec_for(model), _model_section(self.holder, model)
            auto[model] = {**self.autopilot.status(model), "threshold": self.threshold(model),
                           "policy_threshold": None if mp is None else mp.min_confidence, "enabled": spec.enabled}
        return {"calibration": self.tracker.snapshot(), "slices": self.slices.snapshot(), "autopilot": auto,
                "policy_version": getattr(self.holder, "version", None)}


def register_calibration(worker, app) -> CalibrationRuntime:
    """Attach calibration, slices and the autopilot to ``worker`` (run it where the feedback agent runs)."""
    rt = CalibrationRuntime(worker.policy, worker.metrics.registry, drift_reader(worker),
                            model_label=worker.metrics.model_label,
                            max_slice_series=worker.settings.slice_series_max, partitions=worker.settings.partitions)
    worker.calibration = rt
    if getattr(worker, "join", None) is not None:  # the join's pending answers survive a crash; a set would not
        rt.first_labelled = worker.join.first_labelled
    if worker.stats is not None:  # outcomes saved with each partition's statistics (counted once, kept on a crash)
        worker.stats.attach("calibration", "feedback", rt)
        rt.keeps = lambda p: worker.stats.keeps("feedback", p)
    worker.example_hooks.append(rt.on_examples)
    worker.route_hooks.append(rt.on_route)
    worker.stats_providers["calibration"] = rt.stats
    intervals = [rt.spec_for(m).interval_seconds for m in rt.autopilot_models()]
    interval = max(1.0, min(intervals or [30.0]))

    async def log_change(change) -> None:
        if change is not None:
            await worker.log_policy_change(change)

    @app.timer(interval=interval)
    async def run_autopilot() -> None:
        try:
            await rt.tick(log_change)
        except Exception:  # a bug must not stop the worker; the thresholds stay where they are
            log.exception("autopilot tick failed")
            worker.metrics.processing_errors.labels("autopilot").inc()

    return rt


def calibration_stats(worker) -> dict:
    """What ``GET /stats`` shows under ``calibration`` (empty when the runtime is not registered)."""
    rt = worker.calibration
    return {} if rt is None else rt.stats()
