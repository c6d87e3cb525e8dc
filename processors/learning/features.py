"""Feature dicts for the online models, and the same features as numpy columns of a frame.

One definition serves learning (one example at a time, River dicts) and
scoring on the route path (whole :class:`~loopline.processors.wire.frame.PredictionFrame`
columns), so the override-risk model sees the same inputs in both places.

* numeric features are squashed with ``sign(x) * log1p(|x|)`` (heavy-tailed
  amounts and counts would otherwise dominate an SGD model) and stay ``float``;
* a categorical feature ``k = v`` becomes the one-hot key ``"k=v"`` with the
  ``int`` value 1 (absent keys mean 0); the ``int`` type is how
  :class:`~loopline.processors.learning.linear.LinearModel` tells one-hots (not scaled)
  from numeric values (standardised);
* the override-risk model also sees ``confidence`` and ``predicted=<label>``.

>>> x = example_features({"features_numeric": {"amount": 0.0}, "features_categorical": {"channel": "web"}})
>>> x
{'amount': 0.0, 'channel=web': 1}
"""
from __future__ import annotations

import math

import numpy as np

CONFIDENCE = "__confidence"
PREDICTED = "__predicted="


def squash(v: float) -> float:
    return math.copysign(math.log1p(abs(v)), v)


def example_features(prediction: dict) -> dict:
    """The challenger's input for one ``PredictionEvent`` dict."""
    x: dict = {k: squash(float(v)) for k, v in prediction["features_numeric"].items()}
    for k, v in prediction["features_categorical"].items():
        x[f"{k}={v}"] = 1
    return x


def risk_features(prediction: dict, x: dict | None = None) -> dict:
    """The override-risk model's input: the features (``x`` if already built), the confidence and the predicted label."""
    x = example_features(prediction) if x is None else dict(x)
    x[CONFIDENCE] = float(prediction["confidence"])
    x[PREDICTED + prediction["predicted_label"]] = 1
    return x


def frame_matrix(frame, names: list[str]) -> np.ndarray:
    """The columns ``names`` (as produced by :func:`risk_features`) for every row of ``frame``.

    Unknown names (a category never seen in this frame, a numeric feature the
    frame lacks) are zero columns, as an absent key is for the dict models.
    """
    out = np.zeros((frame.n, len(names)))
    num = {n: i for i, n in enumerate(frame.numeric_names)}
    cat = {n: i for i, n in enumerate(frame.categorical_names)}
    strings = np.asarray(frame.strings, dtype=object)
    cat_values: dict[int, np.ndarray] = {}
    pred = None
    for j, name in enumerate(names):
        if name == CONFIDENCE:
            out[:, j] = frame.confidence
        elif name.startswith(PREDICTED):
            if pred is None:
                pred = np.asarray(frame.labels, dtype=object)[frame.label_codes]
            out[:, j] = pred == name[len(PREDICTED):]
        elif name in num:
            col = frame.numeric[:, num[name]]
            out[:, j] = np.sign(col) * np.log1p(np.abs(col))
        elif "=" in name and name.split("=", 1)[0] in cat:
            k, v = name.split("=", 1)
            c = cat[k]
            if c not in cat_values:
                cat_values[c] = strings[frame.categorical_codes[:, c]] if len(strings) else np.array([], dtype=object)
            out[:, j] = cat_values[c] == v
    return out
