"""Per-bucket evaluation and alarm state of a :class:`~loopline.processors.drift.monitor.DriftMonitor`.

The monitor (``monitor.py``) ingests summaries, chooses references and
decides *when* a bucket is evaluated; this module holds *what* is evaluated:
the per-version state (:class:`VersionState`: reference, count rings,
detector slots), the detectors installed for a reference, one bucket's
evaluation (window tests on the last ``window_buckets`` buckets, CUSUMs on the
bucket) and the hysteresis that turns scores into ``started`` / ``ongoing`` /
``resolved`` DriftEvent dicts.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from loopline.processors.drift.columns import Columns
from loopline.processors.drift.config import width_of
from loopline.processors.drift.detectors import BinomialCusum, Hysteresis, RankCusum, WindowTest
from loopline.processors.drift.reference import ErrorReference, ReferenceProfile


class Slot:
    """One detector on one signal of one version."""

    __slots__ = ("signal", "index", "detector", "hysteresis", "score", "threshold", "n", "window")

    def __init__(self, signal: str, index: int, detector, hysteresis: Hysteresis, window: str) -> None:
        self.signal, self.index, self.detector, self.hysteresis = signal, index, detector, hysteresis
        self.score, self.threshold, self.n, self.window = math.nan, detector.calibration.threshold, 0, window


class VersionState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.profile: ReferenceProfile | None = None
        self.pool: list[Columns] = []
        self.pool_rows = 0
        self.out_pool: list[Columns] = []
        self.ring: dict[int, np.ndarray] = {}
        self.out_ring: dict[int, np.ndarray] = {}
        self.slots: list[Slot] = []
        self.error_slot: Slot | None = None
        self.last_pred = -(1 << 62)
        self.last_out = -(1 << 62)
        self.last_ms = -1
        self.dropped = 0
        self.late = 0


class BucketEvaluation:
    """Evaluation half of :class:`~loopline.processors.drift.monitor.DriftMonitor` (needs ``config``, ``model_name``,
    ``_detections``)."""

    def _hysteresis(self, consecutive: int) -> Hysteresis:
        c = self.config
        return Hysteresis(consecutive, c.resolve_ratio, c.resolve_after, c.ongoing_every)

    def _split_config(self, profile: ReferenceProfile | None):
        """The config each detector of a version is calibrated with: ``budget_events`` times the version's
        detector count when the budget is per model (a profile not installed yet counts the error detector only)."""
        c = self.config
        if c.budget_per != "model":
            return c
        n = len(c.error_detectors)
        for sig in (profile.signals if profile is not None else ()):
            n += len(c.numeric_detectors if sig.kind == "numeric" else c.categorical_detectors)
        return dataclasses.replace(c, budget_events=c.budget_events * max(n, 1))

    def _install_profile(self, vs: VersionState, profile: ReferenceProfile) -> None:
        c = self._split_config(profile)
        vs.profile = profile
        s = c.events_per_bucket or profile.events_per_bucket
        ref = f"reference {profile.model_version} ({profile.n_events} events)"
        for i, sig in enumerate(profile.signals):
            names = c.numeric_detectors if sig.kind == "numeric" else c.categorical_detectors
            for d in names:
                if d == "rank_cusum":
                    det = RankCusum(sig, s, c)
                    vs.slots.append(Slot(sig.name, i, det, self._hysteresis(1), f"CUSUM since {ref}"))
                else:
                    det = WindowTest(d, sig, s, c)
                    window = f"last {c.window_buckets} x {width_of(c, profile)} ms buckets vs {ref}"
                    vs.slots.append(Slot(sig.name, i, det, self._hysteresis(c.consecutive), window))

    def _install_error(self, vs: VersionState, err: ErrorReference) -> None:
        det = BinomialCusum(err, self._split_config(vs.profile))
        vs.error_slot = Slot("error", -1, det, self._hysteresis(1),
                              f"error CUSUM p0={det.p0:.4f} vs p1={det.p1:.4f} since reference of {err.n} outcomes")

    def _evaluate(self, vs: VersionState, b: int, events: list[dict]) -> None:
        at = (b + 1) * width_of(self.config, vs.profile)
        if b in vs.ring and vs.slots:
            profile = vs.profile
            window = np.zeros(profile.total_bins, np.int64)
            for x in range(b - self.config.window_buckets + 1, b + 1):
                c = vs.ring.get(x)
                if c is not None:
                    window += c
            bucket = vs.ring[b]
            off = profile.offsets
            for slot in vs.slots:
                lo, hi = off[slot.index], off[slot.index + 1]
                self._step(vs, slot, slot.detector.evaluate(window[lo:hi], bucket[lo:hi]), at, events)
            vs.last_pred = b
        if b in vs.out_ring and vs.error_slot is not None:
            n, e = (int(x) for x in vs.out_ring.pop(b))
            self._step(vs, vs.error_slot, vs.error_slot.detector.evaluate_counts(n, e), at, events)
            vs.last_out = b

    def _step(self, vs: VersionState, slot: Slot, result: tuple[float, float, int], at: int, events: list[dict]) -> None:
        score, threshold, n = result
        slot.n, slot.threshold = n, threshold
        if not math.isnan(score):
            slot.score = score
        change = slot.hysteresis.step(score, threshold)
        if change is None:
            return
        if change == "started":
            key = (slot.signal, slot.detector.detector)
            self._detections[key] = self._detections.get(key, 0) + 1
        events.append(self._event(vs, slot, change, at))

    def _event(self, vs: VersionState, slot: Slot, state: str, at: int) -> dict:
        score = 0.0 if math.isnan(slot.score) else float(slot.score)
        return {"model_name": self.model_name, "model_version": vs.name, "signal": slot.signal,
                "detector": slot.detector.detector, "score": score, "threshold": float(slot.threshold),
                "window": slot.window, "state": state, "detected_at": int(at)}

    def _prune(self, vs: VersionState) -> None:
        keep = vs.last_pred - self.config.window_buckets
        for b in [b for b in vs.ring if b <= keep]:
            del vs.ring[b]
