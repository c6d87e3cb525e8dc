"""``LinearModel``: River's ``StandardScaler`` + ``LogisticRegression`` for a binary target.

Float features are standardised online; ``int`` one-hot features pass through
unscaled (River's scaler would map a key that is present only when 1 to 0).
Every state is River's own, so a model pickles and rebuilds exactly; given the
same examples in the same order it ends in the same weights (no randomness).

:meth:`LinearModel.export` freezes the model into numpy arrays
(:class:`LinearExport`) that score a whole frame at once on the route path and
give per-feature contributions (weight x scaled value) for review insights.

>>> m = LinearModel()
>>> for i in range(200):
...     m.learn_one({"a": float(i % 2), "k=v": 1}, bool(i % 2))
>>> m.predict_proba_one({"a": 1.0, "k=v": 1}) > 0.5 > m.predict_proba_one({"a": 0.0, "k=v": 1})
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from river import linear_model, optim, preprocessing

#: Relative spread below which a feature counts as constant: float noise (a std of 5e-14 on values
#: around 1) must not be blown up to z = 1 and show up as a top contribution.
VARIANCE_FLOOR = 1e-9


def is_constant(mean: float, var: float) -> bool:
    """True when ``var`` is no more than float noise around ``mean`` (std <= 1e-9 x max(1, |mean|))."""
    return not var > (VARIANCE_FLOOR * max(1.0, abs(mean))) ** 2


class LinearModel:
    """Online standardised logistic regression (see module doc)."""

    def __init__(self, lr: float = 0.05, l2: float = 0.0, max_features: int = 5000) -> None:
        self.lr = lr
        self.l2 = l2
        self.max_features = max_features
        self.dropped_features = 0  # feature occurrences ignored because the model already holds max_features keys
        self._keys: set | None = set()
        self._scaler = preprocessing.StandardScaler()
        self._clf = linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2)

    def _transform(self, x: dict) -> dict:
        """River's ``StandardScaler.transform_one`` formula on the float features, one-hots as they are.

        Reads the scaler's state with ``.get`` only: River keeps ``means``/``vars``
        in ``defaultdict`` s, so indexing an unseen key would insert it, and
        predicting on hostile keys would grow the model without bound.
        """
        means, vars_ = self._scaler.means, self._scaler.vars
        z = {}
        for k, v in x.items():
            if type(v) is float:
                mean = means.get(k, 0.0)
                var = vars_.get(k, 0.0)
                z[k] = (v - mean) / var**0.5 if not is_constant(mean, var) else 0.0
            else:
                z[k] = float(v)
        return z

    def predict_proba_one(self, x: dict) -> float:
        """P(target is True | x)."""
        return self._clf.predict_proba_one(self._transform(x)).get(True, 0.0)

    def _admit(self, x: dict) -> dict:
        """``x`` without keys beyond the first ``max_features`` the model learned (producers choose the keys)."""
        keys = self.__dict__.get("_keys")
        if keys is None or "max_features" not in self.__dict__:  # a model pickled before the cap
            self.max_features = self.__dict__.get("max_features", 5000)
            self.dropped_features = self.__dict__.get("dropped_features", 0)
            keys = self._keys = set(self._clf.weights) | set(self._scaler.means)
        if all(k in keys for k in x):
            return x
        out = {}
        for k, v in x.items():
            if k in keys:
                out[k] = v
            elif len(keys) < self.max_features:
                keys.add(k)
                out[k] = v
            else:
                self.dropped_features += 1
        return out

    def learn_one(self, x: dict, y: bool, w: float = 1.0) -> None:
        """Learn one example; keys beyond ``max_features`` distinct ones are dropped and counted."""
        x = self._admit(x)
        num = {k: v for k, v in x.items() if type(v) is float}
        if num:
            self._scaler.learn_one(num)
        self._clf.learn_one(self._transform(x), bool(y), w=w)

    def export(self) -> LinearExport:
        weights = dict(self._clf.weights)
        names = sorted(weights)
        sc = self._scaler
        means = np.array([sc.means.get(n, 0.0) if n in sc.means else 0.0 for n in names])
        stds = np.array([math.sqrt(sc.vars[n]) if n in sc.vars and not is_constant(sc.means.get(n, 0.0), sc.vars[n])
                         else 0.0 for n in names])
        scaled = np.array([n in sc.means for n in names], dtype=bool)
        return LinearExport(names, means, stds, scaled, np.array([weights[n] for n in names]),
                            float(self._clf.intercept))


@dataclass(frozen=True)
class LinearExport:
    """A frozen linear model as numpy arrays (see :meth:`LinearModel.export`)."""

    names: list[str]
    means: np.ndarray
    stds: np.ndarray
    scaled: np.ndarray  # bool: standardised (float feature) or passed through (one-hot)
    weights: np.ndarray
    intercept: float

    def scale(self, x: np.ndarray) -> np.ndarray:
        """Scaled inputs; a feature with no spread seen yet scales to 0, as in River."""
        safe = np.where(self.stds > 0, self.stds, 1.0)
        z = np.where(self.scaled, (x - self.means) / safe, x)
        return np.where(self.scaled & (self.stds == 0), 0.0, z)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(True) per row of ``x`` (columns in :attr:`names` order)."""
        logits = self.scale(x) @ self.weights + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -500, 500)))

    def contributions(self, x: np.ndarray, top: int = 5) -> list[tuple[str, float]]:
        """The ``top`` features of one row by |weight x scaled value|, largest first."""
        c = self.scale(x.reshape(1, -1))[0] * self.weights
        order = np.argsort(-np.abs(c), kind="stable")[:top]
        return [(self.names[i], float(c[i])) for i in order if c[i] != 0.0]
