"""The threshold autopilot: the lowest auto-approval threshold that keeps the auto tier within an error budget.

For a model with an ``autopilot`` section (:class:`~loopline.processors.policy.quality_options.AutopilotSpec`)
the autopilot reads the auto-eligible verified outcomes of the recent windows
(:mod:`loopline.processors.quality.reliability`: audits weighted by ``1 / audit rate``,
confidence-routed review answers with weight 1) and, for every candidate
threshold ``t`` on the calibration grid, the error rate of the outcomes with
confidence ``>= t`` — exactly the predictions an auto tier at ``t`` would
approve. The **target** is the lowest ``t`` in ``[min_threshold,
max_threshold]`` whose one-sided upper bound (Wilson score at ``confidence``
on Kish's effective n) is within ``error_budget``, that rests on at least
``min_verified`` effective outcomes, and above which every measured threshold
qualifies too (picking the one lucky dip among many candidates would make the
bound optimistic). If no measured ``t`` qualifies, the target
is the lowest threshold above the measured ones (more data decides from there),
at most ``max_threshold``. Every slice with at least
``min_slice_verified`` effective outcomes computes its own target the same way,
and the model's target is the strictest of them (one threshold per model keeps
every well-measured slice within budget; small slices are covered by the pool).

**Guard rails** (one :meth:`Autopilot.evaluate` call = at most one adjustment;
steps are bounded both ways, tightening — the safe direction — by the larger
``max_tighten_step``, default 0.1, loosening by ``max_step``, default 0.02):

========================  ============================================================
situation                 action
========================  ============================================================
drift just became active  tighten by ``max_tighten_step`` at once (no data needed)
budget breached           tighten at once by ``max_tighten_step`` (the outcomes behind
                          the target no longer describe the model); breach = the *lower* bound of the error at the
                          current threshold above the budget (with a quarter of
                          ``min_verified`` outcomes), or the estimate above it (with
                          ``min_verified``) — in the recent windows or in the
                          current window alone
target above current      tighten by ``min(target - current, max_tighten_step)``
target below current      loosen by ``min(current - target, max_step)`` — never while
                          drift is active (hold, ``drift_active``), nor within
                          ``window_minutes`` of a tightening (hold, ``cooldown``: the
                          outcomes that forced it must age out first), nor when the
                          target only means "the first unmeasured threshold"
fewer than min_verified   hold (reason ``insufficient_data``): no loosening and no
                          data-driven move
========================  ============================================================

Every adjustment carries its evidence: estimate, interval and sample size at the
new threshold and at the old one, the target and the budget (all numbers; the
reason and the binding slice are separate fields).

>>> from loopline.processors.policy.quality_options import AutopilotSpec
>>> from loopline.processors.quality.reliability import BinnedOutcomes
>>> import numpy as np
>>> cell = BinnedOutcomes.from_rows(200, np.full(2000, 190), np.ones(2000, bool), np.ones(2000), np.full(2000, 0.95))
>>> ap = Autopilot(lambda m: AutopilotSpec(error_budget=0.01))
>>> adj = ap.evaluate("fraud", 0.97, cell, {}, now_ms=0)
>>> adj.action, adj.new_threshold, adj.reason
('loosen', 0.95, 'within_budget')
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from loopline.processors.policy.quality_options import AutopilotSpec
from loopline.processors.quality.reliability import BinnedOutcomes, z_one_sided


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One evaluation's outcome; ``action`` is ``tighten``, ``loosen`` or ``hold``."""

    model: str
    action: str
    reason: str
    old_threshold: float
    new_threshold: float
    evidence: dict[str, float] = field(default_factory=dict)
    binding_slice: str | None = None
    at_ms: int = 0

    @property
    def moved(self) -> bool:
        return self.action != "hold"

    def as_dict(self) -> dict:
        return {"model": self.model, "action": self.action, "reason": self.reason, "old": self.old_threshold,
                "new": self.new_threshold, "evidence": dict(self.evidence), "slice": self.binding_slice,
                "at_ms": self.at_ms}


def _target(cell: BinnedOutcomes, spec: AutopilotSpec, z: float, min_n: int) -> tuple[float | None, bool, dict]:
    """Lowest qualifying grid threshold (None = not enough data anywhere), whether it qualified, the tail figures."""
    tail = cell.tail(z)
    B = cell.bins
    k_lo = int(math.ceil(spec.min_threshold * B - 1e-9))
    k_hi = min(int(math.floor(spec.max_threshold * B + 1e-9)), B - 1)
    ks = np.arange(k_lo, k_hi + 1)
    enough = tail["n_eff"][ks] >= min_n
    ok = enough & (tail["upper"][ks] <= spec.error_budget)
    bad = np.flatnonzero(enough & ~ok)
    ok[:bad[-1] + 1 if len(bad) else 0] = False  # every measured threshold above the target must qualify too
    if ok.any():
        return float(ks[np.argmax(ok)] / B), True, tail
    if enough.any():  # every measured threshold is over budget: the first one not yet measured (tighten only)
        return float(min((ks[enough].max() + 1) / B, spec.max_threshold)), False, tail
    return None, False, tail


def _at(tail: dict, threshold: float, bins: int) -> dict[str, float]:
    k = min(max(int(math.floor(threshold * bins + 1e-9)), 0), bins - 1)
    est = float(tail["estimate"][k])
    return {"estimate": est if math.isfinite(est) else math.nan, "lower": float(tail["lower"][k]),
            "upper": float(tail["upper"][k]), "n": float(tail["n"][k]), "n_eff": float(tail["n_eff"][k])}


class Autopilot:
    """Per-model threshold state and the guard rails; pure (no policy or Kafka access).

    ``spec_for(model)`` returns the model's :class:`AutopilotSpec` (None = no
    autopilot); ``drift_active(model)`` says whether drift is active for it.
    The caller applies a moved :class:`Adjustment` (a policy overlay) and logs it.
    """

    def __init__(self, spec_for: Callable[[str], AutopilotSpec | None],
                 drift_active: Callable[[str], bool] = lambda model: False, history: int = 20) -> None:
        self.spec_for = spec_for
        self.drift_active = drift_active
        self.history = history
        self.thresholds: dict[str, float] = {}
        self.last: dict[str, Adjustment] = {}
        self.adjustments: dict[str, deque] = {}
        self._drift_seen: dict[str, bool] = {}
        self._tightened_at: dict[str, int] = {}

    def evaluate(self, model: str, current: float, pooled: BinnedOutcomes,
                 slices: Mapping[str, BinnedOutcomes], now_ms: int, fresh: BinnedOutcomes | None = None
                 ) -> Adjustment:
        """Decide one step for ``model`` whose auto threshold is ``current`` now.

        ``pooled``: auto-eligible outcomes of the recent windows; ``slices``: the
        same per slice; ``fresh``: those of the current window alone (a breach
        there counts at once — it is not diluted by older outcomes).
        """
        spec = self.spec_for(model)
        if spec is None or not spec.enabled:
            return Adjustment(model, "hold", "disabled", current, current, at_ms=now_ms)
        z = z_one_sided(spec.confidence)
        B = pooled.bins
        drift = bool(self.drift_active(model))
        drift_edge = drift and not self._drift_seen.get(model, False)
        self._drift_seen[model] = drift

        target, qualified, tail = _target(pooled, spec, z, spec.min_verified)
        binding = None
        for name, cell in sorted(slices.items()):
            t, q, _ = _target(cell, spec, z, spec.min_slice_verified)
            if t is not None and target is not None and t > target:
                target, qualified, binding = t, q, name
        now = _at(tail, current, B)

        def breached(at: dict) -> bool:  # a quarter of min_verified suffices when even the lower bound is over
            return (at["n_eff"] >= spec.min_verified / 4 and at["lower"] > spec.error_budget) or (
                at["n_eff"] >= spec.min_verified and at["estimate"] > spec.error_budget)

        latest = _at(fresh.tail(z), current, B) if fresh is not None else None
        breach = breached(now) or (latest is not None and breached(latest))
        cooling = now_ms - self._tightened_at.get(model, -10**18) < spec.window_minutes * 60_000
        step, up = spec.max_step, spec.max_tighten_step
        if drift_edge or breach or (target is not None and target > current + 1e-12):
            # a breach or a drift means the outcomes behind the target are stale: the full step at once
            want = current + up if (breach or drift_edge or target is None) else target
            new = min(current + up, want, spec.max_threshold)
            reason = "drift" if drift_edge else "budget_breach" if breach else "over_budget"
            action = "tighten" if new > current + 1e-12 else "hold"
            if action == "hold":
                reason = "at_max_threshold"
        elif target is not None and qualified and target < current - 1e-12:
            if drift:
                action, reason, new = "hold", "drift_active", current
            elif cooling:
                action, reason, new = "hold", "cooldown", current
            else:
                action, reason = "loosen", "within_budget"
                new = max(current - step, target, spec.min_threshold)
        else:
            action, new = "hold", current
            reason = "insufficient_data" if target is None else "at_target" if qualified else "no_evidence_to_loosen"
        new = round(new, 9)
        at_new = _at(tail, new, B)
        evidence = {**at_new, "budget": spec.error_budget, "confidence": spec.confidence,
                    "target": math.nan if target is None else target, "old_threshold": current,
                    "new_threshold": new, "current_estimate": now["estimate"], "current_lower": now["lower"],
                    "current_upper": now["upper"], "current_n": now["n"], "drift": float(drift),
                    "breach": float(breach)}
        if latest is not None:
            evidence.update(fresh_estimate=latest["estimate"], fresh_lower=latest["lower"], fresh_n=latest["n"])
        evidence = {k: float(v) for k, v in evidence.items() if math.isfinite(v)}  # NaN = not measured: left out
        adj = Adjustment(model, action, reason, current, new, evidence, binding, now_ms)
        self.last[model] = adj
        self.thresholds[model] = new
        if action == "tighten":
            self._tightened_at[model] = now_ms
        if adj.moved:
            self.adjustments.setdefault(model, deque(maxlen=self.history)).append(adj)
        return adj

    def status(self, model: str) -> dict:
        """Threshold, last evaluation and the recent adjustments of ``model`` (JSON-able)."""
        spec = self.spec_for(model)
        last = self.last.get(model)
        return {"threshold": self.thresholds.get(model),
                "spec": None if spec is None else {k: getattr(spec, k) for k in spec.__slots__},
                "last": None if last is None else last.as_dict(),
                "adjustments": [a.as_dict() for a in self.adjustments.get(model, ())]}
