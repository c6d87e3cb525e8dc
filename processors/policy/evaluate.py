"""The evaluation core of :class:`loopline.processors.policy.policy.Policy`: precedence, sampling and budgets over columns.

``decide_group`` applies the rules of one model to one (model, version) group
of predictions in the documented precedence (see :mod:`loopline.processors.policy.policy`)
with numpy masks; ``apply_budgets`` then runs the token buckets over the
review and escalate decisions in input order — the only per-event loop, and
only over the events that would create a task.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loopline.processors.policy.model import (
    AUTO,
    ESCALATE,
    R_AUDIT,
    R_DEFERRED,
    R_NEW_VERSION,
    R_OVERSAMPLE,
    REVIEW,
    ModelPolicy,
    PolicySpec,
    fmt_number,
)
from loopline.processors.policy.rules import Columns, rule_mask
from loopline.processors.policy.state import RoutingState

_INV53 = 2.0 ** -53
_fmt = fmt_number


def uniforms(event_ids: Sequence[str], salt: bytes) -> np.ndarray:
    """Two independent uniforms in [0, 1) per event id, shape (n, 2), stable across runs and machines.

    >>> u = uniforms(["a", "b"], b"")
    >>> u.shape, bool(((u >= 0) & (u < 1)).all()), bool((u == uniforms(["a", "b"], b"")).all())
    ((2, 2), True, True)
    """
    h = hashlib.blake2b
    buf = b"".join([h(i.encode(), digest_size=16, salt=salt).digest() for i in event_ids])
    return (np.frombuffer(buf, dtype="<u8").reshape(-1, 2) >> np.uint64(11)) * _INV53


@dataclass(slots=True)
class GroupDecisions:
    """Decisions for one (model, version) group before budgets, as columns."""

    tiers: np.ndarray
    codes: np.ndarray
    propensity: np.ndarray
    audited: np.ndarray
    priority: np.ndarray
    due: np.ndarray
    urgency: np.ndarray


def decide_group(mp: ModelPolicy, version: str, cols: Columns, now_ms: int, salt: bytes,
                 state: RoutingState) -> GroupDecisions:
    """Tier, reason code, propensity, audit flag, priority and due time per row, before budgets.

    Counts the rows in ``state.versions`` (the age of ``version``).
    """
    n = cols.n
    conf = cols.conf
    tiers = np.zeros(n, dtype=np.int8)
    codes = np.zeros(n, dtype=np.int32)
    open_ = np.ones(n, dtype=bool)

    def assign(mask: np.ndarray, tier: int, code) -> None:
        m = mask & open_
        tiers[m] = tier
        codes[m] = code if np.isscalar(code) else code[m]
        open_[m] = False

    for rule in mp.escalate_rules:
        assign(rule_mask(rule, cols), ESCALATE, mp.code(rule.reason))
    if mp.escalate_below_confidence is not None:
        thr = mp.escalate_below_confidence
        assign(conf < thr, ESCALATE, mp.code(f"confidence<{_fmt(thr)}"))
    for rule in mp.review_rules:
        assign(rule_mask(rule, cols), REVIEW, mp.code(rule.reason))
    # confidence thresholds, per predicted class where configured
    by_class = mp.min_confidence_by_class
    g_pass, g_fail = mp.code(f"confidence>={_fmt(mp.min_confidence)}"), mp.code(f"confidence<{_fmt(mp.min_confidence)}")
    if by_class:
        labels = cols.labels
        thr_l = np.array([by_class.get(lb, mp.min_confidence) for lb in labels], dtype=np.float64)
        pass_l = np.array([mp.code(f"confidence[{lb}]>={_fmt(by_class[lb])}") if lb in by_class else g_pass
                           for lb in labels], dtype=np.int32)
        fail_l = np.array([mp.code(f"confidence[{lb}]<{_fmt(by_class[lb])}") if lb in by_class else g_fail
                           for lb in labels], dtype=np.int32)
        lc = cols.label_codes
        thr_row, pass_row, fail_row = thr_l[lc], pass_l[lc], fail_l[lc]
        assign(conf < thr_row, REVIEW, fail_row)
    else:
        pass_row = g_pass
        assign(conf < mp.min_confidence, REVIEW, g_fail)
    # override risk: confident predictions a human is likely to overturn go to review
    risk = getattr(cols, "override_risk", None)
    if mp.max_override_risk is not None and risk is not None:
        assign(risk > mp.max_override_risk, REVIEW, mp.code(f"override_risk>{_fmt(mp.max_override_risk)}"))
    # draws only for the rows still open (auto candidates); 1.0 never passes a rate test
    u = np.ones((n, 2))
    if mp.audit_rate > 0 or mp.oversample_rate > 0 or mp.new_version_rate > 0:
        rows = np.flatnonzero(open_)
        if len(rows) == n:
            u = uniforms(cols.ids, salt)
        elif len(rows):
            ids = cols.ids
            u[rows] = uniforms([ids[i] for i in rows.tolist()], salt)
    # new model version: a share of what would be auto goes to review while the version is new
    ordinal, age = state.versions.observe(cols.model, version, cols.emitted)
    if mp.new_version_rate > 0 and version not in mp.established_versions and open_.any():
        new = np.zeros(n, dtype=bool)
        if mp.new_version_events:
            new |= ordinal < mp.new_version_events
        if mp.new_version_ms:
            new |= age < mp.new_version_ms
        assign(new & (u[:, 1] < mp.new_version_rate), REVIEW, R_NEW_VERSION)
    # auto, with audit sampling
    auto = open_
    if np.isscalar(pass_row):
        codes[auto] = pass_row
    else:
        codes[auto] = pass_row[auto]
    if mp.oversample_below is not None:
        band = conf < mp.oversample_below
        rate = np.where(band, mp.oversample_rate, mp.audit_rate)
    else:
        band = None
        rate = np.full(n, mp.audit_rate)
    audited = auto & (u[:, 0] < rate)
    if audited.any():
        if band is None:
            codes[audited] = R_AUDIT
        else:
            codes[audited & band] = R_OVERSAMPLE
            codes[audited & ~band] = R_AUDIT
    propensity = np.where(auto, rate, 1.0)
    # urgency: the expected error in percent — the producer's own doubt, and once the learning loop has an
    # override-risk model, the chance a human overturns the prediction (noisy-or, as ReviewCapacity's value)
    wrong = 1.0 - conf if risk is None else 1.0 - conf * (1.0 - np.clip(risk, 0.0, 1.0))
    urgency = np.rint(wrong * 100.0).astype(np.int32)
    esc = tiers == ESCALATE
    human = ~auto | audited
    base = np.where(esc, mp.escalate_priority, np.where(tiers == REVIEW, mp.review_priority, mp.audit_priority))
    priority = np.where(human, base + urgency, 0).astype(np.int32)
    due = np.where(esc, now_ms + mp.escalate_sla_ms, np.where(human, now_ms + mp.review_sla_ms, 0)).astype(np.int64)
    return GroupDecisions(tiers, codes, propensity, audited, priority, due, urgency)


def apply_budgets(spec: PolicySpec, state: RoutingState, g: GroupDecisions, ids: list[str], emitted: np.ndarray,
                   audit_priority, review_sla_ms, now_ms: int) -> None:
    """Run the review and escalate buckets over the decisions in input order (in place)."""
    counters = state.counters
    bucket = state.budgets.get("review")
    if bucket is not None:
        rows = np.flatnonzero(g.tiers == REVIEW)
        if len(rows):
            cut = bucket.spec.defer_below_priority
            cut = np.iinfo(np.int64).max if cut is None else cut
            take = bucket.take
            deferred = []
            for i, t, p in zip(rows.tolist(), emitted[rows].tolist(), g.priority[rows].tolist()):
                if not take(t):
                    if p < cut:
                        deferred.append(i)
                    else:
                        counters.over_budget_review += 1
            if deferred:
                d = np.asarray(deferred, dtype=np.intp)
                rate = bucket.spec.deferred_audit_rate
                aud = (uniforms([ids[i] for i in deferred], spec.salt)[:, 0] < rate) if rate > 0 \
                    else np.zeros(len(d), dtype=bool)
                g.tiers[d] = AUTO
                g.codes[d] = R_DEFERRED
                g.propensity[d] = rate
                g.audited[d] = aud
                ap = audit_priority if np.isscalar(audit_priority) else audit_priority[d]
                sla = review_sla_ms if np.isscalar(review_sla_ms) else review_sla_ms[d]
                g.priority[d] = np.where(aud, ap + g.urgency[d], 0)
                g.due[d] = np.where(aud, now_ms + sla, 0)
                counters.deferred += len(deferred)
                counters.deferred_audited += int(aud.sum())
    bucket = state.budgets.get("escalate")
    if bucket is not None:
        rows = np.flatnonzero(g.tiers == ESCALATE)
        take = bucket.take
        for t in emitted[rows].tolist():
            if not take(t):
                counters.over_budget_escalate += 1  # escalations are never deferred
