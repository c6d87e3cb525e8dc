"""Slice statistics: bounded cardinality, per-slice figures against a reference, worst first, merge."""
from __future__ import annotations

import json

import numpy as np
import pytest

from loopline.processors.policy.quality_options import SliceSpec
from loopline.processors.policy.threshold import ThresholdPolicy
from loopline.processors.quality.reliability import ece_reference
from loopline.processors.quality.slices import MISSING, OTHER, SliceStats, SpaceSaving, sketch_capacity, slice_labels
from loopline.processors.testing import make_events
from loopline.processors.wire.frame import frames_from_events

T0 = 1_735_689_600_000
COUNTRY = SliceSpec("country", "context", top_k=3)
AMOUNT = SliceSpec("amount", "risk", top_k=3, edges=(100.0, 1000.0))


def events(countries: list[str], amounts=None, seed: int = 1) -> list[dict]:
    evs = make_events(len(countries), seed=seed, start_ms=T0)
    for i, (e, c) in enumerate(zip(evs, countries)):
        e["context"] = {"country": c, "channel": "web"}
        if amounts is not None:
            e["risk"] = {"amount": amounts[i]}
    return evs


def route(stats: SliceStats, evs: list[dict]):
    policy = ThresholdPolicy(auto=0.9, escalate=0.6)
    for frame in frames_from_events(evs):
        stats.update_routed(frame, policy.decide_frame(frame, now_ms=T0))


def example(e: dict, label, audit: bool, prop: float, reason: str = "audit") -> dict:
    return {"event_id": e["event_id"], "model_name": e["model_name"], "model_version": "v1", "label": label,
            "effective_label": label, "tier": "auto" if audit else "review", "audit": audit,
            "sampling_propensity": prop, "reason": reason, "reviewed_at": T0 + 10, "task_created_at": T0,
            "prediction": e}


def test_space_saving_keeps_heavy_hitters_and_bounds_counters():
    sk = SpaceSaving(sketch_capacity(3))
    rng = np.random.default_rng(0)
    stream = [f"c{int(x)}" for x in rng.zipf(1.5, 20000) if x < 1000]
    for i in range(0, len(stream), 500):
        vals, counts = np.unique(stream[i:i + 500], return_counts=True)
        sk.offer(dict(zip(vals.tolist(), counts.tolist())))
        assert len(sk.counts) <= 32
    true = {v: stream.count(v) for v in set(stream)}
    heavy = sorted(true, key=true.get, reverse=True)[:3]
    assert set(sk.top(3)) == set(heavy)
    assert all(sk.counts[v] >= true[v] for v in sk.counts)  # space-saving never underestimates


def test_cardinality_is_bounded_and_nothing_is_lost():
    rng = np.random.default_rng(1)
    countries = ["DE"] * 3000 + ["FR"] * 2000 + ["US"] * 1000 + [f"X{i}" for i in rng.integers(0, 500, 4000)]
    rng.shuffle(countries)
    st = SliceStats(lambda m: (COUNTRY,))
    for part in np.array_split(np.array(countries), 20):
        route(st, events(part.tolist(), seed=len(part)))
    rows = st.report("fraud")["context:country"]
    assert {r["slice"] for r in rows} == {"DE", "FR", "US", OTHER}
    assert sum(r["events"] for r in rows) == len(countries)
    assert next(r for r in rows if r["slice"] == "DE")["events"] == 3000
    assert st.cells_count() <= 2 * (sketch_capacity(COUNTRY.top_k) + 1)


def test_slice_figures_match_reference_and_worst_come_first():
    rng = np.random.default_rng(2)
    countries = rng.choice(["DE", "FR", "PT"], 3000).tolist()
    evs = events(countries)
    st = SliceStats(lambda m: (COUNTRY,))
    route(st, evs)
    decisions = ThresholdPolicy(auto=0.9, escalate=0.6).decide_frame(frames_from_events(evs)[0], T0)
    exs = []
    for e, tier in zip(evs, decisions.tiers.tolist()):
        wrong_p = {"DE": 0.02, "FR": 0.05, "PT": 0.2}[e["context"]["country"]]
        if tier == 0 and rng.random() < 0.1:  # audit 10% of auto
            audit, prop = True, 0.1
        elif tier != 0:
            audit, prop = False, 1.0
        else:
            continue
        if rng.random() < 0.1:
            exs.append(example(e, None, audit, prop))  # unsure: an answer without a label
            continue
        other = "fraud" if e["predicted_label"] == "legit" else "legit"
        exs.append(example(e, other if rng.random() < wrong_p else e["predicted_label"], audit, prop))
    st.update_examples(exs)
    rows = st.report("fraud")["context:country"]
    assert [r["slice"] for r in rows] == ["PT", "FR", "DE"]  # worst verified error first
    for r in rows:
        mine = [x for x in exs if x["prediction"]["context"]["country"] == r["slice"]]
        lab = [x for x in mine if x["effective_label"] is not None]
        y = np.array([x["effective_label"] == x["prediction"]["predicted_label"] for x in lab], dtype=float)
        w = np.array([1 / x["sampling_propensity"] for x in lab])
        conf = np.array([x["prediction"]["confidence"] for x in lab])
        ev = [e for e, t in zip(evs, decisions.tiers.tolist()) if e["context"]["country"] == r["slice"]]
        human = sum(1 for e, t, a in zip(evs, decisions.tiers.tolist(), decisions.audited.tolist())
                    if e["context"]["country"] == r["slice"] and (t != 0 or a))
        assert r["events"] == len(ev) and r["answers"] == len(mine) and r["labelled"] == len(lab)
        assert r["verified_error_rate"] == pytest.approx(1 - (w * y).sum() / w.sum(), abs=1e-9)
        assert r["override_rate"] == pytest.approx(1 - y.mean(), abs=1e-9)
        assert r["label_coverage"] == (len(lab) / human if human else None)
        assert r["calibration_error"] == pytest.approx(ece_reference(conf, y, w), abs=1e-9)
        assert sum(v for v in r["routed_share"].values()) == pytest.approx(1.0)
    assert set(st.eligible("fraud")) == {"country=DE", "country=FR", "country=PT"}


def test_risk_bins_and_missing_values():
    assert slice_labels(AMOUNT) == ["amount<100", "100<=amount<1000", "amount>=1000"]
    evs = events(["DE"] * 5, amounts=[5.0, 100.0, 999.0, 1000.0, 5000.0])
    evs2 = events(["DE"] * 2, seed=3)
    for e in evs2:
        e["risk"] = None
    st = SliceStats(lambda m: (AMOUNT,))
    route(st, evs)
    route(st, evs2)
    rows = {r["slice"]: r["events"] for r in st.report("fraud")["risk:amount"]}
    assert rows == {"amount<100": 1, "100<=amount<1000": 2, "amount>=1000": 2, MISSING: 2}


def test_models_without_slices_cost_nothing():
    st = SliceStats(lambda m: ())
    route(st, events(["DE"] * 10))
    assert st.cells_count() == 0 and st.snapshot()["models"] == {}


def test_merge_of_two_workers_equals_one():
    countries = ["DE", "FR", "US", "PT"] * 250
    evs = events(countries)
    one = SliceStats(lambda m: (SliceSpec("country", "context", top_k=4), AMOUNT))
    route(one, evs)
    a = SliceStats(lambda m: (SliceSpec("country", "context", top_k=4), AMOUNT))
    b = SliceStats(lambda m: (SliceSpec("country", "context", top_k=4), AMOUNT))
    route(a, evs[:500])
    route(b, evs[500:])
    a.merge_state(json.loads(json.dumps(b.to_state())))
    assert a.report("fraud") == one.report("fraud")
