"""The tiered autonomy policy: every prediction gets one tier, one reason, one propensity.

Rule precedence for one prediction — the first rule that matches decides:

1. **escalate** rules of the model, in file order: risk rules
   (``risk:amount>=10000``), then context rules (``context:country in [IR,KP]``),
   then ``tiers.escalate.below_confidence`` (``confidence<0.5``);
2. **review** rules: risk rules, then context rules, then confidence below the
   predicted class's threshold (``confidence[fraud]<0.97``) or the global one
   (``confidence<0.9``), then a new model version drawn for review at
   ``new_version.review_rate`` (``new_model_version``);
3. **auto** (``confidence>=0.9`` / ``confidence[legit]>=0.85``), audited with
   probability ``audit_rate`` (reason ``audit``), or ``oversample_rate`` when
   confidence is below ``oversample_below`` (reason ``oversample_low_confidence``);
4. then the **budgets**, in input order: a review task that finds the review
   bucket empty and has ``priority < defer_below_priority`` is *deferred*: it
   becomes an auto decision with reason ``budget_deferred``, audited with
   probability ``deferred_audit_rate``. Review tasks at or above the cut-off and
   all escalations go out anyway and are counted as over budget. Audit tasks use
   no budget (dropping them would bias the auto tier's error estimate).

``sampling_propensity`` is the probability that the event reaches a human
under the policy: 1.0 for review and escalate, the audit rate that applied for
auto (so ``1 / propensity`` is the event's inverse-propensity weight). For an
auto decision it is the probability *given the auto tier*: while a model
version is new, the chance of reaching a human before the tier was known was
higher, but the auto tier's error estimate needs the conditional one. Random
draws are deterministic: ``blake2b(event_id, digest_size=16, salt=sampling_salt)``
gives two independent uniforms in [0, 1) — the first for audits (and deferred
audits), the second for new-version review — so a replay of the same events in
the same order gives identical decisions (budgets run on event time).

Priority (higher is more urgent) = the tier's ``priority`` (escalate 200,
review 100, audit 0 by default) + the expected error in percent:
``round(100 * (1 - confidence))``, or once the learning loop's override-risk model
is in use ``round(100 * (1 - confidence * (1 - override_risk)))``; 0 when no
task is created. The review store orders each queue by due time less a weight
per priority point (``connectors/review/store.py``), so within an SLA the team's
capacity goes to the likeliest errors first. ``due_by_ms`` = ``now_ms`` + the tier's SLA (audit tasks use
the review SLA); 0 when no task is created.

The policy lives in five small modules: :mod:`loopline.processors.policy.model` (the
file format, validation, compiled rules), :mod:`loopline.processors.policy.rules` (the
columns the rules read, risk/context masks), :mod:`loopline.processors.policy.evaluate`
(precedence, sampling, budgets over columns), :mod:`loopline.processors.policy.state`
(budget buckets, model-version ages) and this one (the public objects).

>>> policy = Policy.from_toml('''
... version = "p1"
... [models.fraud.tiers.auto]
... min_confidence = 0.9
... [[models.fraud.tiers.escalate.risk]]
... attribute = "amount"
... op = ">="
... value = 10000
... ''')
>>> evs = [{"event_id": f"e{i}", "model_name": "fraud", "model_version": "v1", "emitted_at": 0,
...         "predicted_label": "legit", "confidence": c, "risk": {"amount": a}, "context": None}
...        for i, (c, a) in enumerate([(0.95, 10.0), (0.5, 10.0), (0.99, 20000.0)])]
>>> [(d.tier, d.reason, d.sampling_propensity) for d in policy.decide_batch(evs, now_ms=0)]
[('auto', 'confidence>=0.9', 0.0), ('review', 'confidence<0.9', 1.0), ('escalate', 'risk:amount>=10000', 1.0)]
"""
from __future__ import annotations

import hashlib
import operator
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np

from loopline.processors.errors import ConfigError
from loopline.processors.policy.evaluate import GroupDecisions, apply_budgets, decide_group, uniforms
from loopline.processors.policy.model import R_DEFERRED, ModelPolicy, PolicySpec, adjust_model, config_error, parse_policy
from loopline.processors.policy.rules import EventColumns, FrameColumns
from loopline.processors.policy.state import RoutingState
from loopline.processors.policy.threshold import FrameDecisions
from loopline.processors.wire.frame import PredictionFrame
from loopline.processors.wire.names import TIERS

_get_model, _get_version = operator.itemgetter("model_name"), operator.itemgetter("model_version")


@dataclass(slots=True)
class Decision:
    """The policy's answer for one prediction (the fields of a ``RoutingDecision`` it decides)."""

    tier: str
    reason: str
    policy_version: str
    model_version: str
    sampling_propensity: float
    audited: bool
    priority: int
    due_by_ms: int

    @property
    def needs_human(self) -> bool:
        return self.tier != "auto" or self.audited


class Policy:
    """A validated policy plus its routing state; decides whole frames or batches of events.

    Not thread-safe: one worker loop calls it. Use :class:`PolicyHolder` to replace
    it while running.
    """

    def __init__(self, spec: PolicySpec, state: RoutingState | None = None) -> None:
        self.spec = spec
        self.state = state if state is not None else RoutingState(spec.budgets)
        self._reason_lists: dict[str, list[str]] = {}

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> Policy:
        """Parse and validate; raises :class:`ConfigError` naming the bad field."""
        return cls(parse_policy(text, source))

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise config_error("<file>", f"cannot read {path}: {exc}", str(path)) from exc
        return cls.from_toml(text, source=str(path))

    @property
    def version(self) -> str:
        return self.spec.version

    def model(self, name: str) -> ModelPolicy:
        """The compiled rules that apply to model ``name`` (its section or the fallback)."""
        return self.spec.model(name)

    def reasons(self, model: str) -> list[str]:
        """The reason dictionary of ``model``: ``reason_codes`` index into it. Do not mutate."""
        mp = self.spec.model(model)
        out = self._reason_lists.get(mp.name)
        if out is None:
            out = self._reason_lists[mp.name] = list(mp.reasons)
        return out

    def decide_frame(self, frame: PredictionFrame, now_ms: int,
                     override_risk: np.ndarray | None = None) -> FrameDecisions:
        """Decisions for one frame (one model version), as columns — the router's contract.

        ``override_risk`` (one probability per row, from the online override-risk
        model) feeds the ``tiers.review.max_override_risk`` rule; None = no model yet.
        """
        mp = self.spec.model(frame.model_name)
        cols = FrameColumns(frame, override_risk)
        g = decide_group(mp, frame.model_version, cols, now_ms, self.spec.salt, self.state)
        if self.state.budgets:
            apply_budgets(self.spec, self.state, g, cols.ids, cols.emitted, mp.audit_priority, mp.review_sla_ms,
                           now_ms)
        return FrameDecisions(self.spec.version, g.tiers, self.reasons(frame.model_name), g.codes, g.propensity,
                              g.audited, g.priority, g.due)

    def decide_batch(self, events: list[dict], now_ms: int) -> list[Decision]:
        """One :class:`Decision` per decoded ``PredictionEvent`` dict, in input order.

        Events of several models and versions may be mixed; budgets see them in input order.
        """
        n = len(events)
        if n == 0:
            return []
        salt, state = self.spec.salt, self.state
        models = set(map(_get_model, events))
        model_versions = set(map(_get_version, events)) if len(models) == 1 else ()
        if len(model_versions) == 1:  # the common case: one model version per batch
            model, version = models.pop(), model_versions.pop()
            mp = self.spec.model(model)
            cols = EventColumns(events, model)
            g = decide_group(mp, version, cols, now_ms, salt, state)
            if state.budgets:
                apply_budgets(self.spec, state, g, cols.ids, cols.emitted, mp.audit_priority, mp.review_sla_ms,
                               now_ms)
            rs = self.reasons(model)
            reasons = [rs[c] for c in g.codes.tolist()]
            versions = [version] * n
        else:
            groups: dict[tuple[str, str], list[int]] = {}
            for i, e in enumerate(events):
                groups.setdefault((e["model_name"], e["model_version"]), []).append(i)
            g, emitted, reasons, versions, audit_prio, review_sla = self._decide_mixed(groups, events, now_ms)
            if state.budgets:
                ids = [e["event_id"] for e in events]
                apply_budgets(self.spec, state, g, ids, emitted, audit_prio, review_sla, now_ms)
                for i in np.flatnonzero(g.codes == R_DEFERRED).tolist():
                    reasons[i] = "budget_deferred"
        pv = self.spec.version
        tiers = [TIERS[t] for t in g.tiers.tolist()]
        return [Decision(t, r, pv, v, p, a, pr, d) for t, r, v, p, a, pr, d in zip(
            tiers, reasons, versions, g.propensity.tolist(), g.audited.tolist(), g.priority.tolist(), g.due.tolist())]

    def _decide_mixed(self, groups: dict, events: list[dict], now_ms: int):
        n = len(events)
        out = GroupDecisions(np.zeros(n, np.int8), np.zeros(n, np.int32), np.zeros(n), np.zeros(n, bool),
                     np.zeros(n, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int32))
        emitted = np.zeros(n, dtype=np.int64)
        audit_prio = np.zeros(n, dtype=np.int64)
        review_sla = np.zeros(n, dtype=np.int64)
        reasons: list = [None] * n
        versions: list = [None] * n
        for (model, version), idx in groups.items():
            mp = self.spec.model(model)
            cols = EventColumns([events[i] for i in idx], model)
            g = decide_group(mp, version, cols, now_ms, self.spec.salt, self.state)
            ix = np.asarray(idx, dtype=np.intp)
            for name in GroupDecisions.__slots__:
                getattr(out, name)[ix] = getattr(g, name)
            emitted[ix] = cols.emitted
            audit_prio[ix] = mp.audit_priority
            review_sla[ix] = mp.review_sla_ms
            rs = self.reasons(model)
            for i, c in zip(idx, g.codes.tolist()):
                reasons[i] = rs[c]
                versions[i] = version
        return out, emitted, reasons, versions, audit_prio, review_sla


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """What a replacement or an overlay did, for the log and the policy-events topic.

    ``kind``: ``replace`` (a new policy file), ``overlay_set`` / ``overlay_cleared``
    (a runtime adjustment such as drift tightening or the threshold autopilot) or
    ``rejected`` (an invalid policy was refused; the old one stays in force).
    """

    old_version: str
    new_version: str
    changed_at_ms: int
    source: str
    changed: bool
    kind: str = "replace"
    model: str | None = None
    overlay: str | None = None
    evidence: Mapping[str, float] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Overlay:
    """A runtime adjustment of one model's auto tier (see :func:`loopline.processors.policy.model.adjust_model`)."""

    name: str
    model: str
    min_confidence: float | None = None
    min_confidence_delta: float = 0.0
    audit_rate: float | None = None
    audit_rate_delta: float = 0.0
    evidence: Mapping[str, float] = field(default_factory=dict)
    set_at_ms: int = 0

    @property
    def tag(self) -> str:
        params = (self.min_confidence, self.min_confidence_delta, self.audit_rate, self.audit_rate_delta)
        digest = hashlib.blake2b(repr(params).encode(), digest_size=3).hexdigest()
        return f"{self.name}:{self.model}@{digest}"


class PolicyHolder:
    """The policy in force: a base policy (from a file) plus runtime overlays.

    :meth:`replace` swaps in a new base policy atomically or not at all;
    :meth:`set_overlay` / :meth:`clear_overlay` move one model's auto-tier
    threshold and audit rate (drift tightening, the autopilot). Overlays survive
    a replacement. The effective version is the base version plus one tag per
    overlay (``fraud-7+drift:fraud@1a2b3c``), so every decision names the rules
    that produced it.

    >>> holder = PolicyHolder(Policy.from_toml('version = "1"'))
    >>> holder.replace('version = "2"', now_ms=5).new_version
    '2'
    >>> holder.replace('version = "3"\\nbogus = 1')
    Traceback (most recent call last):
    ...
    loopline.processors.errors.ConfigError: bogus: unknown option (known here: ...) (policy <replace>)
    >>> holder.version
    '2'
    >>> change = holder.set_overlay("drift", "fraud", min_confidence_delta=0.05, now_ms=6)
    >>> change.new_version.startswith("2+drift:fraud@"), holder.policy.model("fraud").min_confidence
    (True, 0.95)
    >>> holder.clear_overlay("drift", "fraud", now_ms=7).new_version
    '2'
    """

    def __init__(self, policy: Policy) -> None:
        self._base = policy
        self._policy = policy
        self._overlays: dict[tuple[str, str], Overlay] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> PolicyHolder:
        return cls(Policy.from_file(path))

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def base(self) -> Policy:
        return self._base

    @property
    def version(self) -> str:
        return self._policy.version

    @property
    def overlays(self) -> dict[tuple[str, str], Overlay]:
        return dict(self._overlays)

    def replace(self, text: str, source: str = "<replace>", now_ms: int | None = None) -> PolicyChange:
        """Validate ``text`` and make it the base policy, keeping budgets, version ages and overlays.

        On any error the old policy stays in force and :class:`ConfigError` is raised.
        The same version with different content is refused: decisions name the
        policy version, so one version must mean one rule set.
        """
        new = Policy.from_toml(text, source)
        old_base, old_version = self._base, self.version
        now_ms = _now(now_ms)
        if new.version == old_base.version:
            if new.spec.digest != old_base.spec.digest:
                raise config_error("version", f"is still {old_base.version!r} but the rules changed: bump the version",
                                   source)
            return PolicyChange(old_version, old_version, now_ms, source, changed=False)
        new.state.adopt(old_base.state)
        self._base = new
        self._rebuild()
        return PolicyChange(old_version, self.version, now_ms, source, changed=True)

    def replace_from_file(self, path: str | Path, now_ms: int | None = None) -> PolicyChange:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise config_error("<file>", f"cannot read {path}: {exc}", str(path)) from exc
        return self.replace(text, source=str(path), now_ms=now_ms)

    def set_overlay(self, name: str, model: str, *, min_confidence: float | None = None,
                    min_confidence_delta: float = 0.0, audit_rate: float | None = None,
                    audit_rate_delta: float = 0.0, evidence: Mapping[str, float] | None = None,
                    now_ms: int | None = None) -> PolicyChange:
        """Set (or move) overlay ``name`` on ``model``; at most one overlay per (name, model)."""
        for key, value in (("min_confidence", min_confidence), ("audit_rate", audit_rate)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise config_error(f"overlay.{name}.{key}", f"must be in [0, 1], got {value!r}", "<overlay>")
        now_ms = _now(now_ms)
        ev = {k: float(v) for k, v in (evidence or {}).items()}
        ov = Overlay(name, model, min_confidence, min_confidence_delta, audit_rate, audit_rate_delta, ev, now_ms)
        old_version = self.version
        self._overlays[(name, model)] = ov
        self._rebuild()
        return PolicyChange(old_version, self.version, now_ms, f"overlay:{name}", self.version != old_version,
                            "overlay_set", model, name, ev)

    def clear_overlay(self, name: str, model: str, evidence: Mapping[str, float] | None = None,
                      now_ms: int | None = None) -> PolicyChange | None:
        """Remove overlay ``name`` from ``model``; None if there was none."""
        if (name, model) not in self._overlays:
            return None
        old_version = self.version
        del self._overlays[(name, model)]
        self._rebuild()
        ev = {k: float(v) for k, v in (evidence or {}).items()}
        return PolicyChange(old_version, self.version, _now(now_ms), f"overlay:{name}", True, "overlay_cleared",
                            model, name, ev)

    def _rebuild(self) -> None:
        base = self._base
        if not self._overlays:
            self._policy = base
            return
        spec = base.spec
        models = dict(spec.models)
        for ov in sorted(self._overlays.values(), key=lambda o: (o.model, o.name)):
            mp = models.get(ov.model) or replace(spec.fallback, name=ov.model)
            models[ov.model] = adjust_model(mp, min_confidence=ov.min_confidence,
                                            min_confidence_delta=ov.min_confidence_delta,
                                            audit_rate=ov.audit_rate, audit_rate_delta=ov.audit_rate_delta)
        tags = "+".join(ov.tag for _, ov in sorted(self._overlays.items()))
        eff = replace(spec, version=f"{spec.version}+{tags}", models=MappingProxyType(models))
        self._policy = Policy(eff, state=base.state)  # same budgets and version ages

    def decide_frame(self, frame: PredictionFrame, now_ms: int,
                     override_risk: np.ndarray | None = None) -> FrameDecisions:
        return self._policy.decide_frame(frame, now_ms, override_risk)

    def decide_batch(self, events: list[dict], now_ms: int) -> list[Decision]:
        return self._policy.decide_batch(events, now_ms)


def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


__all__ = ["ConfigError", "Decision", "Overlay", "Policy", "PolicyChange", "PolicyHolder", "uniforms"]
