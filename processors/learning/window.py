"""Rolling-window classification quality: accuracy, F1 and log-loss over the last ``size`` scored examples.

Sums are kept incrementally (a confusion counter and a log-loss sum), so an
update is O(1) and memory is bounded by ``size``. F1 is the F1 of ``positive``
when one is given, else the macro F1 over the labels seen in the window.

>>> w = RollingQuality(size=3, positive="fraud")
>>> for true, pred, p in [("fraud", "fraud", 0.9), ("legit", "fraud", 0.4), ("fraud", "legit", 0.2)]:
...     w.update(true, pred, p)
>>> r = w.report()
>>> r["n"], round(r["accuracy"], 3), round(r["f1"], 3)
(3, 0.333, 0.5)
"""
from __future__ import annotations

import math
from collections import Counter, deque

EPS = 1e-15


class RollingQuality:
    def __init__(self, size: int = 5000, positive: str | None = None) -> None:
        self.size = size
        self.positive = positive
        self._items: deque = deque()
        self._pairs: Counter = Counter()
        self._logloss = 0.0

    def update(self, true: str, pred: str, p_true: float) -> None:
        """Add one scored example: the true label, the predicted one, the probability given to the true one."""
        loss = -math.log(min(max(p_true, EPS), 1.0))
        self._items.append((true, pred, loss))
        self._pairs[(true, pred)] += 1
        self._logloss += loss
        if len(self._items) > self.size:
            t, p, old = self._items.popleft()
            self._pairs[(t, p)] -= 1
            if not self._pairs[(t, p)]:
                del self._pairs[(t, p)]
            self._logloss -= old

    def __len__(self) -> int:
        return len(self._items)

    def f1(self) -> float:
        labels = [self.positive] if self.positive else sorted({lb for pair in self._pairs for lb in pair})
        if not labels:
            return 0.0
        scores = []
        for lb in labels:
            tp = self._pairs.get((lb, lb), 0)
            fp = sum(c for (t, p), c in self._pairs.items() if p == lb and t != lb)
            fn = sum(c for (t, p), c in self._pairs.items() if t == lb and p != lb)
            scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        return sum(scores) / len(scores)

    def report(self) -> dict:
        n = len(self._items)
        correct = sum(c for (t, p), c in self._pairs.items() if t == p)
        return {"n": n, "accuracy": correct / n if n else 0.0, "f1": self.f1(),
                "log_loss": max(self._logloss, 0.0) / n if n else 0.0}


def champion_view(prediction: dict, true: str) -> tuple[str, float]:
    """The producer model's predicted label and the probability it gave ``true``."""
    probs = prediction.get("class_probabilities")
    pred = prediction["predicted_label"]
    if probs and true in probs:
        return pred, float(probs[true])
    conf = float(prediction["confidence"])
    if true == pred:
        return pred, conf
    others = max(len(probs) - 1, 1) if probs else 1
    return pred, (1.0 - conf) / others


def argmax(probs: dict) -> tuple[str, float]:
    """The most probable label (ties: smallest label, for determinism)."""
    if not probs:
        return "", 0.0
    label = min(probs, key=lambda k: (-probs[k], k))
    return label, probs[label]
