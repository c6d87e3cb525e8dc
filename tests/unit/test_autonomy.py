"""Autonomy follows the audited error: drop on a sequential alarm, restore inside budget (issue #17, items 1-2)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from loopline.connectors.simulator import FraudTraffic
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.quality.autonomy import AutonomyLevel, AutonomyMonitor, AutonomySpec, wilson
from loopline.streams.autonomy import OVERLAY, AutonomyRuntime

POLICY = 'version = "p1"\n[models.fraud.tiers.auto]\nmin_confidence = 0.9\naudit_rate = 0.02\n'
SPEC = AutonomySpec(error_budget=0.015)


def audited(e: dict, true: str, propensity: float, reviewed_at: int) -> dict:
    return {"event_id": e["event_id"], "model_name": e["model_name"], "tier": "auto", "audit": True,
            "effective_label": true, "sampling_propensity": propensity, "prediction": e, "reviewed_at": reviewed_at}


def run(traffic: FraudTraffic, holder: PolicyHolder, rt: AutonomyRuntime, start: int, stop: int):
    """Route ``start..stop`` with the policy in force; audited auto events come back answered at once.

    Returns (changes with the event index they happened at, audit share of auto decisions)."""
    changes, audits, autos = [], 0, 0
    for ch in traffic.iter_chunks(chunk_size=500, start=start, stop=stop):
        decisions = holder.decide_batch(ch.events, now_ms=ch.events[0]["emitted_at"])
        for i, (e, d) in enumerate(zip(ch.events, decisions)):
            if d.tier != "auto":
                continue
            autos += 1
            if d.reason == "audit":
                audits += 1
                for c in rt.on_examples([audited(e, ch.true_label(i), d.sampling_propensity, e["emitted_at"])]):
                    changes.append((ch.start + i, c))
    return changes, audits / max(autos, 1)


@pytest.fixture(scope="module")
def drifted():
    """Concept change at event 60,000; autonomy monitored over 0..90,000 at a 2% audit rate."""
    traffic = FraudTraffic(seed=8, n_events=90_000, concept_drift_at=60_000)
    holder = PolicyHolder(Policy.from_toml(POLICY))
    rt = AutonomyRuntime(holder, lambda m: SPEC)
    before, share_before = run(traffic, holder, rt, 0, 60_000)
    after, share_after = run(traffic, holder, rt, 60_000, 90_000)
    return holder, rt, before, after, share_before, share_after


def test_no_change_of_autonomy_on_the_stationary_stretch(drifted):
    holder, rt, before, *_ = drifted
    assert before == []
    assert rt.monitors["fraud"].outcomes > 500  # it did read the audits: about 2% of 54k auto events


def test_autonomy_drops_after_the_concept_change_with_evidence(drifted):
    holder, rt, _, after, share_before, share_after = drifted
    lowers = [(at, c) for at, c in after if c.action == "lower"]
    assert lowers, "the concept change was not detected from the audits"
    at, first = lowers[0]
    assert at - 60_000 < 30_000
    ev = first.evidence
    assert ev["cusum"] > ev["cusum_h"] and ev["error_budget"] == 0.015
    assert 0.0 <= ev["lower"] <= ev["estimate"] <= ev["upper"] <= 1.0
    ov = holder.overlays[(OVERLAY, "fraud")]
    mp = holder.policy.model("fraud")
    assert mp.min_confidence > 0.9 and mp.audit_rate > 0.02  # higher threshold, more audits
    assert ov.evidence["level"] >= 1
    assert share_after > 2 * share_before  # the raised audit rate is in force on the decisions
    assert OVERLAY + ":fraud@" in holder.version  # every decision names the lowered autonomy
    pending = [pc for pc in rt.pending if pc.kind == "overlay_set"]
    assert pending and pending[0].evidence["estimate"] == pytest.approx(ev["estimate"])


def test_autonomy_restored_when_the_audited_error_is_back_inside_budget():
    holder = PolicyHolder(Policy.from_toml(POLICY))
    rt = AutonomyRuntime(holder, lambda m: SPEC)
    ev = {"event_id": "", "model_name": "fraud", "predicted_label": "legit", "confidence": 0.93, "emitted_at": 0}
    n = 0

    def feed(wrong: bool, propensity: float = 0.1):
        nonlocal n
        n += 1
        e = dict(ev, event_id=f"e{n}", emitted_at=n)
        return rt.on_examples([audited(e, "fraud" if wrong else "legit", propensity, n)])

    changes = [c for _ in range(6) for c in feed(True)]
    assert [c.action for c in changes] == ["lower"] and holder.policy.model("fraud").audit_rate > 0.02
    level = rt.monitors["fraud"].level
    restored = []
    for _ in range(2000):
        restored += feed(False)
        if rt.monitors["fraud"].level == 0:
            break
    assert [c.action for c in restored] == ["restore"] * level
    assert (OVERLAY, "fraud") not in holder.overlays and holder.version == "p1"
    assert holder.policy.model("fraud").audit_rate == 0.02 and holder.policy.model("fraud").min_confidence == 0.9
    # the restore rests on enough outcomes and its upper bound is inside the budget
    last = restored[-1].evidence
    assert last["since_change_upper"] <= 0.015 or last["below_cusum"] > SPEC.cusum_h
    assert last["since_change_n"] >= SPEC.min_restore
    logged = []

    async def log(pc):
        logged.append(pc)

    assert asyncio.run(rt.flush(log)) == len(logged) == 1 + level
    assert [pc.kind for pc in logged][-1] == "overlay_cleared"


def test_confident_errors_go_straight_to_the_largest_human_share():
    spec = AutonomySpec(error_budget=0.02, levels=(AutonomyLevel(0.1, 0.03), AutonomyLevel(0.3, 0.06)))
    confident, doubtful = AutonomyMonitor("m", spec), AutonomyMonitor("m", spec)
    for i in range(8):
        confident.observe(True, 0.02, 0.99, i)
        doubtful.observe(True, 0.02, 0.91, i)
    assert confident.level == 2 and doubtful.level == 1


def test_propensity_weighting_makes_the_estimate_unbiased():
    """Low-confidence auto events audited at 10x the rate of the rest: the weighted estimate is the
    auto tier's true error, the unweighted one is not."""
    rng = np.random.default_rng(1)
    m = AutonomyMonitor("m", AutonomySpec(error_budget=0.5, alarm_ratio=1.5, half_life=1e9))
    wrong_low, wrong_high = 0.2, 0.02  # error rates of the two bands; the bands are equally common
    plain = []
    for i in range(40_000):
        low = rng.random() < 0.5
        p = 0.2 if low else 0.02
        if rng.random() >= p:
            continue
        wrong = rng.random() < (wrong_low if low else wrong_high)
        plain.append(wrong)
        m.observe(bool(wrong), p, 0.9, i)
    truth = (wrong_low + wrong_high) / 2
    est = m.status()
    assert est["lower"] <= truth <= est["upper"], est
    assert abs(np.mean(plain) - truth) > 0.05  # unweighted would be far off


def test_wilson_bounds_contain_the_proportion():
    lo, hi = wilson(0.1, 50, 1.96)
    assert lo < 0.1 < hi and wilson(0.0, 0, 1.96) == (0.0, 1.0)


def test_no_restore_while_the_error_stays_above_budget():
    rng = np.random.default_rng(5)
    m = AutonomyMonitor("m", AutonomySpec(error_budget=0.015))
    for i in range(10):
        m.observe(True, 0.02, 0.93, i)
    assert m.level >= 1
    moves = [m.observe(bool(rng.random() < 0.03), 0.04, 0.93, 10 + i) for i in range(5000)]
    assert not [c for c in moves if c is not None and c.action == "restore"]


def test_known_reviewer_noise_neither_alarms_nor_hides_a_breach():
    rng = np.random.default_rng(9)
    noisy = AutonomySpec(error_budget=0.02, label_noise=0.03)
    calm, naive = AutonomyMonitor("m", noisy), AutonomyMonitor("m", AutonomySpec(error_budget=0.02))
    for i in range(5000):  # true auto error 1%, answers flipped 3% of the time
        seen = (rng.random() < 0.01) != (rng.random() < 0.03)
        calm.observe(seen, 0.05, 0.95, i)
        naive.observe(seen, 0.05, 0.95, i)
    assert calm.level == 0 and naive.changes  # noise read as model error raises false alarms
    assert calm.status()["lower"] <= 0.01 <= calm.status()["upper"]
    for i in range(3000):  # true error 6%
        calm.observe((rng.random() < 0.06) != (rng.random() < 0.03), 0.05, 0.95, 5000 + i)
    assert calm.changes and calm.changes[0].action == "lower"
