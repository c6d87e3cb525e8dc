"""Drift settings: one frozen object, validated once, passed down."""
from __future__ import annotations

from dataclasses import dataclass

from loopline.processors.errors import ConfigError

WINDOW_DETECTORS = ("psi", "ks", "wasserstein", "js", "chi2", "unseen")
SEQUENTIAL_DETECTORS = ("rank_cusum", "binomial_cusum")


@dataclass(frozen=True)
class DriftConfig:
    """How drift is watched for every model.

    Parameters
    ----------
    reference_events
        The first N predictions of a model version (by ``emitted_at``, then
        ``event_id``) form its reference, unless a baseline profile is pinned.
    reference_outcomes
        The first N joined outcomes of a version form the reference error rate.
    bucket_ms
        Width of a time bucket (event time). Workers count per bucket; a bucket is
        evaluated once, when the watermark passes its end.
    bucket_events, min_bucket_ms
        Buckets that adapt to traffic (``bucket_events`` > 0): when a version's
        reference shows more than ``bucket_events`` events per ``bucket_ms``,
        its buckets are ``bucket_ms`` halved until they hold about that many
        (never below ``min_bucket_ms``), so an alarm comes within about
        ``bucket_events`` events of a change as well as within ``bucket_ms``.
        The width is chosen once per version, when its reference freezes, and
        travels with the profile (workers count with it). 0 = every version
        uses ``bucket_ms``.
    window_buckets
        The current window is the last ``window_buckets`` buckets.
    numeric_bins, top_k, max_known
        Reference quantile bins per numeric signal; categories kept individually;
        reference categories remembered for the "unseen" test.
    numeric_detectors, categorical_detectors, error_detectors
        Detectors per signal kind (``confidence`` is numeric, ``class`` categorical).
    budget_events, budget_per
        False-alarm budget: on stationary data, at least this many events
        between false alarms (expected) of each detector (``budget_per =
        "detector"``, the default: a model with 13 detectors may raise up to 13
        false alarms per budget) or of each model version (``"model"``: the
        budget is split evenly over the version's detectors, each calibrated to
        ``budget_events x detectors``; ``LOOPLINE_DRIFT_BUDGET_PER=model``). Not
        the default yet: calibrating 13x longer null runs delayed the small
        demo's worker enough that its feature shift went undetected.
    consecutive
        A window test starts an alarm after this many consecutive exceedances.
    resolve_ratio, resolve_after
        Resolved once the score stays below ``resolve_ratio * threshold`` for
        ``resolve_after`` evaluations.
    ongoing_every
        While active, an ``ongoing`` event every this many evaluations (0 = never).
    cusum_shift
        Rank CUSUM is tuned to detect a shift of this many standard deviations.
    error_shift_relative, error_shift_absolute, error_rate_quantile
        Error CUSUM: ``p0`` is the Wilson upper bound of the reference error rate
        at ``error_rate_quantile`` (a reference that underestimates the rate by
        chance would otherwise alarm again and again), and the alternative is
        ``p1 = max(p0 * (1 + relative), p0 + absolute)``.
    calibration_budgets, calibration_chains, calibration_quantile, calibration_safety
        Null simulation: ``calibration_chains`` plausible true distributions
        (drawn around the reference), each simulated for ``calibration_budgets``
        budgets of events; each chain's threshold keeps its alarms under
        ``events / budget / calibration_safety``; the threshold used is the
        ``calibration_quantile`` of the chains' thresholds.
    events_per_bucket, outcomes_per_bucket
        Traffic assumed by the calibration; ``None`` = measured on the reference.
    max_versions
        Model versions tracked at once per model (least recently seen dropped).
    max_raw_rows
        Raw rows a worker keeps per version while it has no reference layout.
    max_pending_buckets
        Buckets the monitor holds beyond the watermark; if the watermark stalls,
        the oldest are evaluated early (memory stays bounded).
    """

    reference_events: int = 5000
    reference_outcomes: int = 1000
    bucket_ms: int = 5000
    bucket_events: int = 0
    min_bucket_ms: int = 250
    window_buckets: int = 8
    numeric_bins: int = 10
    top_k: int = 20
    max_known: int = 1000
    numeric_detectors: tuple[str, ...] = ("psi", "rank_cusum")
    categorical_detectors: tuple[str, ...] = ("js", "unseen")
    error_detectors: tuple[str, ...] = ("binomial_cusum",)
    budget_events: int = 100_000
    budget_per: str = "detector"
    consecutive: int = 2
    resolve_ratio: float = 0.7
    resolve_after: int = 4
    ongoing_every: int = 30
    cusum_shift: float = 0.5
    error_shift_relative: float = 0.5
    error_shift_absolute: float = 0.02
    error_rate_quantile: float = 0.99
    calibration_budgets: int = 20
    calibration_safety: float = 2.0
    calibration_chains: int = 16
    calibration_quantile: float = 0.9
    events_per_bucket: float | None = None
    outcomes_per_bucket: float | None = None
    max_versions: int = 3
    max_raw_rows: int = 50_000
    max_pending_buckets: int = 720
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("reference_events", "reference_outcomes", "bucket_ms", "window_buckets", "numeric_bins",
                    "top_k", "budget_events", "consecutive", "resolve_after", "calibration_budgets",
                    "calibration_chains", "max_versions", "max_raw_rows", "max_pending_buckets")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"drift setting {name} must be >= 1, got {getattr(self, name)!r}")
        if self.bucket_events < 0 or self.min_bucket_ms < 1:
            raise ConfigError("drift setting bucket_events must be >= 0 and min_bucket_ms >= 1")
        if self.budget_per not in ("model", "detector"):
            raise ConfigError(f"drift setting budget_per must be model or detector, got {self.budget_per!r}")
        if self.max_known < self.top_k:
            raise ConfigError("drift setting max_known must be >= top_k")
        if not 0.0 < self.calibration_quantile <= 1.0 or not 0.5 <= self.error_rate_quantile < 1.0:
            raise ConfigError("drift calibration_quantile must be in (0, 1] and error_rate_quantile in [0.5, 1)")
        if not 0.0 < self.resolve_ratio <= 1.0:
            raise ConfigError("drift setting resolve_ratio must be in (0, 1]")
        if self.calibration_safety < 1.0 or self.cusum_shift <= 0 or self.error_shift_relative < 0:
            raise ConfigError("drift calibration_safety must be >= 1 and the shifts positive")
        for name, allowed in (("numeric_detectors", ("psi", "ks", "wasserstein", "chi2", "rank_cusum")),
                              ("categorical_detectors", ("js", "chi2", "psi", "unseen")),
                              ("error_detectors", ("binomial_cusum",))):
            bad = [d for d in getattr(self, name) if d not in allowed]
            if bad:
                raise ConfigError(f"drift setting {name}: unknown detector(s) {bad}; choose from {allowed}")


def bucket_width(config: DriftConfig, n: int, span_ms: int) -> int:
    """The bucket width of a version whose reference holds ``n`` events over ``span_ms`` of event time.

    ``bucket_ms`` halved while a bucket would hold more than ``bucket_events`` events and the half is
    at least ``min_bucket_ms`` (see :class:`DriftConfig`).

    >>> c = DriftConfig(bucket_ms=5000, bucket_events=2000)
    >>> bucket_width(c, 5000, 1250), bucket_width(c, 5000, 50_000), bucket_width(DriftConfig(), 5000, 1250)
    (312, 5000, 5000)
    """
    width = config.bucket_ms
    if config.bucket_events <= 0 or n < 2:
        return width
    per = (n - 1) * width / max(span_ms, 1)
    while per > config.bucket_events and width // 2 >= config.min_bucket_ms:
        width //= 2
        per /= 2
    return width


def width_of(config: DriftConfig, profile: object | None) -> int:
    """The bucket width a version counts with: its profile's, else the configured ``bucket_ms``."""
    w = getattr(profile, "bucket_ms", 0) if profile is not None else 0
    return int(w) if w else config.bucket_ms
