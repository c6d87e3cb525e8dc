"""The learner's label set: declared, else every label seen; the positive label honoured; with and
without ``class_probabilities`` (issue #17, item 3).

The stream is the simulator's fraud traffic relabelled as a binary churn model
(fraud -> ``churn`` at a 30% rate, legit -> ``stay``) with a concept change,
corrected by a 3%-noisy reviewer; learned in-process, scored on the next
stretch of traffic by ground truth.
"""
from __future__ import annotations

import pytest

from loopline.connectors.simulator import FraudTraffic
from loopline.connectors.simulator.corrections import corrected_examples
from loopline.processors.learning import LearnerConfig, ModelLearner
from loopline.processors.learning.features import example_features
from loopline.processors.learning.pipelines import make_challenger
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.streams.learning.runtime import model_config

RENAME = {"fraud": "churn", "legit": "stay"}
OPEN = dict(reviewer_max_share=1.0, reviewer_max_per_window=10**9)
#: F1 gap allowed between a learner fed with and one fed without class probabilities
TOLERANCE = 0.02


def churn(ex: dict, with_probs: bool) -> dict:
    pred = dict(ex["prediction"], model_name="churn", predicted_label=RENAME[ex["prediction"]["predicted_label"]])
    probs = pred.get("class_probabilities") or {}
    pred["class_probabilities"] = {RENAME[k]: v for k, v in probs.items()} if with_probs else None
    return dict(ex, model_name="churn", label=RENAME[ex["label"]], effective_label=RENAME[ex["label"]],
                prediction=pred)


@pytest.fixture(scope="module")
def stream():
    traffic = FraudTraffic(seed=3, n_events=40_000, concept_drift_at=10_000, fraud_rate=0.3, model_name="churn")
    train, _ = corrected_examples(traffic, 10_000, 30_000, audit_rate=0.1, seed=3)
    chunk = next(traffic.iter_chunks(chunk_size=10_000, start=30_000, stop=40_000))
    test = [(example_features(e), RENAME[chunk.true_label(i)]) for i, e in enumerate(chunk.events)]
    return train, test


def f1_of(lr: ModelLearner, test, positive: str = "churn") -> float:
    ch = lr.challenger
    tp = fp = fn = 0
    for x, y in test:
        p = ch.predict_one(ch.predict_proba_one(x))
        tp += p == positive and y == positive
        fp += p == positive and y != positive
        fn += p != positive and y == positive
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def learn(train, with_probs: bool, **config) -> ModelLearner:
    lr = ModelLearner("churn", LearnerConfig(**OPEN, **config))
    lr.learn_batch([(churn(e, with_probs), 0, i) for i, e in enumerate(train)])
    return lr


def first_is_an_approved_stay(train) -> bool:
    first = churn(train[0], False)
    return first["label"] == first["prediction"]["predicted_label"] == "stay"


def test_without_class_probabilities_the_learner_is_as_good_as_with_them(stream):
    train, test = stream
    assert first_is_an_approved_stay(train)  # the case that locked the old learner onto "stay"
    with_probs = learn(train, True, positive_label="churn")
    without = learn(train, False, positive_label="churn")
    f_with, f_without = f1_of(with_probs, test), f1_of(without, test)
    assert without.challenger.positive == "churn" and without.challenger.negative == "stay"
    assert f_with > 0.5, f_with  # the learner learns at all (the old one scored 0.000)
    assert abs(f_with - f_without) <= TOLERANCE, (f_with, f_without)
    q = without.quality[("challenger", "all")].report()
    assert q["log_loss"] < 1.0, q  # no probability 0 for the true label (old: 20.4)


def test_positive_label_honoured_before_it_is_ever_seen(stream):
    train, _ = stream
    lr = learn(train[:1], False, positive_label="churn")
    assert lr.challenger.positive == "churn" and lr.challenger.labels == ("churn", "stay")
    assert set(lr.challenger.predict_proba_one(example_features(train[0]["prediction"]))) == {"churn", "stay"}


def test_without_any_declaration_every_label_seen_joins_the_label_set(stream):
    train, test = stream
    lr = learn(train, False)
    ch = lr.challenger
    assert set(ch.labels) == {"churn", "stay"}
    predicted = {ch.predict_one(ch.predict_proba_one(x)) for x, _ in test[:2000]}
    assert predicted == {"churn", "stay"}, predicted  # not one class for ever


def test_declared_label_set_comes_from_the_policy():
    holder = PolicyHolder(Policy.from_toml('version = "1"\n[models.churn]\npositive_label = "churn"\n'))
    cfg = model_config(LearnerConfig(positive_label="other"), holder, "churn")
    assert cfg.positive_label == "churn"
    assert model_config(LearnerConfig(positive_label="x"), holder, "fraud").positive_label == "x"
    declared = LearnerConfig(labels=("stay", "churn"), positive_label="churn")
    lr = ModelLearner("churn", declared)
    ex = {"event_id": "e1", "correction_id": "c1", "reviewer_id": "r", "action": "approve", "label": "stay",
          "tier": "review", "reviewed_at": 1, "prediction": {"predicted_label": "stay", "confidence": 0.8,
                                                              "class_probabilities": None,
                                                              "features_numeric": {"a": 1.0},
                                                              "features_categorical": {}}}
    assert lr.learn_batch([(ex, 0, 0)]).counts["learned"] == 1
    assert lr.challenger.labels == ("churn", "stay") and lr.challenger.negative == "stay"


def test_logreg_folds_a_third_label_into_the_negative_class():
    m = make_challenger("logreg", ("a",), positive="p")
    m.observe(("b", "c"))
    assert m.negative == "a" and m.labels == ("a", "b", "c", "p")


def _flip_stream(n: int, flip_at: int | None, seed: int):
    import random

    rng = random.Random(seed)
    for i in range(n):
        a = rng.gauss(0.0, 1.0)
        y = (a > 0) != (flip_at is not None and i >= flip_at)  # the concept flips; the inputs do not move
        yield {"a": a, "b": rng.gauss(0.0, 1.0)}, "fraud" if y else "legit"


def _accuracy(model, stream, judge: range) -> float:
    right = 0
    for i, (x, label) in enumerate(stream):
        probs = model.predict_proba_one(x)
        right += i in judge and model.predict_one(probs) == label
        model.learn_one(x, label, probs=probs)
    return right / max(len(judge), 1)


def test_the_default_learner_adapts_after_a_concept_change_and_stays_put_without_one():
    from loopline.processors.learning.pipelines import BinaryLogReg

    # trained on 20,000 examples of the old concept, judged on the 1,000 after the first 100 of the new one
    judge = range(20_100, 21_100)
    plain = BinaryLogReg(("fraud", "legit"), "fraud", adapt=False)
    adaptive = BinaryLogReg(("fraud", "legit"), "fraud")
    before, after = (_accuracy(m, _flip_stream(21_100, 20_000, 5), judge) for m in (plain, adaptive))
    assert adaptive.switches >= 1 and after > before + 0.1, (before, after)  # measured 0.75 -> 0.89
    calm = BinaryLogReg(("fraud", "legit"), "fraud")
    _accuracy(calm, _flip_stream(8000, None, 6), range(0))
    assert calm.switches == 0  # no change, no second model in use
