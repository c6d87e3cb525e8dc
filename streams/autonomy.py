"""Autonomy that follows measured error, inside a worker: audit outcomes in, policy overlays out.

:func:`register_autonomy` (on for ``LOOPLINE_AUTONOMY_ERROR_BUDGET > 0``, where
the feedback agent runs) plugs an :class:`AutonomyRuntime` into the worker:

* an **example hook** reads each event's first labelled answer; audited
  auto-tier answers (``tier == "auto"`` and ``audit``) feed that model's
  :class:`~loopline.processors.quality.autonomy.AutonomyMonitor` with the
  answer's ``sampling_propensity``;
* a change of a model's autonomy level becomes the ``trust`` overlay on
  ``worker.policy`` — a higher auto threshold (``min_confidence_delta``) and a
  higher audit rate (never below the file's) — or clears it when the model is
  back at level 0; the overlay name sorts after ``autopilot`` and ``drift``, so its
  delta stacks on the threshold those set;
* a **timer** publishes each change as a ``PolicyEvent`` with its evidence
  (``worker.log_policy_change``); ``GET /stats`` shows each monitor under ``autonomy``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from loopline.processors.quality.autonomy import AutonomyChange, AutonomyMonitor, AutonomySpec

log = logging.getLogger("loopline.autonomy")
OVERLAY = "trust"


class AutonomyRuntime:
    """Monitors per model and the overlay they drive; no Faust inside (testable alone)."""

    def __init__(self, holder, spec_for: Callable[[str], AutonomySpec | None], max_models: int = 1000,
                 seen_capacity: int = 200_000) -> None:
        self.holder = holder
        self.spec_for = spec_for
        self.max_models = max_models
        self.monitors: dict[str, AutonomyMonitor] = {}
        self.pending: list = []  # PolicyChange objects not yet logged
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_capacity = seen_capacity

    def monitor(self, model: str) -> AutonomyMonitor | None:
        m = self.monitors.get(model)
        if m is None:
            spec = self.spec_for(model)
            if spec is None or len(self.monitors) >= self.max_models:
                return None
            m = self.monitors[model] = AutonomyMonitor(model, spec)
        return m

    def on_examples(self, examples: list[dict]) -> list[AutonomyChange]:
        """Example hook: audited auto-tier outcomes into the monitors; returns the changes made."""
        out = []
        for e in examples:
            label = e.get("effective_label")
            if label is None or e.get("tier") != "auto" or not e.get("audit"):
                continue
            eid = e["event_id"]
            if eid in self._seen:
                continue
            self._seen[eid] = None
            if len(self._seen) > self._seen_capacity:
                self._seen.popitem(last=False)
            pred = e["prediction"]
            mon = self.monitor(e["model_name"])
            if mon is None:
                continue
            change = mon.observe(label != pred["predicted_label"], float(e.get("sampling_propensity") or 0.0),
                                 float(pred["confidence"]), int(pred.get("emitted_at", 0)))
            if change is not None:
                self.apply(change, now_ms=int(e.get("reviewed_at", 0)) or None)
                out.append(change)
        return out

    def apply(self, change: AutonomyChange, now_ms: int | None = None) -> None:
        """Turn a level change into the overlay (or clear it) and queue the policy event."""
        model = change.model
        if change.level is None:
            pc = self.holder.clear_overlay(OVERLAY, model, evidence=change.evidence, now_ms=now_ms)
        else:
            file_rate = self.holder.base.spec.model(model).audit_rate
            pc = self.holder.set_overlay(OVERLAY, model, min_confidence_delta=change.level.min_confidence_delta,
                                         audit_rate=max(file_rate, change.level.audit_rate),
                                         evidence={**change.evidence, "level": float(change.new_level)},
                                         now_ms=now_ms)
        if pc is not None:
            log.warning("autonomy of %s: %s to level %d (error estimate %.4f, budget %.4f)", model, change.action,
                        change.new_level, change.evidence["estimate"], change.evidence["error_budget"])
            self.pending.append(pc)

    async def flush(self, log_change) -> int:
        """Log the queued policy changes; returns how many."""
        pending, self.pending = self.pending, []
        for pc in pending:
            await log_change(pc)
        return len(pending)

    def stats(self) -> dict:
        return {m: mon.status() for m, mon in sorted(self.monitors.items())}


def register_autonomy(worker, app) -> AutonomyRuntime:
    """Attach the autonomy monitors to ``worker`` (where the feedback agent runs)."""
    s = worker.settings
    spec = AutonomySpec(error_budget=s.autonomy_error_budget)
    rt = AutonomyRuntime(worker.policy, lambda model: spec)
    worker.example_hooks.append(rt.on_examples)
    worker.stats_providers["autonomy"] = rt.stats

    @app.timer(interval=1.0)
    async def log_autonomy_changes() -> None:
        try:
            await rt.flush(worker.log_policy_change)
        except Exception:  # the overlay is in force either way; the event is retried next tick
            log.exception("autonomy policy event failed")
            worker.metrics.processing_errors.labels("autonomy").inc()

    return rt
