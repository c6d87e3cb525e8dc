"""``FraudTraffic``: a seeded stream of card transactions with a covariate shift and a concept drift.

Events are generated in fixed blocks of :data:`BLOCK` rows, each from its own
random stream keyed by ``(seed, block)``; any chunk size, and any range asked
for with :meth:`FraudTraffic.arrays`, therefore yields exactly the same events.
Ground truth never goes on the wire: chunks carry it as a separate ``int8``
array and the traffic records it in a bounded :class:`GroundTruthStore`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np

from loopline.connectors.simulator.concept import fraud_probability
from loopline.connectors.simulator.events import build_events
from loopline.connectors.simulator.features import COL, countries, draw_population
from loopline.connectors.simulator.ground_truth import LABELS, GroundTruthStore
from loopline.connectors.simulator.producer_model import StaticProducerModel

BLOCK = 8192
#: 2025-01-01T00:00:00Z, a fixed past instant so events are never "from the future"
DEFAULT_START_MS = 1_735_689_600_000


@dataclass(frozen=True)
class TrafficArrays:
    """Columns of the events ``start .. start + len - 1`` (numpy only, nothing per event).

    ``labels`` (1 = fraud) and ``fraud_probability`` (the true ``P(fraud | x)``)
    are ground truth; ``shifted`` / ``drifted`` say which regime each row is in.
    """

    start: int
    numeric: np.ndarray
    merchant: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    emitted_at: np.ndarray
    labels: np.ndarray
    fraud_probability: np.ndarray
    shifted: np.ndarray
    drifted: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def column(self, name: str) -> np.ndarray:
        """One numeric feature column by name (a view)."""
        return self.numeric[:, COL[name]]

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self), dtype=np.int64)

    def rows(self, lo: int, hi: int) -> TrafficArrays:
        """Rows ``lo:hi`` (positions relative to this chunk) as views."""
        lo, hi, _ = slice(lo, hi).indices(len(self))
        return TrafficArrays(self.start + lo, *(getattr(self, f.name)[lo:hi] for f in fields(self)[1:]))


def _concat(parts: list[TrafficArrays]) -> TrafficArrays:
    if len(parts) == 1:
        return parts[0]
    return TrafficArrays(parts[0].start, *(np.concatenate([getattr(p, f.name) for p in parts])
                                           for f in fields(TrafficArrays)[1:]))


@dataclass(frozen=True)
class TrafficChunk:
    """Prediction events ready for the wire, with their ground truth kept apart."""

    start: int
    events: list[dict]
    labels: np.ndarray  # int8, 1 = fraud, aligned with events; never sent
    arrays: TrafficArrays

    def __len__(self) -> int:
        return len(self.events)

    def true_label(self, i: int) -> str:
        """True label of ``events[i]``."""
        return LABELS[self.labels[i]]


def _position(value: int | float | None, n_events: int, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an index (int) or a fraction (float), not a bool")
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{what} as a fraction must be in [0, 1], got {value}")
        return int(round(value * n_events))
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return int(value)


class FraudTraffic:
    """Seeded, fraud-like prediction traffic for the end-to-end demo.

    Parameters
    ----------
    seed
        Non-negative integer; the same seed gives the same events, byte for byte.
    n_events
        Length of the stream produced by :meth:`iter_chunks`.
    feature_shift_at, concept_drift_at
        Where the covariate shift / the concept drift start: an event index
        (``int``) or a fraction of ``n_events`` (``float``); ``None`` = never.
    fraud_rate
        Fraud rate of the unshifted population under either concept.
    amount_shift_sd
        How far the shift moves the mean of ``log(amount)``, in standard
        deviations of ``log(amount)`` (and ``avg_amount_30d`` with it).
    new_country, new_country_share
        A country code that appears only with the shift, and its share of shifted traffic.
    start_ms, events_per_second
        ``emitted_at`` of event ``i`` lies in ``start_ms + [i, i + 1) * 1000 / events_per_second``.
    model_name, model_version
        Echoed in every event.
    model
        The producer model filling the predictions; by default a
        :class:`StaticProducerModel` fitted on ``history(n_train)`` when first needed.
        An unfitted model passed in is fitted the same way.
    id_prefix
        Event ids are ``f"{id_prefix}-{index}"`` (default: the seed).
    truth_capacity
        How many recent events the ground-truth store remembers (default ``n_events``).

    Examples
    --------
    >>> traffic = FraudTraffic(seed=7, n_events=1_000, feature_shift_at=0.5, concept_drift_at=0.8)
    >>> traffic.shift_index, traffic.drift_index
    (500, 800)
    >>> chunk = next(traffic.iter_chunks(chunk_size=256))
    >>> event = chunk.events[0]
    >>> event["event_id"], event["model_name"], sorted(event["context"])
    ('7-0', 'fraud', ['channel', 'country'])
    >>> traffic.true_label("7-0") == chunk.true_label(0)
    True
    >>> sum(len(c) for c in traffic.iter_chunks(chunk_size=300))
    1000
    """

    def __init__(self, seed: int = 0, n_events: int = 100_000, *, feature_shift_at: int | float | None = None,
                 concept_drift_at: int | float | None = None, fraud_rate: float = 0.03,
                 amount_shift_sd: float = 1.0, new_country: str = "PT", new_country_share: float = 0.15,
                 start_ms: int = DEFAULT_START_MS, events_per_second: float = 1000.0, model_name: str = "fraud",
                 model_version: str = "v1", model: StaticProducerModel | None = None, n_train: int = 20_000,
                 id_prefix: str | None = None, truth_capacity: int | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if n_events < 0:
            raise ValueError(f"n_events must be >= 0, got {n_events}")
        if events_per_second <= 0:
            raise ValueError(f"events_per_second must be positive, got {events_per_second}")
        self.seed = int(seed)
        self.n_events = int(n_events)
        self.feature_shift_at = feature_shift_at
        self.concept_drift_at = concept_drift_at
        self.fraud_rate = fraud_rate
        self.amount_shift_sd = amount_shift_sd
        self.new_country = new_country
        self.new_country_share = new_country_share
        self.start_ms = int(start_ms)
        self.events_per_second = float(events_per_second)
        self.model_name = model_name
        self.model_version = model_version
        self.n_train = n_train
        self.id_prefix = str(self.seed) if id_prefix is None else id_prefix
        self.truth_capacity = truth_capacity
        self.shift_index = _position(feature_shift_at, self.n_events, "feature_shift_at")
        self.drift_index = _position(concept_drift_at, self.n_events, "concept_drift_at")
        self.country_names = countries(new_country)
        self.truth = GroundTruthStore(truth_capacity or max(self.n_events, 1), self.id_prefix)
        self._model = model
        self._cache: dict[tuple[int, int], TrafficArrays] = {}

    # ------------------------------------------------------------- columns
    def _block(self, stream: int, k: int, regimes: bool) -> TrafficArrays:
        key = (stream, k)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        rng = np.random.default_rng([self.seed, stream, k])
        idx = np.arange(k * BLOCK, (k + 1) * BLOCK, dtype=np.int64)
        no = np.zeros(BLOCK, dtype=bool)
        shifted = idx >= self.shift_index if regimes and self.shift_index is not None else no
        drifted = idx >= self.drift_index if regimes and self.drift_index is not None else no
        pop = draw_population(rng, BLOCK, shifted, amount_shift_sd=self.amount_shift_sd,
                              new_country_code=self.country_names.index(self.new_country),
                              new_country_share=self.new_country_share)
        p = fraud_probability(pop, drifted, self.fraud_rate)
        labels = (rng.random(BLOCK) < p).astype(np.int8)
        slot = (idx + rng.random(BLOCK)) * (1000.0 / self.events_per_second)
        emitted_at = self.start_ms + np.floor(slot).astype(np.int64)
        block = TrafficArrays(k * BLOCK, pop.numeric, pop.merchant, pop.country, pop.channel, emitted_at, labels,
                              p, shifted, drifted)
        for f in fields(block)[1:]:  # cached and handed out as views: nobody may write into them
            getattr(block, f.name).flags.writeable = False
        if len(self._cache) >= 2:  # chunk boundaries only ever need the previous block again
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = block
        return block

    def _range(self, stream: int, start: int, stop: int, regimes: bool) -> TrafficArrays:
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got {start}..{stop}")
        if start == stop:
            return self._block(stream, start // BLOCK, regimes).rows(0, 0)
        first, last = start // BLOCK, (stop - 1) // BLOCK
        parts = [self._block(stream, k, regimes) for k in range(first, last + 1)]
        lo = start - first * BLOCK
        return _concat(parts).rows(lo, lo + stop - start)

    def arrays(self, start: int, stop: int) -> TrafficArrays:
        """Columns of events ``start .. stop - 1`` (any range, also past ``n_events``)."""
        return self._range(0, start, stop, regimes=True)

    def iter_arrays(self, chunk_size: int = 10_000, start: int = 0, stop: int | None = None
                    ) -> Iterator[TrafficArrays]:
        """Columns only, chunk by chunk, up to ``stop`` (default ``n_events``)."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        stop = self.n_events if stop is None else stop
        for lo in range(start, stop, chunk_size):
            yield self.arrays(lo, min(lo + chunk_size, stop))

    def history(self, n: int) -> TrafficArrays:
        """``n`` events of the traffic's past: unshifted, original concept, own random stream.

        Indices (and ``start``) are negative, ``-n .. -1``, and ``emitted_at`` lies
        before ``start_ms``; none of these events is ever emitted by :meth:`iter_chunks`.
        """
        a = self._range(1, 0, n, regimes=False)
        back = int(np.ceil(n * 1000.0 / self.events_per_second))
        return TrafficArrays(-n, a.numeric, a.merchant, a.country, a.channel, a.emitted_at - back, a.labels,
                             a.fraud_probability, a.shifted, a.drifted)

    # ------------------------------------------------------------- events
    @property
    def model(self) -> StaticProducerModel:
        """The producer model (fitted on ``history(n_train)`` the first time it is needed)."""
        if self._model is None:
            self._model = StaticProducerModel()
        if not self._model.fitted:
            self._model.fit(self.history(self.n_train))
        return self._model

    def events(self, arrays: TrafficArrays) -> list[dict]:
        """PredictionEvent dicts for ``arrays``, scored by :attr:`model`."""
        model = self.model
        return build_events(arrays, model.predict_proba(arrays), prefix=self.id_prefix,
                            country_names=self.country_names, model_name=self.model_name,
                            model_version=self.model_version, threshold=model.threshold)

    def iter_chunks(self, chunk_size: int = 10_000, start: int = 0, stop: int | None = None
                    ) -> Iterator[TrafficChunk]:
        """Prediction events chunk by chunk; records each chunk's truth in :attr:`truth`."""
        for a in self.iter_arrays(chunk_size, start, stop):
            self.truth.record(a.start, a.labels)
            yield TrafficChunk(a.start, self.events(a), a.labels, a)

    def true_label(self, event_id: str) -> str | None:
        """Ground truth of an emitted event (``None`` if not emitted yet, forgotten or foreign)."""
        return self.truth.label_of(event_id)
