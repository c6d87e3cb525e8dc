"""The challenger classifiers a learner can run, by name, all seeded (deterministic rebuild).

Every challenger maps a feature dict to ``{label: probability}``, turns those into a
label with ``predict_one(probs)``, and learns
``(x, label, weight)``; labels are the producer's label strings.

* ``logreg`` (default, chosen by measurement, see README "Online learning"):
  :class:`~loopline.processors.learning.linear.LinearModel` on ``label == positive``
  (binary models; the positive label is the configured one — the policy's
  ``positive_label`` or ``LOOPLINE_LEARN_POSITIVE_LABEL`` — even before it is
  ever seen, else the first in sorted order of the declared labels, else of the
  labels of the first example); the negative label is the declared other one,
  else the first other label seen (:meth:`BinaryLogReg.observe`), so a
  producer that sends no ``class_probabilities`` still gets both classes;
* ``hoeffding``: River's ``HoeffdingAdaptiveTreeClassifier``;
* ``arf``: River's adaptive random forest (10 trees).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
from river import drift, forest, tree

from loopline.processors.learning.errors import LearningConfigError
from loopline.processors.learning.linear import LinearModel
from loopline.processors.learning.window import argmax

PIPELINES = ("logreg", "hoeffding", "arf")
ADWIN_DELTA = 0.002  # the drift-aware learner's change detector (River's default confidence)


class BinaryLogReg:
    """A :class:`LinearModel` on ``label == positive``, seen as a two-label classifier.

    Probabilities stay calibrated (plain log-loss training); the *decision*
    threshold is the one that maximised the positive-class F1 over the last
    ``window`` test-then-train predictions (re-chosen every ``every`` examples),
    so a rare positive class (fraud) is predicted at all. Measured on the
    simulation after the concept drift: F1 0.00 at a fixed 0.5 threshold.

    **Drift-aware** (``adapt``): ADWIN watches the model's test-then-train
    log-loss; when it changes, a fresh model learns alongside on the same
    examples, and whichever has the lower smoothed loss (half-life about
    ``fresh_min`` examples, after ``fresh_min`` of them) is the one that
    predicts and is exported to the route workers; after ``fresh_max``
    examples the worse one is dropped and ADWIN watches again. A model trained
    long on the old concept keeps its weights until a fresh one proves better.
    """

    def __init__(self, labels: tuple[str, ...], positive: str, lr: float = 0.05, window: int = 2000,
                 every: int = 250, adapt: bool = True, fresh_min: int = 200, fresh_max: int = 5000) -> None:
        self.labels = labels
        self.positive = positive
        self.negative = next((lb for lb in labels if lb != positive), "")
        self.model = LinearModel(lr=lr)
        self.window = window
        self.every = every
        self.threshold = 0.5
        self._recent: deque = deque(maxlen=window)
        self._since = 0
        self.adapt = adapt
        self.fresh_min = fresh_min
        self.fresh_max = fresh_max
        self._detector = drift.ADWIN(delta=ADWIN_DELTA) if adapt else None
        self._other: LinearModel | None = None  # the model not in use while two compete
        self._pair_n = 0
        self._loss: list[float] = []  # smoothed log-loss of (model, other) on the same examples
        self.switches = 0

    def observe(self, labels) -> None:
        """Take note of labels seen on an example (predicted, corrected, class-probability keys).

        The first label other than the positive one becomes the negative label;
        a binary model folds any further label into the negative class.
        """
        for lb in labels:
            if lb and lb != self.positive and lb not in self.labels:
                self.labels = tuple(sorted((*self.labels, lb)))
                if not self.negative:
                    self.negative = lb

    def predict_proba_one(self, x: dict) -> dict:
        p = self.model.predict_proba_one(x)
        if not self.negative:
            return {self.positive: p}
        return {self.positive: p, self.negative: 1.0 - p}

    def predict_one(self, probs: dict) -> str:
        return self.positive if probs.get(self.positive, 0.0) >= self.threshold else self.negative

    def learn_one(self, x: dict, label: str, w: float = 1.0, probs: dict | None = None) -> None:
        """Learn one example; ``probs`` = this model's prediction for ``x`` just made (saves predicting again)."""
        self.observe((label,))
        y = label == self.positive
        p = probs[self.positive] if probs is not None else self.model.predict_proba_one(x)
        self._recent.append((p, y))
        if getattr(self, "adapt", False):  # snapshots from before it have no drift state
            self._compete(x, y, p, w)
        self.model.learn_one(x, y, w)
        self._since += 1
        if self._since >= self.every:
            self._since = 0
            self.threshold = best_f1_threshold(self._recent, self.threshold)


    def _compete(self, x: dict, y: bool, p: float, w: float) -> None:
        """ADWIN on the loss; on a change a fresh model competes with the one in use (see class doc)."""
        loss = -math.log(max(p if y else 1.0 - p, 1e-6))
        other = self._other
        if other is None:
            self._detector.update(loss)
            if self._detector.drift_detected:
                self._other, self._pair_n, self._loss = LinearModel(lr=self.model.lr), 0, []
            return
        q = other.predict_proba_one(x)
        pair = (loss, -math.log(max(q if y else 1.0 - q, 1e-6)))
        a = 1.0 / self.fresh_min
        self._loss = list(pair) if not self._loss else [(1 - a) * o + a * n for o, n in zip(self._loss, pair)]
        other.learn_one(x, y, w)
        self._pair_n += 1
        if self._pair_n >= self.fresh_min and self._loss[1] < 0.9 * self._loss[0]:  # 10% better: no flapping
            self.model, self._other = other, self.model
            self._loss.reverse()
            self.switches += 1
        if self._pair_n >= self.fresh_max:
            self._other = None
            self._detector = drift.ADWIN(delta=ADWIN_DELTA)


def best_f1_threshold(pairs, default: float = 0.5) -> float:
    """The probability cut with the best F1 over ``(p, y)`` pairs (ties: the higher cut).

    >>> best_f1_threshold([(0.9, True), (0.4, True), (0.3, False), (0.1, False)])
    0.4
    """
    if not pairs:
        return default
    p = np.fromiter((a for a, _ in pairs), float, len(pairs))
    y = np.fromiter((b for _, b in pairs), bool, len(pairs))
    pos = int(y.sum())
    if pos == 0:
        return default
    order = np.argsort(-p, kind="stable")
    tp = np.cumsum(y[order])
    k = np.arange(1, len(p) + 1)
    f1 = 2 * tp / (k + pos)
    best = int(np.argmax(f1))
    return float(p[order][best])


class RiverClassifier:
    """A River multi-class classifier with sample weights where it takes them."""

    def __init__(self, model, weighted: bool, max_features: int = 5000) -> None:
        self.model = model
        self.weighted = weighted
        self.max_features = max_features
        self.dropped_features = 0  # feature occurrences ignored: the model already knows max_features keys
        self._keys: set[str] = set()

    def _bounded(self, x: dict) -> dict:
        """``x`` without keys beyond the first ``max_features`` learned (producers choose the keys)."""
        keys = self.__dict__.setdefault("_keys", set())  # models pickled before the cap had none
        cap = self.__dict__.setdefault("max_features", 5000)
        out = {}
        for k, v in x.items():
            if k in keys or len(keys) < cap:
                keys.add(k)
                out[k] = v
            else:
                self.dropped_features = self.__dict__.get("dropped_features", 0) + 1
        return out

    def predict_proba_one(self, x: dict) -> dict:
        return self.model.predict_proba_one(x)

    def predict_one(self, probs: dict) -> str:
        return argmax(probs)[0]

    def observe(self, labels) -> None:
        """River's classifiers grow their label set as they learn: nothing to note."""

    def learn_one(self, x: dict, label: str, w: float = 1.0, probs: dict | None = None) -> None:
        x = self._bounded(x)
        if self.weighted:
            self.model.learn_one(x, label, w=w)
        elif w > 0:  # ARF draws its own Poisson weights and takes none: a weighted example counts once
            self.model.learn_one(x, label)


def make_challenger(name: str, labels: tuple[str, ...], positive: str | None = None, seed: int = 42):
    """A fresh challenger ``name`` for a model emitting ``labels`` (declared, or those seen so far).

    A configured ``positive`` is honoured whether or not it is among ``labels``.

    >>> m = make_challenger("logreg", ("stay",), positive="churn")
    >>> m.positive, m.negative
    ('churn', 'stay')
    """
    labels = tuple(sorted(set(labels) | ({positive} if positive else set())))
    if name == "logreg":
        if len(labels) > 2:
            raise LearningConfigError(f"the logreg challenger is binary; this model emits {len(labels)} labels "
                                      "(use hoeffding or arf)")
        pos = positive if positive else labels[0]
        return BinaryLogReg(labels, pos)
    if name == "hoeffding":
        return RiverClassifier(tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, seed=seed), weighted=True)
    if name == "arf":
        return RiverClassifier(forest.ARFClassifier(n_models=10, seed=seed), weighted=False)
    raise LearningConfigError(f"unknown challenger pipeline {name!r} (choose from {', '.join(PIPELINES)})")
