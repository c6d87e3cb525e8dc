"""``DriftBoard``: what a route worker knows about drift, folded from ``DriftEvent`` s.

Route workers do not evaluate drift (the drift agent owning a model does);
they read ``loopline.drift`` and keep, per model, the (version, signal,
detector) alarms that are active, to put a short drift status on every review
task (:meth:`status`) and to run the model's drift policy for routing
(:meth:`apply` returns the policy's actions: ``tighten_routing`` /
``revert_routing``, carried out by the worker on its own policy holder).

Bounded: only *active* alarms are kept (a model has at most versions ×
signals × detectors of them) and at most ``max_models`` models (least
recently updated dropped).

>>> b = DriftBoard()
>>> ev = {"model_name": "m", "model_version": "v1", "signal": "amount", "detector": "psi", "score": 0.31,
...       "threshold": 0.12, "window": "w", "detected_at": 5}
>>> b.status("m")
'stable'
>>> _ = b.apply({**ev, "state": "started"}); b.status("m")
'drifting: amount (psi 0.31, 2.6x threshold)'
>>> _ = b.apply({**ev, "state": "resolved"}); b.status("m")
'stable'
"""
from __future__ import annotations

from loopline.processors.drift.policy import DriftPolicyBook


class DriftBoard:
    """Active drift alarms per model and each model's drift policy (see the module docstring)."""

    def __init__(self, policies: DriftPolicyBook | None = None, max_models: int = 1000,
                 max_status_signals: int = 3) -> None:
        self.policies = policies or DriftPolicyBook()
        self.max_models = max_models
        self.max_status_signals = max_status_signals
        self._active: dict[str, dict[tuple[str, str, str], dict]] = {}
        self._policies: dict[str, object] = {}
        self._status: dict[str, str] = {}

    def apply(self, event: dict) -> list[dict]:
        """Fold one DriftEvent; return the model's drift-policy actions for it."""
        model = event["model_name"]
        key = (event["model_version"], event["signal"], event["detector"])
        active = self._active.pop(model, {})
        self._active[model] = active  # most recently updated last
        if event["state"] == "resolved":
            active.pop(key, None)
        else:
            active[key] = {"score": float(event["score"]), "threshold": float(event["threshold"]),
                           "at": int(event["detected_at"])}
        self._status.pop(model, None)
        policy = self._policies.get(model)
        if policy is None:
            policy = self._policies[model] = self.policies.policy_for(model)
        actions = policy.on_event(event)
        while len(self._active) > self.max_models:
            gone = next(iter(self._active))
            del self._active[gone]
            self._policies.pop(gone, None)
            self._status.pop(gone, None)
        return actions

    def active(self, model: str) -> dict[tuple[str, str, str], dict]:
        return dict(self._active.get(model, {}))

    def drifting(self, model: str) -> bool:
        policy = self._policies.get(model)
        return bool(policy is not None and policy.active)

    def policy(self, model: str):
        return self._policies.get(model) or self.policies.policy_for(model)

    def models(self) -> list[str]:
        return list(self._active)

    def status(self, model: str) -> str:
        """``stable`` or ``drifting: <signal> (<detector> <score>, <score/threshold>x threshold), ...``
        (strongest first, at most 3 signals)."""
        cached = self._status.get(model)
        if cached is not None:
            return cached
        active = self._active.get(model)
        if not active:
            text = "stable"
        else:
            best: dict[str, tuple[float, str, float]] = {}
            for (_, signal, detector), v in active.items():
                ratio = v["score"] / v["threshold"] if v["threshold"] > 0 else v["score"]
                if signal not in best or ratio > best[signal][0]:
                    best[signal] = (ratio, detector, v["score"])
            ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
            parts = [f"{s} ({d} {score:.3g}, {ratio:.1f}x threshold)"
                     for s, (ratio, d, score) in ranked[:self.max_status_signals]]
            more = len(ranked) - self.max_status_signals
            text = "drifting: " + ", ".join(parts) + (f" +{more} more" if more > 0 else "")
        if model in self._active:
            self._status[model] = text
        return text
