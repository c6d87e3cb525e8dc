"""The routing policy file: parsing, validation and the compiled per-model rules.

A policy file is TOML (``policies/example.toml`` documents every option)::

    version = "fraud-2024-06-01"          # required; recorded on every decision
    sampling_salt = "loopline"            # optional; changes every audit draw
    [defaults]                            # a model section every model starts from
    [models.fraud]                        # overrides for the model named "fraud"
    [models."*"]                          # used for models without a section
    [budget.review]                       # global review budget (see loopline.processors.policy.state)
    [budget.escalate]

A model's effective section is ``[defaults]`` deep-merged with ``[models.<name>]``
(or ``[models."*"]`` for a model without a section): tables merge key by key,
everything else — including rule lists — is replaced. Unknown options are
errors, so a typo never silently disables a rule.

Every validation error is a :class:`~loopline.processors.errors.ConfigError` whose
message starts with the dotted path of the bad field, and whose ``field``
attribute holds that path:

>>> try:
...     parse_policy('version = "1"\\n[models.fraud.tiers.auto]\\nmin_confidence = "high"')
... except ConfigError as exc:
...     print(exc.field); print(exc)
models.fraud.tiers.auto.min_confidence
models.fraud.tiers.auto.min_confidence: must be a number in [0, 1], got 'high' (policy <string>)
"""
from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from loopline.processors.errors import ConfigError
from loopline.processors.policy.quality_options import parse_autopilot, parse_slices
from loopline.processors.policy.tables import Table as _Table
from loopline.processors.policy.tables import _show, config_error, fmt_number  # noqa: F401 - re-exported

AUTO, REVIEW, ESCALATE = 0, 1, 2
OPS = (">=", ">", "<=", "<", "==", "!=")

# reason codes every model's reason dictionary starts with
R_AUDIT, R_OVERSAMPLE, R_DEFERRED, R_NEW_VERSION = 0, 1, 2, 3
FIXED_REASONS = ("audit", "oversample_low_confidence", "budget_deferred", "new_model_version")

@dataclass(frozen=True, slots=True)
class RiskRule:
    """``risk[attribute] <op> value`` fires the rule; a missing attribute fires only with ``match_missing``."""

    attribute: str
    op: str
    value: float
    match_missing: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ContextRule:
    """``context[attribute]`` in (or, with ``negate``, not in) ``values``."""

    attribute: str
    values: frozenset
    negate: bool
    match_missing: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """The compiled rules for one model (times in milliseconds)."""

    name: str
    positive_label: str | None
    min_confidence: float
    min_confidence_by_class: Mapping[str, float]
    audit_rate: float
    oversample_below: float | None
    oversample_rate: float
    audit_priority: int
    review_sla_ms: int
    review_priority: int
    review_rules: tuple
    escalate_sla_ms: int
    escalate_priority: int
    escalate_below_confidence: float | None
    escalate_rules: tuple
    max_override_risk: float | None
    new_version_rate: float
    new_version_events: int
    new_version_ms: int
    established_versions: frozenset
    reasons: tuple[str, ...] = ()
    codes: Mapping[str, int] = field(default_factory=dict)
    personal_data: frozenset = frozenset()  # feature/risk/context keys masked for reviewers without clearance
    autopilot: Any = None  # loopline.processors.policy.quality_options.AutopilotSpec | None
    drift: Mapping | None = None  # drift-policy options (loopline.processors.drift.policy.DriftPolicy arguments)
    slices: tuple = ()  # loopline.processors.policy.quality_options.SliceSpec, ...
    labels: tuple[str, ...] = ()  # the declared label set (empty = undeclared: any label accepted)
    guidelines: str = ""  # reviewer guidelines shown on the task page

    def code(self, reason: str) -> int:
        return self.codes[reason]


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """Tasks per minute for one tier, as a token bucket of ``burst`` tokens on event time."""

    tier: str
    tasks_per_minute: float
    burst: float
    defer_below_priority: int | None
    deferred_audit_rate: float


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A validated policy file."""

    version: str
    description: str
    salt: bytes
    models: Mapping[str, ModelPolicy]
    fallback: ModelPolicy
    budgets: Mapping[str, BudgetSpec]
    source: str
    digest: str

    def model(self, name: str) -> ModelPolicy:
        return self.models.get(name, self.fallback)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _risk_rule(t: _Table) -> RiskRule:
    attr = t.string("attribute")
    op = t.string("op", choices=OPS)
    value = t.number("value")
    rule = RiskRule(attr, op, value, t.boolean("match_missing", False), f"risk:{attr}{op}{fmt_number(value)}")
    t.finish()
    return rule


def _context_rule(t: _Table) -> ContextRule:
    attr = t.string("attribute")
    has_in, has_not = "in" in t.data, "not_in" in t.data
    if has_in == has_not:
        raise t.error("in", "give exactly one of 'in' or 'not_in'")
    key = "in" if has_in else "not_in"
    values = t.strings(key)
    words = "in" if has_in else "not in"
    rule = ContextRule(attr, frozenset(values), not has_in, t.boolean("match_missing", False),
                       f"context:{attr} {words} [{','.join(values)}]")
    t.finish()
    return rule


def _model(data: dict, path: str, name: str, source: str) -> ModelPolicy:
    """Validate one (possibly partial) model section and compile it with built-in defaults."""
    m = _Table(data, path, source)
    positive = m.string("positive_label", None)
    personal = frozenset(m.strings("personal_data", []))
    labels, guidelines = _labels(m)
    if labels and positive is not None and positive not in labels:
        raise m.error("positive_label", f"must be one of the declared labels {list(labels)}, got {positive!r}")
    tiers = m.table("tiers")
    a, r, e = tiers.table("auto"), tiers.table("review"), tiers.table("escalate")
    tiers.finish()
    min_conf = a.number("min_confidence", 0.9, 0, 1)
    by_class_t = a.table("min_confidence_by_class")
    by_class = {k: by_class_t.number(k, lo=0, hi=1) for k in list(by_class_t.data)}
    by_class_t.finish()
    audit_rate = a.number("audit_rate", 0.0, 0, 1)
    band = a.number("oversample_below", None, 0, 1)
    over_rate = a.number("oversample_rate", audit_rate, 0, 1)
    if over_rate < audit_rate:
        raise a.error("oversample_rate", f"must be >= audit_rate ({fmt_number(audit_rate)}), got {over_rate!r}")
    if "oversample_rate" in a.data and band is None:
        raise a.error("oversample_below", "is required when oversample_rate is set")
    audit_priority = a.integer("priority", 0)
    a.finish()
    review_sla = r.number("sla_minutes", 240.0, 0, lo_open=True)
    review_priority = r.integer("priority", 100)
    review_rules = tuple([_risk_rule(t) for t in r.tables("risk")] + [_context_rule(t) for t in r.tables("context")])
    max_risk = r.number("max_override_risk", None, 0, 1)
    r.finish()
    esc_sla = e.number("sla_minutes", 60.0, 0, lo_open=True)
    esc_priority = e.integer("priority", 200)
    esc_below = e.number("below_confidence", None, 0, 1)
    esc_rules = tuple([_risk_rule(t) for t in e.tables("risk")] + [_context_rule(t) for t in e.tables("context")])
    e.finish()
    nv = m.table("new_version")
    nv_rate = nv.number("review_rate", 0.0, 0, 1)
    nv_events = nv.integer("events", 0, lo=0)
    nv_hours = nv.number("hours", 0.0, 0)
    established = frozenset(nv.strings("established", []))
    if nv_rate > 0 and not nv_events and not nv_hours:
        raise nv.error("events", "set events and/or hours when review_rate > 0 (how long a version counts as new)")
    nv.finish()
    autopilot = parse_autopilot(m.raw("autopilot"), m.at("autopilot"), source) if "autopilot" in m.data else None
    slices = parse_slices(m.raw("slices"), m.at("slices"), source) if "slices" in m.data else ()
    drift = _drift(m, name, source) if "drift" in m.data else None
    m.finish()
    return _compile(ModelPolicy(
        name, positive, min_conf, MappingProxyType(by_class), audit_rate, band, over_rate, audit_priority,
        round(review_sla * 60_000), review_priority, review_rules, round(esc_sla * 60_000), esc_priority,
        esc_below, esc_rules, max_risk, nv_rate, nv_events, round(nv_hours * 3_600_000), established,
        personal_data=personal, autopilot=autopilot, slices=slices, drift=drift, labels=labels,
        guidelines=guidelines))


MAX_LABELS, MAX_GUIDELINES = 100, 5000


def _labels(m: _Table) -> tuple[tuple[str, ...], str]:
    """``labels = [...]`` (distinct non-empty strings, at most MAX_LABELS, at least two) and
    ``guidelines = "..."`` (at most MAX_GUIDELINES characters)."""
    labels = m.strings("labels", [])
    if labels:
        if len(set(labels)) != len(labels):
            raise m.error("labels", f"must not repeat a label, got {list(labels)}")
        if not 2 <= len(labels) <= MAX_LABELS:
            raise m.error("labels", f"must declare between 2 and {MAX_LABELS} labels, got {len(labels)}")
    guidelines = m.raw("guidelines", "")
    if not isinstance(guidelines, str) or len(guidelines) > MAX_GUIDELINES:
        raise m.error("guidelines", f"must be a string of at most {MAX_GUIDELINES} characters, got {_show(guidelines)[:60]}")
    return labels, guidelines.strip()


def _drift(m: _Table, name: str, source: str) -> Mapping:
    """``[models.<name>.drift]``: the model's drift policy (mode alert_only | tighten_routing | retrain)."""
    from loopline.processors.drift.policy import DriftPolicyBook

    raw = m.raw("drift")
    if not isinstance(raw, dict):
        raise m.error("drift", f"must be a table like {{mode = \"tighten_routing\"}}, got {_show(raw)}")
    try:
        DriftPolicyBook({name: raw}).policy_for(name)
    except ConfigError as exc:
        raise config_error(m.at("drift"), str(exc), source) from None
    return MappingProxyType(dict(raw))


def _compile(mp: ModelPolicy) -> ModelPolicy:
    """Fill in the reason dictionary (``reasons``/``codes``) from the thresholds and rules."""
    reasons = list(FIXED_REASONS)
    reasons += [f"confidence>={fmt_number(mp.min_confidence)}", f"confidence<{fmt_number(mp.min_confidence)}"]
    for label, thr in mp.min_confidence_by_class.items():
        reasons += [f"confidence[{label}]>={fmt_number(thr)}", f"confidence[{label}]<{fmt_number(thr)}"]
    if mp.escalate_below_confidence is not None:
        reasons.append(f"confidence<{fmt_number(mp.escalate_below_confidence)}")
    reasons += [rule.reason for rule in mp.escalate_rules + mp.review_rules]
    if mp.max_override_risk is not None:
        reasons.append(f"override_risk>{fmt_number(mp.max_override_risk)}")
    reasons = list(dict.fromkeys(reasons))  # a reason string may be produced by two rules
    return replace(mp, reasons=tuple(reasons), codes=MappingProxyType({s: i for i, s in enumerate(reasons)}))


def adjust_model(mp: ModelPolicy, *, min_confidence: float | None = None, min_confidence_delta: float = 0.0,
                 audit_rate: float | None = None, audit_rate_delta: float = 0.0) -> ModelPolicy:
    """``mp`` with moved auto-tier thresholds and audit rates (a runtime overlay; values clipped to [0, 1]).

    ``min_confidence`` replaces the global threshold (per-class thresholds move by
    the same amount); ``min_confidence_delta`` is then added to every threshold.
    ``audit_rate`` replaces the audit rate; ``audit_rate_delta`` is added to the
    audit and oversample rates. Reasons are recompiled, so decisions name the
    thresholds actually applied.
    """
    def clip(x: float) -> float:
        return float(min(1.0, max(0.0, round(x, 6))))

    shift = 0.0 if min_confidence is None else min_confidence - mp.min_confidence
    shift += min_confidence_delta
    audit = mp.audit_rate if audit_rate is None else audit_rate
    over_extra = mp.oversample_rate - mp.audit_rate
    audit = clip(audit + audit_rate_delta)
    return _compile(replace(
        mp, min_confidence=clip(mp.min_confidence + shift),
        min_confidence_by_class=MappingProxyType({k: clip(v + shift) for k, v in mp.min_confidence_by_class.items()}),
        audit_rate=audit, oversample_rate=clip(audit + over_extra)))


def _budget(t: _Table, tier: str) -> BudgetSpec:
    rate = t.number("tasks_per_minute", lo=0, lo_open=True)
    burst = t.number("burst", max(rate, 1.0), lo=1)
    if tier == "escalate":
        defer, deferred_rate = None, 0.0  # escalations are never deferred
    else:
        defer = t.integer("defer_below_priority", None)
        deferred_rate = t.number("deferred_audit_rate", 0.0, 0, 1)
    spec = BudgetSpec(tier, rate, burst, defer, deferred_rate)
    t.finish()
    return spec


def parse_policy(text: str, source: str = "<string>") -> PolicySpec:
    """Parse and validate a policy file; raise :class:`ConfigError` naming the bad field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise config_error("<toml>", f"not valid TOML: {exc}", source) from exc
    top = _Table(data, "", source)
    version = top.string("version")
    description = top.raw("description", "")
    if not isinstance(description, str):
        raise top.error("description", f"must be a string, got {_show(description)}")
    salt_text = top.string("sampling_salt", "loopline")
    defaults = top.table("defaults").data
    _model(defaults, "defaults", "defaults", source)  # errors in [defaults] name [defaults]
    models_t = top.table("models")
    models: dict[str, ModelPolicy] = {}
    fallback = None
    for name in list(models_t.data):
        section = models_t.table(name)
        _model(section.data, section.path, name, source)  # errors name the model's own field
        compiled = _model(_merge(defaults, section.data), section.path, name, source)
        if name == "*":
            fallback = compiled
        else:
            models[name] = compiled
    models_t.finish()
    if fallback is None:
        fallback = _model(defaults, "defaults", "*", source)
    budget_t = top.table("budget")
    budgets = {}
    for tier in ("review", "escalate"):
        if tier in budget_t.data:
            budgets[tier] = _budget(budget_t.table(tier), tier)
    budget_t.finish()
    top.finish()
    salt = hashlib.blake2b(salt_text.encode(), digest_size=16).digest()
    digest = hashlib.sha256(text.encode()).hexdigest()
    return PolicySpec(version, description, salt, MappingProxyType(models), fallback,
                      MappingProxyType(budgets), source, digest)
