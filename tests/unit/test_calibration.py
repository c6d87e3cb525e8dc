"""Calibration against an offline numpy reference computed from the same examples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from loopline.processors.quality.reliability import BinnedOutcomes, CalibrationTracker, ece_reference, z_one_sided

T0 = 1_735_689_600_000


def make_examples(n: int, seed: int = 0, t0: int = T0, spread_ms: int = 1000, model: str = "fraud",
                  versions=("v1", "v2")) -> list[dict]:
    """Joined TrainingExample dicts: audits (propensity 0.02 / 0.1), reviews (1.0), unlabelled and
    zero-propensity rows."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        conf = float(rng.uniform(0.5, 1.0))
        kind = rng.choice(["audit", "audit_over", "review_conf", "review_risk", "escalate"])
        audit = kind.startswith("audit")
        prop = {"audit": 0.02, "audit_over": 0.1}.get(kind, 1.0)
        reason = {"audit": "audit", "audit_over": "oversample_low_confidence", "review_conf": "confidence<0.9",
                  "review_risk": "risk:amount>=2000", "escalate": "confidence<0.6"}[kind]
        pred = "legit" if rng.random() < 0.8 else "fraud"
        right = rng.random() < conf ** 2  # over-confident
        label = pred if right else ("fraud" if pred == "legit" else "legit")
        if rng.random() < 0.05:
            label = None  # unsure: no effective label
        if rng.random() < 0.01:
            prop = 0.0  # a broken propensity is skipped, never divides by zero
        out.append({
            "event_id": f"e{i}", "model_name": model, "model_version": versions[i % len(versions)],
            "label": label, "effective_label": label, "tier": "auto" if audit else "review", "audit": audit,
            "sampling_propensity": prop, "reason": reason,
            "reviewed_at": t0 + int(rng.integers(0, spread_ms)), "task_created_at": t0,
            "prediction": {"predicted_label": pred, "confidence": conf, "context": {"country": "DE"},
                           "risk": {"amount": 10.0}},
        })
    return out


def reference(examples: list[dict], bins: int, eligible_only: bool = False, version: str | None = None):
    rows = [e for e in examples if e["effective_label"] is not None and e["sampling_propensity"] > 0
            and (version is None or e["model_version"] == version)
            and (not eligible_only or e["audit"] or e["reason"].startswith("confidence"))]
    conf = np.array([e["prediction"]["confidence"] for e in rows])
    y = np.array([e["effective_label"] == e["prediction"]["predicted_label"] for e in rows], dtype=float)
    w = 1.0 / np.array([e["sampling_propensity"] for e in rows])
    b = np.minimum((conf * bins).astype(int), bins - 1)
    return conf, y, w, b


def test_fine_bins_match_reference_exactly():
    ex = make_examples(3000, seed=1)
    t = CalibrationTracker(bins=200, display_bins=10)
    counted = t.update_examples(ex)
    conf, y, w, b = reference(ex, 200)
    assert counted == len(conf) < len(ex)
    cell = t.cell("fraud")
    for i in range(200):
        m = b == i
        assert cell.n[i] == m.sum()
        assert cell.correct[i] == int(y[m].sum())
        assert cell.sums[0, i] == pytest.approx(w[m].sum(), abs=1e-9)
        assert cell.sums[2, i] == pytest.approx((w[m] * y[m]).sum(), abs=1e-9)
        assert cell.sums[4, i] == pytest.approx((w[m] * conf[m]).sum(), abs=1e-9)


def test_reliability_curve_and_ece_match_reference():
    ex = make_examples(4000, seed=2)
    t = CalibrationTracker(bins=200, display_bins=10)
    t.update_examples(ex)
    conf, y, w, _ = reference(ex, 10)
    b10 = np.minimum((conf * 10).astype(int), 9)
    curve = t.curve("fraud")
    assert [round(c["lo"] * 10) for c in curve] == sorted(set(b10.tolist()))
    for c in curve:
        m = b10 == round(c["lo"] * 10)
        assert c["n"] == m.sum()
        assert c["accuracy"] == pytest.approx((w[m] * y[m]).sum() / w[m].sum(), abs=1e-9)
        assert c["confidence"] == pytest.approx((w[m] * conf[m]).sum() / w[m].sum(), abs=1e-9)
        assert c["ci"][0] <= c["accuracy"] <= c["ci"][1]
    assert t.ece("fraud") == pytest.approx(ece_reference(conf, y, w, bins=10), abs=1e-9)
    # per version
    conf1, y1, w1, _ = reference(ex, 10, version="v1")
    assert t.ece("fraud", "v1") == pytest.approx(ece_reference(conf1, y1, w1, bins=10), abs=1e-9)
    # the simulated model is over-confident: accuracy conf^2 < conf, ECE clearly positive
    assert t.ece("fraud") > 0.1


def test_unweighted_ece_would_be_wrong():
    """The weights matter: audits stand for 1/propensity events each."""
    ex = make_examples(4000, seed=3)
    t = CalibrationTracker()
    t.update_examples(ex)
    conf, y, w, _ = reference(ex, 10)
    assert abs(ece_reference(conf, y, None) - ece_reference(conf, y, w)) > 1e-3
    assert t.ece("fraud") == pytest.approx(ece_reference(conf, y, w), abs=1e-9)


def test_auto_eligible_tail_error_matches_reference():
    ex = make_examples(3000, seed=4)
    t = CalibrationTracker(bins=200)
    t.update_examples(ex)
    conf, y, w, b = reference(ex, 200, eligible_only=True)
    tail = t.cell("fraud", kind="eligible").tail(z_one_sided(0.95))
    for k in (100, 150, 180, 190, 199):
        m = b >= k
        est = 1 - (w[m] * y[m]).sum() / w[m].sum()
        assert tail["estimate"][k] == pytest.approx(est, abs=1e-9)
        assert tail["n"][k] == m.sum()
        assert tail["n_eff"][k] == pytest.approx(w[m].sum() ** 2 / (w[m] ** 2).sum(), rel=1e-9)
        assert tail["lower"][k] <= est <= tail["upper"][k]
    # risk-routed reviews are not eligible: they reach a human whatever the threshold
    assert t.cell("fraud", kind="eligible").n.sum() < t.cell("fraud").n.sum()


def test_merge_of_two_workers_equals_one_worker():
    ex = make_examples(3000, seed=5, spread_ms=3 * 60_000)
    one = CalibrationTracker(window_ms=60_000)
    one.update_examples(ex)
    a, b = CalibrationTracker(window_ms=60_000), CalibrationTracker(window_ms=60_000)
    a.update_examples(ex[::2])
    b.update_examples(ex[1::2])
    merged = CalibrationTracker.from_state(json.loads(json.dumps(a.to_state())))
    merged.merge(CalibrationTracker.from_state(json.loads(json.dumps(b.to_state()))))
    for scope in ("all_time", "recent", "current"):
        x, y = one.cell("fraud", scope=scope), merged.cell("fraud", scope=scope)
        assert np.array_equal(x.n, y.n) and np.array_equal(x.correct, y.correct)
        assert np.allclose(x.sums, y.sums, atol=1e-9)
    assert merged.ece("fraud") == pytest.approx(one.ece("fraud"), abs=1e-9)


def test_windows_roll_and_stay_bounded():
    t = CalibrationTracker(window_ms=60_000)
    t.update_examples(make_examples(200, seed=6, t0=T0))
    t.update_examples(make_examples(200, seed=7, t0=T0 + 60_000))
    recent_two = t.cell("fraud", scope="recent").n.sum()
    t.update_examples(make_examples(200, seed=8, t0=T0 + 120_000))
    # the first window fell out of "recent"; all-time keeps everything
    assert t.cell("fraud", scope="recent").n.sum() < recent_two + t.cell("fraud", scope="current").n.sum()
    assert t.cell("fraud", scope="current").n.sum() == reference(make_examples(200, seed=8), 10)[0].size
    assert t.cell("fraud").n.sum() == sum(reference(make_examples(200, seed=s), 10)[0].size for s in (6, 7, 8))
    # an answer older than the previous window counts only in all-time (and as late)
    t.update_examples(make_examples(10, seed=9, t0=T0))
    assert t.to_state()["late_outcomes"] == reference(make_examples(10, seed=9), 10)[0].size
    assert len(t.to_state()["windows"]) == 2


def test_models_beyond_cap_share_other_key():
    t = CalibrationTracker(max_keys=2)
    for m in ("a", "b", "c"):
        t.update_examples(make_examples(20, seed=1, model=m, versions=("v1",)))
    assert t.models() == ["__other__", "a", "b"]


def test_bins_must_nest():
    with pytest.raises(ValueError):
        CalibrationTracker(bins=25, display_bins=10)


def test_empty_cell_has_no_ece():
    assert BinnedOutcomes(10).ece() is None
    assert CalibrationTracker().snapshot()["models"] == {}


def test_rows_that_cannot_count_are_skipped_not_fatal():
    ex = make_examples(50, seed=10)
    good = [e for e in ex if e["effective_label"] is not None and e["sampling_propensity"] > 0]
    bad = [dict(good[0], event_id="nan"), dict(good[1], event_id="big")]
    bad[0]["prediction"] = dict(good[0]["prediction"], confidence=float("nan"))
    bad[1]["prediction"] = dict(good[1]["prediction"], confidence=1.5)
    t = CalibrationTracker()
    assert t.update_examples(ex + bad) == len(good)
    assert t.cell("fraud").n.sum() == len(good)
