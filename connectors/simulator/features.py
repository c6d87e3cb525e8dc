"""The population of card transactions the simulator draws from, vectorised.

Everything here is a pure function of a :class:`numpy.random.Generator` and
two boolean regime masks, so a block of events is the same whatever chunk size
the caller asks for. The fraud *concept* (which transactions are fraud) lives in
:mod:`loopline.connectors.simulator.concept`; this module only says what transactions
look like.

Column layout of the numeric matrix is :data:`NUMERIC_FEATURES`; categorical
columns are small integer codes into :data:`MERCHANTS`, :data:`COUNTRIES` and
:data:`CHANNELS`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUMERIC_FEATURES: tuple[str, ...] = (
    "amount",                 # log-normal, EUR
    "hour",                   # 0..23, local hour of the transaction
    "velocity_1h",            # transactions on the card in the last hour
    "account_age_days",
    "distance_km",            # from the card holder's home
    "avg_amount_30d",
    "amount_to_avg",          # amount / avg_amount_30d
    "device_age_days",        # how long this device has been seen on the account
    "n_failed_logins",        # in the last 24 h
    "card_present",           # 0/1
    "minutes_since_last_txn",
    "is_foreign",             # 0/1: card issued in another country
)
COL = {name: i for i, name in enumerate(NUMERIC_FEATURES)}

MERCHANTS: tuple[str, ...] = ("grocery", "restaurant", "fuel", "travel", "electronics", "fashion",
                              "digital_goods", "gift_cards")
MERCHANT_P = np.array([0.22, 0.16, 0.10, 0.07, 0.09, 0.14, 0.14, 0.08])

BASE_COUNTRIES: tuple[str, ...] = ("DE", "FR", "GB", "NL", "ES", "IT", "PL", "SE", "US", "BR")
COUNTRY_P = np.array([0.25, 0.15, 0.14, 0.08, 0.09, 0.09, 0.06, 0.05, 0.06, 0.03])

CHANNELS: tuple[str, ...] = ("web", "app", "pos")
CHANNEL_P = np.array([0.45, 0.35, 0.20])
CARD_PRESENT_P = np.array([0.0, 0.02, 0.97])  # per channel

# share of transactions per local hour: quiet nights, busy afternoons and evenings
HOUR_WEIGHTS = np.array([1.2, 0.8, 0.6, 0.5, 0.5, 0.8, 1.5, 2.8, 4.0, 5.0, 5.5, 6.0,
                         6.5, 6.2, 6.0, 6.0, 6.2, 6.5, 6.8, 6.5, 5.5, 4.5, 3.2, 2.0])
HOUR_CDF = np.cumsum(HOUR_WEIGHTS / HOUR_WEIGHTS.sum())

LOG_AVG_MEAN = np.log(45.0)
LOG_AVG_SD = 0.8
LOG_RATIO_SD = 0.6
#: standard deviation of log(amount) before any shift (avg and ratio are independent)
LOG_AMOUNT_SD = float(np.hypot(LOG_AVG_SD, LOG_RATIO_SD))


@dataclass(frozen=True)
class Population:
    """Raw draws for ``n`` transactions (before any fraud concept is applied).

    ``numeric`` is ``(n, len(NUMERIC_FEATURES))`` float64; ``merchant``,
    ``country`` and ``channel`` are int8 codes; ``hidden`` is a latent risk
    factor the fraud concept uses but no model ever sees.
    """

    numeric: np.ndarray
    merchant: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    hidden: np.ndarray


def countries(new_country: str) -> tuple[str, ...]:
    """Country vocabulary: the base countries plus the one that appears with the shift."""
    return BASE_COUNTRIES if new_country in BASE_COUNTRIES else BASE_COUNTRIES + (new_country,)


def draw_population(rng: np.random.Generator, n: int, shifted: np.ndarray, *, amount_shift_sd: float,
                    new_country_code: int, new_country_share: float) -> Population:
    """Draw ``n`` transactions; rows where ``shifted`` is true see the covariate shift.

    The shift moves the mean of ``log(amount)`` (and of ``log(avg_amount_30d)``,
    so the customer's own ratio is unchanged: a new, richer market rather than a
    change in behaviour) by ``amount_shift_sd`` standard deviations of
    ``log(amount)``, and a share ``new_country_share`` of shifted rows comes from
    a country never seen before. The same random numbers are drawn whatever the
    masks say, so a row's draws do not depend on its regime.

    >>> rng = np.random.default_rng(0)
    >>> pop = draw_population(rng, 4, np.zeros(4, bool), amount_shift_sd=1.0,
    ...                       new_country_code=10, new_country_share=0.1)
    >>> pop.numeric.shape, pop.merchant.dtype.name
    ((4, 12), 'int8')
    """
    u = rng.random((n, 6))
    z = rng.standard_normal((n, 4))
    out = np.empty((n, len(NUMERIC_FEATURES)))

    log_avg = LOG_AVG_MEAN + LOG_AVG_SD * z[:, 0] + (amount_shift_sd * LOG_AMOUNT_SD) * shifted
    avg = np.round(np.exp(log_avg), 2) + 1.0
    amount = np.round(avg * np.exp(LOG_RATIO_SD * z[:, 1] - LOG_RATIO_SD ** 2 / 2), 2) + 0.5
    out[:, COL["amount"]] = amount
    out[:, COL["avg_amount_30d"]] = avg
    out[:, COL["amount_to_avg"]] = np.round(amount / avg, 4)

    out[:, COL["hour"]] = np.minimum(np.searchsorted(HOUR_CDF, u[:, 0], side="right"), 23)
    out[:, COL["velocity_1h"]] = rng.poisson(rng.gamma(2.0, 0.6, n))
    out[:, COL["account_age_days"]] = np.floor(rng.gamma(1.3, 500.0, n))
    out[:, COL["distance_km"]] = np.round(np.exp(2.0 + 1.3 * z[:, 2]), 1)
    out[:, COL["device_age_days"]] = np.floor(rng.gamma(0.9, 200.0, n))
    out[:, COL["n_failed_logins"]] = rng.poisson(0.12, n)
    out[:, COL["minutes_since_last_txn"]] = np.round(rng.exponential(600.0, n), 1)
    out[:, COL["is_foreign"]] = u[:, 1] < 0.07

    channel = np.searchsorted(np.cumsum(CHANNEL_P), u[:, 2], side="right").clip(0, 2).astype(np.int8)
    out[:, COL["card_present"]] = u[:, 3] < CARD_PRESENT_P[channel]
    merchant = np.searchsorted(np.cumsum(MERCHANT_P), u[:, 4], side="right").clip(0, 7).astype(np.int8)
    country = np.searchsorted(np.cumsum(COUNTRY_P), u[:, 5], side="right").clip(0, 9).astype(np.int8)
    takeover = shifted & (rng.random(n) < new_country_share)
    country[takeover] = new_country_code
    return Population(out, merchant, country, channel, z[:, 3])
