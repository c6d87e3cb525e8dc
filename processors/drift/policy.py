"""``DriftPolicy``: what drift does to a model, as a small state machine.

The policy sees the model's DriftEvents and says what to do, as action dicts
the worker carries out (it owns the routing policy and the topics):

* ``alert_only`` — ``alert`` when drift starts, ``clear`` when the last active
  signal resolves;
* ``tighten_routing`` — additionally ``tighten_routing`` with the configured
  amounts when the model goes from calm to drifting (raise the auto threshold,
  raise the audit rate), and ``revert_routing`` when it is calm again;
  :meth:`adjustments` gives the amounts to add while active;
* ``retrain`` — additionally one ``retrain_request`` per drift episode (at most
  one per ``retrain_cooldown_ms``).

A model is *drifting* while any (version, signal, detector) of the watched
``signals`` is active; new starts while drifting only ``alert``.

>>> p = DriftPolicy("tighten_routing", auto_threshold_delta=0.05, audit_rate_delta=0.1)
>>> ev = {"model_name": "m", "model_version": "v1", "signal": "x", "detector": "psi", "detected_at": 5}
>>> [a["action"] for a in p.on_event({**ev, "state": "started"})]
['alert', 'tighten_routing']
>>> p.adjustments()
{'auto_threshold_delta': 0.05, 'audit_rate_delta': 0.1}
>>> [a["action"] for a in p.on_event({**ev, "state": "resolved"})]
['clear', 'revert_routing']
>>> p.adjustments()
{'auto_threshold_delta': 0.0, 'audit_rate_delta': 0.0}
"""
from __future__ import annotations

from loopline.processors.errors import ConfigError

MODES = ("alert_only", "tighten_routing", "retrain")


class DriftPolicy:
    """Per-model drift policy (see the module docstring).

    Parameters
    ----------
    mode
        ``alert_only``, ``tighten_routing`` or ``retrain``.
    auto_threshold_delta, audit_rate_delta
        Amounts added to the auto-approve confidence threshold and to the audit
        rate while drift is active (``tighten_routing``).
    signals
        Signals that trigger the policy (None = all).
    retrain_cooldown_ms
        Minimum time between two retrain requests (``retrain``).
    """

    def __init__(self, mode: str = "alert_only", auto_threshold_delta: float = 0.05, audit_rate_delta: float = 0.05,
                 signals: tuple[str, ...] | None = None, retrain_cooldown_ms: int = 3_600_000) -> None:
        if mode not in MODES:
            raise ConfigError(f"drift policy mode must be one of {MODES}, got {mode!r}")
        if auto_threshold_delta < 0 or audit_rate_delta < 0 or retrain_cooldown_ms < 0:
            raise ConfigError("drift policy amounts and cooldown must be >= 0")
        self.mode = mode
        self.auto_threshold_delta = auto_threshold_delta
        self.audit_rate_delta = audit_rate_delta
        self.signals = None if signals is None else tuple(signals)
        self.retrain_cooldown_ms = retrain_cooldown_ms
        self._active: set[tuple[str, str, str]] = set()
        self._last_retrain: int | None = None

    @property
    def active(self) -> bool:
        """True while drift is active on a watched signal."""
        return bool(self._active)

    def adjustments(self) -> dict[str, float]:
        """What to add to the routing policy right now."""
        on = self.active and self.mode == "tighten_routing"
        return {"auto_threshold_delta": self.auto_threshold_delta if on else 0.0,
                "audit_rate_delta": self.audit_rate_delta if on else 0.0}

    def on_event(self, event: dict) -> list[dict]:
        """Actions for one DriftEvent (``ongoing`` events and unwatched signals give none)."""
        if self.signals is not None and event["signal"] not in self.signals:
            return []
        key = (event["model_version"], event["signal"], event["detector"])
        base = {"model_name": event["model_name"], "model_version": event["model_version"],
                "signal": event["signal"], "detector": event["detector"], "at": event["detected_at"]}
        actions: list[dict] = []
        if event["state"] == "started" and key not in self._active:
            was_calm = not self._active
            self._active.add(key)
            actions.append({**base, "action": "alert"})
            if was_calm and self.mode == "tighten_routing":
                actions.append({**base, "action": "tighten_routing", **self.adjustments()})
            if was_calm and self.mode == "retrain":
                at = int(event["detected_at"])
                if self._last_retrain is None or at - self._last_retrain >= self.retrain_cooldown_ms:
                    self._last_retrain = at
                    actions.append({**base, "action": "retrain_request",
                                    "reason": f"drift on {event['signal']} ({event['detector']})"})
        elif event["state"] == "resolved" and key in self._active:
            self._active.discard(key)
            if not self._active:
                actions.append({**base, "action": "clear"})
                if self.mode == "tighten_routing":
                    actions.append({**base, "action": "revert_routing", "auto_threshold_delta": 0.0,
                                    "audit_rate_delta": 0.0})
        return actions


class DriftPolicyBook:
    """Which :class:`DriftPolicy` each model gets: a JSON object ``model -> options``.

    ``"*"`` gives the default for models not named (``alert_only`` if absent).
    Options are :class:`DriftPolicy`'s arguments. Invalid text raises
    :class:`ConfigError` naming the model and option.

    >>> book = DriftPolicyBook.from_json('{"fraud": {"mode": "tighten_routing", "audit_rate_delta": 0.1}}')
    >>> book.policy_for("fraud").mode, book.policy_for("fraud").audit_rate_delta, book.policy_for("other").mode
    ('tighten_routing', 0.1, 'alert_only')
    """

    OPTIONS = ("mode", "auto_threshold_delta", "audit_rate_delta", "signals", "retrain_cooldown_ms")

    def __init__(self, entries: dict[str, dict] | None = None) -> None:
        self.entries = dict(entries or {})
        for model in self.entries:
            self.policy_for(model)  # validate now, not at the first drift

    @classmethod
    def from_json(cls, text: str | None) -> DriftPolicyBook:
        import json

        if not text or not str(text).strip():
            return cls()
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"drift policy is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ConfigError('drift policy must be a JSON object {"model": {"mode": ...}, "*": {...}}')
        return cls(data)

    def policy_for(self, model: str) -> DriftPolicy:
        opts = self.entries.get(model, self.entries.get("*", {}))
        unknown = sorted(set(opts) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(f"drift policy of {model!r}: unknown option(s) {unknown} (known: {list(self.OPTIONS)})")
        kw = dict(opts)
        if kw.get("signals") is not None:
            kw["signals"] = tuple(kw["signals"])
        try:
            return DriftPolicy(**kw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"drift policy of {model!r}: {exc}") from exc
