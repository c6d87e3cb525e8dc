"""Issue #19 item 3: prediction never changes model state; near-constant features are treated as constant."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from loopline.processors.learning.linear import LinearModel, is_constant
from loopline.processors.learning.pipelines import make_challenger


def _trained(name: str):
    m = make_challenger(name, ("legit", "fraud"), "fraud")
    rnd = random.Random(1)
    for i in range(300):
        m.learn_one({"amount": rnd.random(), "age": rnd.random(), "country=DE": 1}, "fraud" if i % 3 == 0 else "legit")
    return m


@pytest.mark.parametrize("name", ["logreg", "hoeffding", "arf"])
def test_5000_predictions_with_new_keys_leave_the_model_unchanged(name):
    m = _trained(name)
    before = pickle.dumps(m)
    for i in range(5000):
        m.predict_proba_one({"amount": 0.5, f"hostile_{i}": 3.0, f"country=X{i}": 1})
    assert pickle.dumps(m) == before
    if name == "logreg":
        scaler = m.model._scaler
        assert len(scaler.means) == len(scaler.vars) == 2  # the issue saw 3 -> 5,003 entries


def test_near_constant_feature_is_constant_not_z_one():
    m = LinearModel()
    rnd = random.Random(3)
    for i in range(500):
        m.learn_one({"signal": float(i % 2), "flat": 1.0 + rnd.random() * 1e-13}, bool(i % 2))
    var = m._scaler.vars["flat"]
    assert 0 < var < 1e-24  # float noise, not zero
    assert is_constant(m._scaler.means["flat"], var)
    z = m._transform({"signal": 1.0, "flat": 1.0 + 1e-13})
    assert z["flat"] == 0.0
    export = m.export()
    row = np.array([1.0 + 1e-13 if n == "flat" else 1.0 for n in export.names])
    assert "flat" not in [f for f, _ in export.contributions(row)]
    assert not is_constant(1000.0, 1e-6) and is_constant(1000.0, 1e-20)


def test_learning_keeps_at_most_max_features_keys_and_counts_the_rest():
    m = LinearModel(max_features=50)
    rnd = random.Random(5)
    for i in range(400):
        m.learn_one({"amount": rnd.random(), f"hostile_{i}": rnd.random(), f"country=X{i}": 1}, bool(i % 2))
    assert len(m._clf.weights) == 50 and len(m._scaler.means) <= 50
    # 1,200 key occurrences: "amount" 400 times (admitted), 49 more distinct keys admitted, the rest dropped
    assert m.dropped_features == 1200 - 400 - 49
    before = m.predict_proba_one({"amount": 0.5})
    m.learn_one({"amount": 0.5, "brand_new": 1.0}, True)
    assert "brand_new" not in m._clf.weights and m.dropped_features == 1200 - 400 - 49 + 1
    assert 0.0 <= before <= 1.0


@pytest.mark.parametrize("name", ["hoeffding", "arf"])
def test_river_challengers_learn_at_most_max_features_keys(name):
    """Tree challengers get the same key cap as the linear one: new producer-chosen keys beyond it are dropped."""
    m = make_challenger(name, ("fraud", "legit"), positive="fraud")
    m.max_features = 20
    rnd = random.Random(1)
    for i in range(300):
        x = {"amount": rnd.random(), f"junk_{i}": 1.0, f"more_{i}": 2.0}
        m.learn_one(x, "fraud" if x["amount"] > 0.5 else "legit")
    # "amount" (300 occurrences) and the first 19 junk keys are kept; every other occurrence is dropped
    assert len(m._keys) == 20 and m.dropped_features == 300 * 3 - 300 - 19
