"""Poisoning guards: rate limit, influence cap, reputation, audit agreement, the promotion gate."""
from __future__ import annotations

import pytest

from loopline.connectors.simulator import FraudTraffic
from loopline.connectors.simulator.corrections import corrected_examples
from loopline.processors.learning import LearnerConfig, ModelLearner
from loopline.processors.learning.gate import PromotionGate, in_holdout
from loopline.processors.learning.guards import AnswerLedger, RateGuard, Reputation
from tests.unit.test_learning import example


def test_rate_limit_holds_excess_per_window_and_reports_it():
    lr = ModelLearner("fraud", LearnerConfig(reviewer_max_per_window=3, rate_window_ms=1000, reviewer_max_share=1.0))
    items = [(example(i, "legit", "legit", 0.1, 1.0, reviewer="fast"), 0, i) for i in range(5)]
    out = lr.learn_batch(items)
    assert out.counts == {"learned": 3, "held": 2}
    assert lr.rate.held_by_reviewer == {"fast": 2} and [h["offset"] for h in lr.rate.held] == [3, 4]
    later = example(9, "legit", "legit", 0.1, 1.0, reviewer="fast")
    later["reviewed_at"] += 1000  # next window
    assert lr.learn_batch([(later, 0, 9)]).counts == {"learned": 1}


def test_influence_cap_limits_one_reviewers_share_of_a_window():
    g = RateGuard(window_ms=10_000, max_per_window=1000, max_share=0.5, min_for_share=10)
    decisions = [g.admit("loud" if i % 4 else "quiet", 0) for i in range(40)]
    loud = [d for i, d in enumerate(decisions) if i % 4]
    assert "influence_cap" in loud
    admitted_loud = sum(1 for d in loud if d is None)
    assert admitted_loud <= 0.5 * (admitted_loud + 10) + 1


def test_reputation_follows_agreement_and_sets_label_weight():
    rep = Reputation(min_reputation=0.8)
    assert rep.weight("new") == pytest.approx(0.8)  # prior 9/10
    for i in range(40):
        rep.observe("good", True)
        rep.observe("bad", i % 10 >= 3)  # agrees 70% of the time
    assert rep.weight("good") > 0.9
    assert rep.score("bad") < 0.8 and rep.weight("bad") == 0.0


def test_audit_and_escalation_answers_score_the_lower_tier():
    led = AnswerLedger()
    assert led.record("e1", "analyst", "legit", "review") == []
    assert led.record("e1", "senior", "fraud", "escalate") == [("analyst", False)]
    assert led.record("e1", "late", "fraud", "review") == [("late", True)]


def test_gate_needs_every_tier_and_logs_why():
    g = PromotionGate(margin=0.05, min_examples=5, metric="accuracy")
    assert g.evaluate() == (False, ["no holdout examples yet (holdout = gold items by hash split)"])
    for _ in range(10):
        g.score("review", "fraud", ("legit", 0.3), ("fraud", 0.8))
    g.score("auto", "legit", ("legit", 0.9), ("legit", 0.9))
    passed, reasons = g.evaluate()
    assert not passed and reasons[0] == "tier auto: 1 holdout examples, need 5"
    assert reasons[1].startswith("tier review: challenger accuracy 1.0000 beats champion 0.0000")
    for _ in range(5):
        g.score("auto", "legit", ("legit", 0.9), ("legit", 0.9))
    passed, reasons = g.evaluate()
    assert not passed and "lift +0.0000 < margin 0.05" in reasons[0]


def test_holdout_split_is_deterministic_and_near_the_share():
    ids = [f"evt-{i}" for i in range(4000)]
    share = sum(in_holdout(i, 0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28 and [in_holdout(i, 0.25) for i in ids] == [in_holdout(i, 0.25) for i in ids]


@pytest.fixture(scope="module")
def traffic():
    return FraudTraffic(seed=5, n_events=100_000)


def run(traffic, team, min_reputation: float):
    examples, truth = corrected_examples(traffic, 0, 100_000, reviewers=team, seed=5)
    lr = ModelLearner("fraud", LearnerConfig(positive_label="fraud", min_reputation=min_reputation,
                                             reviewer_max_share=1.0, reviewer_max_per_window=10**9))
    for i, (eid, label) in enumerate(truth.items()):
        if i % 5 == 0:  # every 5th reviewed event is a gold item; half of those form the holdout
            lr.add_gold(eid, label)
    out = lr.learn_batch([(e, 0, i) for i, e in enumerate(examples)])
    return lr, out


def test_thirty_percent_flipping_reviewer_is_blocked_by_the_gate_and_loses_reputation(traffic):
    honest, _ = run(traffic, (("honest", 0.03),), min_reputation=0.0)
    passed, reasons = honest.gate.evaluate()
    assert passed, reasons  # control: the gate can pass, an honest challenger beats this champion
    # no reputation guard: the poisoned challenger learns every label, and the gate stops it
    poisoned, out = run(traffic, (("reviewer-x", 0.3),), min_reputation=0.0)
    assert out.counts["learned"] > 5000
    passed, reasons = poisoned.gate.evaluate()
    assert not passed
    assert any("log_loss" in r and "worse than champion" in r for r in reasons), reasons
    # with the reputation guard, next to two honest reviewers: its labels stop being admitted early
    team, out = run(traffic, (("h1", 0.03), ("h2", 0.03), ("reviewer-x", 0.3)), min_reputation=0.8)
    rep = team.reputation.report()
    x = rep["reviewer-x"]
    assert x["reputation"] < 0.8 < min(rep["h1"]["reputation"], rep["h2"]["reputation"])
    assert x["admitted_before_drop"] is not None and x["admitted_before_drop"] < 100
    assert x["admitted"] < 0.05 * rep["h1"]["admitted"]
    assert out.counts["rejected"] > 1000
    print(f"reviewer-x: {x['admitted_before_drop']} labels admitted before its reputation dropped, "
          f"{x['admitted']} in all; gate on the team's challenger: {team.gate.evaluate()}")
