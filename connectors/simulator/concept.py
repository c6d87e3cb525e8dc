"""The fraud concept: which transactions are fraud, before and after the concept drift.

The ground truth is a latent logistic model, ``P(fraud | x) = sigmoid(score(x) + b)``.
Its score uses non-linear terms, an interaction and a hidden risk factor that no
model sees, so a linear producer model fits it well but never perfectly.

* **Before the drift** fraud is card-not-present, at night, on new accounts and
  new devices, far from home, well above the customer's usual amount, and in
  electronics / digital goods.
* **After the drift** the fraudsters adapt: card-present (skimmed cards), in the
  daytime, in gift cards and fuel, at ordinary amounts. The inputs look the same
  (the population does not change), the error of a static model goes up.

The intercept ``b`` of each regime is solved once so that the fraud rate on the
unshifted population equals the requested rate; the "world" used for that is a
fixed sample, so the concept is the same for every traffic seed.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from loopline.connectors.simulator.features import COL, MERCHANTS, Population, draw_population

_M = {name: i for i, name in enumerate(MERCHANTS)}
MERCHANT_EFFECT_BEFORE = np.zeros(len(MERCHANTS))
MERCHANT_EFFECT_BEFORE[[_M["electronics"], _M["digital_goods"], _M["travel"], _M["grocery"], _M["fuel"]]] = (
    1.0, 1.2, 0.4, -0.6, -0.3)
MERCHANT_EFFECT_AFTER = np.zeros(len(MERCHANTS))
MERCHANT_EFFECT_AFTER[[_M["gift_cards"], _M["fuel"], _M["grocery"], _M["electronics"]]] = (2.2, 1.3, 0.3, -0.3)

#: scales the visible part of the score: how separable fraud is (2.5 gives a Bayes recall near 55 %)
SHARPNESS = 2.5
WORLD_SEED = 20240917
WORLD_SIZE = 200_000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def score_before(pop: Population) -> np.ndarray:
    """Fraud score (logit without intercept) of the original concept."""
    x = pop.numeric
    hour = x[:, COL["hour"]]
    night = hour < 6
    cnp = 1.0 - x[:, COL["card_present"]]
    return SHARPNESS * (
            1.7 * np.log(x[:, COL["amount_to_avg"]])
            + 0.15 * (np.log(x[:, COL["amount"]]) - 3.8)
            + 1.3 * night
            + 0.9 * cnp
            + 1.4 * night * cnp
            + 0.5 * np.log1p(x[:, COL["velocity_1h"]])
            + 1.6 * np.exp(-x[:, COL["account_age_days"]] / 45.0)
            + 0.35 * np.log1p(x[:, COL["distance_km"]])
            + 1.3 * np.exp(-x[:, COL["device_age_days"]] / 10.0)
            + 0.6 * x[:, COL["n_failed_logins"]]
            + 0.8 * x[:, COL["is_foreign"]]
            + MERCHANT_EFFECT_BEFORE[pop.merchant]) + pop.hidden


def score_after(pop: Population) -> np.ndarray:
    """Fraud score (logit without intercept) after the concept drift."""
    x = pop.numeric
    hour = x[:, COL["hour"]]
    day = (hour >= 10) & (hour < 17)
    present = x[:, COL["card_present"]]
    return SHARPNESS * (
            0.3 * np.log(x[:, COL["amount_to_avg"]])
            + 1.3 * day
            + 1.6 * present
            + 0.8 * day * present
            + 0.5 * np.log1p(x[:, COL["velocity_1h"]])
            + 0.3 * np.exp(-x[:, COL["account_age_days"]] / 45.0)
            + 0.6 * x[:, COL["n_failed_logins"]]
            - 0.3 * np.log1p(x[:, COL["distance_km"]])
            + MERCHANT_EFFECT_AFTER[pop.merchant]) + pop.hidden


def solve_intercept(scores: np.ndarray, rate: float) -> float:
    """Intercept ``b`` with ``mean(sigmoid(scores + b)) == rate`` (bisection, 1e-9).

    >>> s = np.random.default_rng(0).standard_normal(10_000)
    >>> b = solve_intercept(s, 0.03)
    >>> round(float(_sigmoid(s + b).mean()), 4)
    0.03
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"fraud rate must be in (0, 1), got {rate}")
    lo, hi = -40.0, 40.0
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        if _sigmoid(scores + mid).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@lru_cache(maxsize=16)
def intercepts(rate: float) -> tuple[float, float]:
    """(before, after) intercepts giving fraud rate ``rate`` on the unshifted population."""
    rng = np.random.default_rng(WORLD_SEED)
    pop = draw_population(rng, WORLD_SIZE, np.zeros(WORLD_SIZE, bool), amount_shift_sd=0.0,
                          new_country_code=0, new_country_share=0.0)
    return solve_intercept(score_before(pop), rate), solve_intercept(score_after(pop), rate)


def fraud_probability(pop: Population, drifted: np.ndarray, rate: float) -> np.ndarray:
    """True ``P(fraud | x)`` per row; rows where ``drifted`` is true use the new concept.

    >>> rng = np.random.default_rng(1)
    >>> pop = draw_population(rng, 50_000, np.zeros(50_000, bool), amount_shift_sd=0.0,
    ...                       new_country_code=0, new_country_share=0.0)
    >>> p = fraud_probability(pop, np.zeros(50_000, bool), 0.03)
    >>> bool(0.025 < p.mean() < 0.035)
    True
    """
    b_before, b_after = intercepts(float(rate))
    if drifted.all():
        logit = score_after(pop) + b_after
    elif drifted.any():
        logit = np.where(drifted, score_after(pop) + b_after, score_before(pop) + b_before)
    else:
        logit = score_before(pop) + b_before
    return _sigmoid(logit)
