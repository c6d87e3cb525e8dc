"""``StaticProducerModel``: the fraud model a simulated prediction service runs.

A plain numpy logistic regression (L2, Newton/IRLS) fitted once on a sample of
the traffic's past, before any shift, and never updated afterwards — the model
Loopline is there to watch. It sees engineered versions of the public features
only; the ground truth also depends on an interaction, non-linear terms and a
hidden factor, so the model makes errors on stationary data, and many more
after the concept drift.

``temperature`` divides the logits before the sigmoid: ``1.0`` gives the fitted,
roughly calibrated probabilities; below ``1.0`` the model is over-confident, as
production models often are (the default is mildly over-confident).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from loopline.connectors.simulator.features import BASE_COUNTRIES, CHANNELS, COL, MERCHANTS


class FeatureArrays(Protocol):
    """What the model reads: the columns of a traffic chunk."""

    numeric: np.ndarray
    merchant: np.ndarray
    country: np.ndarray
    channel: np.ndarray


_LOG1P = ("amount", "velocity_1h", "account_age_days", "distance_km", "avg_amount_30d", "device_age_days",
          "minutes_since_last_txn")
_RAW = ("n_failed_logins", "card_present", "is_foreign")
DESIGN_NAMES: tuple[str, ...] = (
    tuple(f"log1p_{n}" for n in _LOG1P) + ("log_amount_to_avg", "hour_sin", "hour_cos") + _RAW
    + tuple(f"merchant={m}" for m in MERCHANTS) + tuple(f"channel={c}" for c in CHANNELS)
    + tuple(f"country={c}" for c in BASE_COUNTRIES))
_N_DENSE = len(_LOG1P) + 3 + len(_RAW)


def design_matrix(a: FeatureArrays) -> np.ndarray:
    """Model inputs (unscaled) for every row: dense engineered columns, then one-hots.

    A country outside the training vocabulary gets all country columns zero.

    >>> from loopline.connectors.simulator import FraudTraffic
    >>> design_matrix(FraudTraffic(seed=0, n_events=5).arrays(0, 5)).shape == (5, len(DESIGN_NAMES))
    True
    """
    x = a.numeric
    n = len(x)
    out = np.zeros((n, len(DESIGN_NAMES)))
    idx = [COL[name] for name in _LOG1P]
    out[:, :len(_LOG1P)] = np.log1p(x[:, idx])
    j = len(_LOG1P)
    out[:, j] = np.log(x[:, COL["amount_to_avg"]])
    angle = x[:, COL["hour"]] * (2 * np.pi / 24)
    out[:, j + 1] = np.sin(angle)
    out[:, j + 2] = np.cos(angle)
    out[:, j + 3:_N_DENSE] = x[:, [COL[name] for name in _RAW]]
    rows = np.arange(n)
    out[rows, _N_DENSE + a.merchant] = 1.0
    out[rows, _N_DENSE + len(MERCHANTS) + a.channel] = 1.0
    base = a.country < len(BASE_COUNTRIES)
    out[rows[base], _N_DENSE + len(MERCHANTS) + len(CHANNELS) + a.country[base]] = 1.0
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


class StaticProducerModel:
    """Logistic regression fitted once; scores traffic chunks in one matrix product.

    Parameters
    ----------
    temperature
        Logits are divided by it before the sigmoid (``< 1`` = over-confident).
    l2
        Ridge penalty on the standardised weights (not on the intercept).
    threshold
        ``P(fraud)`` at or above which the predicted label is ``"fraud"``.
    max_iter
        Newton iterations at most.

    Examples
    --------
    >>> from loopline.connectors.simulator import FraudTraffic
    >>> traffic = FraudTraffic(seed=3, n_events=20_000)
    >>> model = StaticProducerModel(temperature=1.0).fit(traffic.history(20_000))
    >>> chunk = traffic.arrays(0, 20_000)
    >>> p = model.predict_proba(chunk)
    >>> float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    True
    >>> errors = float(np.mean(model.predict(chunk) != chunk.labels))
    >>> 0.0 < errors < float(np.mean(chunk.labels))   # better than always "legit", not perfect
    True
    """

    def __init__(self, temperature: float = 0.8, l2: float = 1.0, threshold: float = 0.5, max_iter: int = 50) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.l2 = l2
        self.threshold = threshold
        self.max_iter = max_iter
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._w: np.ndarray | None = None
        self._b = 0.0

    @property
    def fitted(self) -> bool:
        return self._w is not None

    @property
    def weights(self) -> dict[str, float]:
        """Weight per design column (on standardised dense columns), plus ``"intercept"``."""
        self._check()
        return {**dict(zip(DESIGN_NAMES, self._w.tolist())), "intercept": self._b}

    def fit(self, arrays: FeatureArrays, labels: np.ndarray | None = None) -> StaticProducerModel:
        """Fit on ``arrays`` (labels default to ``arrays.labels``: 1 = fraud). Returns self."""
        y = np.asarray(arrays.labels if labels is None else labels, dtype=np.float64)
        x = design_matrix(arrays)
        self._mean = np.zeros(x.shape[1])
        self._scale = np.ones(x.shape[1])
        self._mean[:_N_DENSE] = x[:, :_N_DENSE].mean(axis=0)
        self._scale[:_N_DENSE] = x[:, :_N_DENSE].std(axis=0) + 1e-12
        z = np.hstack([(x - self._mean) / self._scale, np.ones((len(x), 1))])
        w = np.zeros(z.shape[1])
        penalty = np.full(z.shape[1], self.l2)
        penalty[-1] = 0.0
        for _ in range(self.max_iter):
            p = _sigmoid(z @ w)
            grad = z.T @ (p - y) + penalty * w
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        self._w, self._b = w[:-1], float(w[-1])
        return self

    def logits(self, arrays: FeatureArrays) -> np.ndarray:
        """Fitted log-odds of fraud per row (before the temperature)."""
        self._check()
        return ((design_matrix(arrays) - self._mean) / self._scale) @ self._w + self._b

    def predict_proba(self, arrays: FeatureArrays) -> np.ndarray:
        """``P(fraud)`` per row, after the temperature."""
        return _sigmoid(self.logits(arrays) / self.temperature)

    def predict(self, arrays: FeatureArrays) -> np.ndarray:
        """Predicted label codes per row (1 = fraud)."""
        return (self.predict_proba(arrays) >= self.threshold).astype(np.int8)

    def _check(self) -> None:
        if self._w is None:
            raise RuntimeError("StaticProducerModel is not fitted; call fit() first")


__all__ = ["DESIGN_NAMES", "StaticProducerModel", "design_matrix"]
