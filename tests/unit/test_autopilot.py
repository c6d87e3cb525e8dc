"""Threshold autopilot: one table row per guard rail, plus evidence and policy parsing."""
from __future__ import annotations

import math

import numpy as np
import pytest

from loopline.processors.errors import ConfigError
from loopline.processors.policy.quality_options import AutopilotSpec, parse_autopilot, parse_slices
from loopline.processors.quality.autopilot import Autopilot
from loopline.processors.quality.reliability import BinnedOutcomes, z_one_sided

BINS = 200


def cell(*groups: tuple[float, int, int, float]) -> BinnedOutcomes:
    """Outcomes from (confidence, count, errors, weight) groups."""
    conf, correct, w = [], [], []
    for c, n, errors, weight in groups:
        conf += [c] * n
        correct += [False] * errors + [True] * (n - errors)
        w += [weight] * n
    conf_a = np.array(conf)
    b = np.minimum((conf_a * BINS).astype(int), BINS - 1)
    return BinnedOutcomes.from_rows(BINS, b, np.array(correct), np.array(w), conf_a)


SPEC = AutopilotSpec(error_budget=0.01, confidence=0.95, min_verified=500, max_step=0.02, min_slice_verified=300,
                     max_tighten_step=0.04)
CLEAN = cell((0.905, 3000, 3, 1.0), (0.955, 3000, 3, 1.0), (0.995, 3000, 0, 1.0))  # ~0.1% error everywhere
# errors concentrated below 0.95: 5% error in [0.90, 0.95), clean above
STEEP = cell((0.945, 3000, 150, 1.0), (0.955, 3000, 3, 1.0), (0.995, 3000, 0, 1.0))

CASES = [
    # id, current, pooled, slices, drift, expected action, reason, expected new threshold
    ("insufficient_data_holds", 0.95, cell((0.96, 100, 0, 1.0)), {}, False, "hold", "insufficient_data", 0.95),
    ("loosen_bounded_by_max_step", 0.97, CLEAN, {}, False, "loosen", "within_budget", 0.95),
    ("loosen_stops_at_target", 0.96, STEEP, {}, False, "loosen", "within_budget", 0.95),
    ("at_target_holds", 0.95, STEEP, {}, False, "hold", "at_target", 0.95),
    ("drift_edge_tightens_even_if_data_would_loosen", 0.93, CLEAN, {}, True, "tighten", "drift", 0.97),
    ("breach_tightens_by_the_full_step", 0.92, STEEP, {}, False, "tighten", "budget_breach", 0.96),
    ("tighten_bounded_by_max_tighten_step", 0.80, STEEP, {}, False, "tighten", "budget_breach", 0.84),
    # 0.67% error is below the budget, but its upper bound is not: go to the first threshold not yet measured
    ("upper_bound_over_budget_tightens", 0.945, cell((0.945, 200, 4, 1.0), (0.955, 400, 0, 1.0)), {}, False,
     "tighten", "over_budget", 0.95),
    ("breach_with_little_data_tightens", 0.95, cell((0.96, 150, 30, 1.0)), {}, False, "tighten", "budget_breach",
     0.99),
    ("too_little_data_for_a_breach", 0.95, cell((0.96, 60, 12, 1.0)), {}, False, "hold", "insufficient_data", 0.95),
    ("drift_edge_without_data_tightens", 0.95, BinnedOutcomes(BINS), {}, True, "tighten", "drift", 0.99),
    # the pool at >= 0.90 looks fine only thanks to clean low-confidence outcomes; >= 0.945 is over: stop at 0.95
    ("no_lucky_dip_below_a_bad_threshold", 0.96, cell((0.905, 3000, 0, 1.0), (0.945, 600, 30, 1.0),
                                                      (0.995, 3000, 0, 1.0)), {}, False, "loosen", "within_budget",
     0.95),
    ("cap_at_max_threshold", 1.0, cell((0.999, 200, 60, 1.0)), {}, False, "hold", "at_max_threshold", 1.0),
    ("slice_with_data_binds", 0.93, CLEAN, {"country=PT": STEEP}, False, "tighten", "over_budget", 0.95),
    ("small_slice_ignored", 0.97, CLEAN, {"country=PT": cell((0.905, 100, 50, 1.0))}, False, "loosen",
     "within_budget", 0.95),
]


@pytest.mark.parametrize("name,current,pooled,slices,drift,action,reason,new", CASES, ids=[c[0] for c in CASES])
def test_guard_rails(name, current, pooled, slices, drift, action, reason, new):
    ap = Autopilot(lambda m: SPEC, drift_active=lambda m: drift)
    adj = ap.evaluate("fraud", current, pooled, slices, now_ms=1)
    assert (adj.action, adj.reason) == (action, reason)
    assert adj.new_threshold == pytest.approx(new)
    bound = SPEC.max_step if action == "loosen" else SPEC.max_tighten_step
    assert abs(adj.new_threshold - adj.old_threshold) <= bound + 1e-12


def test_slice_binds_and_is_named():
    # the pool alone would allow 0.50; the PT slice needs 0.95, and it has enough outcomes
    ap = Autopilot(lambda m: SPEC)
    pooled = cell((0.905, 20000, 20, 1.0), (0.955, 3000, 3, 1.0))
    adj = ap.evaluate("fraud", 0.97, pooled, {"country=PT": STEEP, "country=DE": CLEAN}, now_ms=1)
    assert adj.action == "loosen" and adj.new_threshold == pytest.approx(0.95)
    assert adj.binding_slice == "country=PT" and adj.evidence["target"] == pytest.approx(0.95)
    free = Autopilot(lambda m: SPEC).evaluate("fraud", 0.97, pooled, {}, now_ms=1)
    assert free.evidence["target"] < 0.95 and free.binding_slice is None


def test_drift_tightens_once_then_holds_until_data_says_otherwise():
    drift = {"on": True}
    ap = Autopilot(lambda m: SPEC, drift_active=lambda m: drift["on"])
    first = ap.evaluate("fraud", 0.95, CLEAN, {}, now_ms=1)
    second = ap.evaluate("fraud", first.new_threshold, CLEAN, {}, now_ms=2)
    assert first.action == "tighten" and (second.action, second.reason) == ("hold", "drift_active")
    drift["on"] = False
    later = 1 + SPEC.window_minutes * 60_000  # the cooldown after a tightening is one window
    assert ap.evaluate("fraud", second.new_threshold, CLEAN, {}, now_ms=later - 1).reason == "cooldown"
    third = ap.evaluate("fraud", second.new_threshold, CLEAN, {}, now_ms=later)
    assert third.action == "loosen"
    drift["on"] = True  # a new drift episode tightens again
    assert ap.evaluate("fraud", third.new_threshold, CLEAN, {}, now_ms=later + 1).reason == "drift"


def test_breach_in_the_current_window_alone_tightens():
    # the recent windows are diluted by clean older outcomes; the current window shows 4% errors
    pooled = cell((0.96, 5000, 30, 1.0))
    fresh = cell((0.96, 500, 20, 1.0))
    ap = Autopilot(lambda m: SPEC)
    assert ap.evaluate("fraud", 0.95, pooled, {}, now_ms=1).action == "loosen"
    adj = Autopilot(lambda m: SPEC).evaluate("fraud", 0.95, pooled, {}, now_ms=1, fresh=fresh)
    assert (adj.action, adj.reason) == ("tighten", "budget_breach")
    assert adj.evidence["fresh_estimate"] == pytest.approx(0.04) and adj.evidence["fresh_n"] == 500


def test_an_unmeasured_target_never_loosens():
    # every measured threshold is over budget; the next grid point has no data: tighten towards it, never loosen
    over = cell((0.905, 3000, 90, 1.0))
    ap = Autopilot(lambda m: SPEC)
    assert ap.evaluate("fraud", 0.90, over, {}, now_ms=1).action == "tighten"
    adj = Autopilot(lambda m: SPEC).evaluate("fraud", 0.99, over, {}, now_ms=1)
    assert (adj.action, adj.reason) == ("hold", "no_evidence_to_loosen")


def test_evidence_is_the_estimate_interval_and_sample_size():
    ap = Autopilot(lambda m: SPEC)
    adj = ap.evaluate("fraud", 0.97, STEEP, {}, now_ms=7)
    ev = adj.evidence
    tail = STEEP.tail(z_one_sided(0.95))
    k = round(adj.new_threshold * BINS)
    assert ev["estimate"] == pytest.approx(tail["estimate"][k]) and ev["n"] == tail["n"][k] == 3000 + 3000
    assert ev["lower"] <= ev["estimate"] <= ev["upper"] <= SPEC.error_budget
    assert ev["estimate"] == pytest.approx(3 / 6000)
    assert ev["old_threshold"] == 0.97 and ev["new_threshold"] == adj.new_threshold
    assert ev["budget"] == 0.01 and ev["confidence"] == 0.95
    assert all(isinstance(v, float) and math.isfinite(v) for v in ev.values())
    status = ap.status("fraud")
    assert status["threshold"] == adj.new_threshold and status["adjustments"][-1]["evidence"] == ev


def test_weights_count_audits_as_many_events():
    # 600 audits (weight 50) with 9 errors = 1.5% error: over a 1% budget although the raw count looks small
    audits = cell((0.96, 600, 9, 50.0))
    adj = Autopilot(lambda m: SPEC).evaluate("fraud", 0.95, audits, {}, now_ms=1)
    assert adj.action == "tighten" and adj.evidence["current_estimate"] == pytest.approx(0.015)


def test_disabled_and_absent_specs_hold():
    off = AutopilotSpec(error_budget=0.01, enabled=False)
    assert Autopilot(lambda m: off).evaluate("fraud", 0.9, CLEAN, {}, 1).reason == "disabled"
    assert Autopilot(lambda m: None).evaluate("fraud", 0.9, CLEAN, {}, 1).action == "hold"


def test_history_is_bounded():
    ap = Autopilot(lambda m: SPEC, history=3)
    t = 0.99
    for i in range(10):
        t = ap.evaluate("fraud", t, cell((0.905, 100, 30, 1.0)), {}, i).new_threshold if i % 2 else 0.99
    assert len(ap.status("fraud")["adjustments"]) <= 3


# ---------------------------------------------------------------- parsing
def test_parse_autopilot_defaults_and_values():
    spec = parse_autopilot({"error_budget": 0.02, "confidence": 0.9, "min_verified": 100, "max_step": 0.05,
                            "interval_seconds": 5, "window_minutes": 10, "min_threshold": 0.6,
                            "max_threshold": 0.99}, "models.fraud.autopilot", "p.toml")
    assert (spec.error_budget, spec.confidence, spec.min_verified, spec.max_step) == (0.02, 0.9, 100, 0.05)
    assert spec.min_slice_verified == 100 and spec.enabled


@pytest.mark.parametrize("table,field", [
    ({}, "error_budget"),
    ({"error_budget": 0}, "error_budget"),
    ({"error_budget": 1.0}, "error_budget"),
    ({"error_budget": 0.01, "confidence": 1.0}, "confidence"),
    ({"error_budget": 0.01, "min_verified": 0}, "min_verified"),
    ({"error_budget": 0.01, "max_step": 0}, "max_step"),
    ({"error_budget": 0.01, "min_threshold": 0.9, "max_threshold": 0.8}, "max_threshold"),
    ({"error_budget": 0.01, "enabled": "yes"}, "enabled"),
    ({"error_budget": 0.01, "budget": 0.01}, "budget"),
])
def test_parse_autopilot_errors_name_the_field(table, field):
    with pytest.raises(ConfigError) as err:
        parse_autopilot(table, "models.fraud.autopilot", "p.toml")
    assert err.value.field == f"models.fraud.autopilot.{field}"
    assert str(err.value).startswith(f"models.fraud.autopilot.{field}: ")


def test_parse_slices():
    specs = parse_slices([{"attribute": "country", "top_k": 5},
                          {"attribute": "amount", "kind": "risk", "edges": [100, 1000]}], "models.f.slices", "p")
    assert [(s.name, s.top_k, s.edges) for s in specs] == [("context:country", 5, ()),
                                                           ("risk:amount", 3, (100.0, 1000.0))]


@pytest.mark.parametrize("value,field", [
    ({"attribute": "x"}, "models.f.slices"),
    ([{"kind": "context"}], "models.f.slices[0].attribute"),
    ([{"attribute": "c", "top_k": 0}], "models.f.slices[0].top_k"),
    ([{"attribute": "c", "top_k": 1000}], "models.f.slices[0].top_k"),
    ([{"attribute": "a", "kind": "risk"}], "models.f.slices[0].edges"),
    ([{"attribute": "a", "kind": "risk", "edges": []}], "models.f.slices[0].edges"),
    ([{"attribute": "a", "kind": "bins"}], "models.f.slices[0].kind"),
    ([{"attribute": "c"}, {"attribute": "c"}], "models.f.slices[1].attribute"),
    ([{"attribute": "c", "values": ["x"]}], "models.f.slices[0].values"),
])
def test_parse_slices_errors_name_the_field(value, field):
    with pytest.raises(ConfigError) as err:
        parse_slices(value, "models.f.slices", "p")
    assert err.value.field == field
