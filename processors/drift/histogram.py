"""The worker side: count a model's predictions and outcomes per time bucket.

A :class:`DriftSketch` never decides anything. It turns batches into
*additive* summaries: per model version and time bucket, histogram counts of
every signal (once the version's reference layout is known) and the number of
outcomes and errors; before that, the raw rows (bounded), from which the
evaluator picks the reference. Summing summaries (:func:`merge_summaries`) is
associative and commutative, so any split of the events over workers gives the
same merged counts, and the :class:`~loopline.processors.drift.monitor.DriftMonitor`
that evaluates them gives the same verdicts.

Memory is bounded: a flushed sketch holds nothing; between flushes, at most
``max_raw_rows`` raw rows per version and one count vector per time bucket.

>>> from loopline.processors.testing import make_events
>>> sk = DriftSketch("fraud", DriftConfig(bucket_ms=1000))
>>> sk.update(make_events(10, start_ms=0))
>>> s = sk.summary()
>>> len(s["versions"]["v1"]["rows"]["ids"]), s["watermark_ms"]
(10, 9)
>>> sk.summary()["versions"]
{}
"""
from __future__ import annotations

import json
import zlib

import numpy as np

from loopline.processors.drift.columns import Columns, outcome_columns
from loopline.processors.drift.config import DriftConfig, width_of
from loopline.processors.drift.reference import ReferenceProfile
from loopline.processors.errors import ConfigError
from loopline.processors.wire.frame import PredictionFrame, frames_from_events

SUMMARY_FORMAT = "loopline.drift.summary/1"


def frames_of(predictions) -> list[PredictionFrame]:
    """Frames from a list of decoded ``PredictionEvent`` dicts, a frame, or a list of frames."""
    if isinstance(predictions, PredictionFrame):
        return [predictions]
    predictions = list(predictions)
    if predictions and isinstance(predictions[0], PredictionFrame):
        return predictions
    return frames_from_events(predictions) if predictions else []


def count_buckets(profile: ReferenceProfile, cols: Columns, bucket_ms: int) -> dict[int, np.ndarray]:
    """Histogram counts per time bucket: one ``searchsorted`` per signal and one ``bincount``."""
    if not len(cols):
        return {}
    return count_codes(profile.bin_columns(cols), cols.t, profile.total_bins, bucket_ms)


def count_codes(codes: np.ndarray, times: np.ndarray, total_bins: int, bucket_ms: int) -> dict[int, np.ndarray]:
    """Counts per time bucket of global bin codes ``(rows, signals)`` (see ``ReferenceProfile.bin_columns``)."""
    b = np.asarray(times, dtype=np.int64) // bucket_ms
    if len(b) and b[0] == b[-1] and (b == b[0]).all():  # the common case: a frame within one bucket
        return {int(b[0]): np.bincount(codes.ravel(), minlength=total_bins)}
    ub, inv = np.unique(b, return_inverse=True)
    t = total_bins
    flat = (inv.reshape(-1, 1) * t + codes).ravel()
    counts = np.bincount(flat, minlength=len(ub) * t).reshape(len(ub), t)
    return {int(b): counts[i] for i, b in enumerate(ub.tolist())}


def count_outcomes(cols: Columns, bucket_ms: int) -> dict[int, np.ndarray]:
    """``[outcomes, errors]`` per time bucket."""
    if not len(cols):
        return {}
    ub, inv = np.unique(cols.t // bucket_ms, return_inverse=True)
    n = np.bincount(inv, minlength=len(ub))
    e = np.bincount(inv, weights=cols.fields["error"], minlength=len(ub)).round().astype(np.int64)
    return {int(b): np.array([n[i], e[i]], np.int64) for i, b in enumerate(ub.tolist())}


def add_counts(into: dict[int, np.ndarray], new: dict[int, np.ndarray]) -> None:
    for b, c in new.items():
        cur = into.get(b)
        into[b] = c.copy() if cur is None else cur + c


class _Version:
    __slots__ = ("profile", "rows", "n_rows", "outcomes", "buckets", "outcome_buckets", "dropped", "last_ms")

    def __init__(self) -> None:
        self.profile: ReferenceProfile | None = None
        self.rows: list[Columns] = []
        self.n_rows = 0
        self.outcomes: list[Columns] = []
        self.buckets: dict[int, np.ndarray] = {}
        self.outcome_buckets: dict[int, np.ndarray] = {}
        self.dropped = 0
        self.last_ms = -1


class DriftSketch:
    """Per-worker, per-model drift counts (see the module docstring).

    Parameters
    ----------
    model_name
        The model whose predictions this sketch counts.
    config
        Shared drift settings (bucket width, raw-row cap).
    """

    def __init__(self, model_name: str, config: DriftConfig | None = None) -> None:
        self.model_name = model_name
        self.config = config or DriftConfig()
        self._versions: dict[str, _Version] = {}
        self._profiles: dict[str, ReferenceProfile] = {}
        self._watermark = -1

    def set_reference(self, profile: ReferenceProfile) -> None:
        """Use ``profile``'s layout for its version from now on (idempotent)."""
        if profile.model_name != self.model_name:
            raise ConfigError(f"reference for model {profile.model_name!r} given to the sketch of {self.model_name!r}")
        self._profiles.pop(profile.model_version, None)
        self._profiles[profile.model_version] = profile
        while len(self._profiles) > 2 * self.config.max_versions:
            self._profiles.pop(next(iter(self._profiles)))
        v = self._versions.get(profile.model_version)
        if v is not None:
            v.profile = profile

    def _version(self, version: str) -> _Version:
        v = self._versions.get(version)
        if v is None:
            v = self._versions[version] = _Version()
            v.profile = self._profiles.get(version)
        return v

    def update(self, predictions=(), outcomes: list[dict] | None = None) -> None:
        """Count a batch of predictions (dicts or frames) and joined outcomes (see ``outcome_columns``)."""
        for frame in frames_of(predictions):
            if frame.model_name != self.model_name:
                raise ConfigError(f"prediction of model {frame.model_name!r} given to the sketch "
                                  f"of {self.model_name!r}")
            self.update_columns(frame.model_version, Columns.from_frame(frame))
        for version, cols in outcome_columns(outcomes or []).items():
            self.update_columns(version, None, cols)

    def update_frame(self, frame: PredictionFrame) -> None:
        """Count one frame; once its version has a layout, binned straight from the frame's columns."""
        v = self._version(frame.model_version)
        if v.profile is None or not frame.n:
            self.update_columns(frame.model_version, Columns.from_frame(frame))
            return
        last = int(frame.emitted_at.max())
        self._watermark = max(self._watermark, last)
        v.last_ms = max(v.last_ms, last)
        add_counts(v.buckets, count_codes(v.profile.bin_frame(frame), frame.emitted_at, v.profile.total_bins,
                                          width_of(self.config, v.profile)))

    def update_columns(self, model_version: str, rows: Columns | None = None, outcomes: Columns | None = None) -> None:
        """Columnar entry point: prediction rows and/or outcome rows of one version."""
        v = self._version(model_version)
        bucket_ms = width_of(self.config, v.profile)
        if rows is not None and len(rows):
            last = int(rows.t.max())
            self._watermark = max(self._watermark, last)
            v.last_ms = max(v.last_ms, last)
            if v.profile is not None:
                add_counts(v.buckets, count_buckets(v.profile, rows, bucket_ms))
            else:
                room = self.config.max_raw_rows - v.n_rows
                if room < len(rows):
                    v.dropped += len(rows) - max(room, 0)
                    rows = rows.first(max(room, 0))
                v.rows.append(rows)
                v.n_rows += len(rows)
        if outcomes is not None and len(outcomes):
            self._watermark = max(self._watermark, int(outcomes.t.max()))
            if v.profile is not None and v.profile.error is not None:
                add_counts(v.outcome_buckets, count_outcomes(outcomes, bucket_ms))
            else:
                v.outcomes.append(outcomes)

    def summary(self, reset: bool = True) -> dict:
        """The counts since the last summary, JSON-able (see :func:`summary_to_bytes`)."""
        versions = {}
        for name, v in self._versions.items():
            if not (v.rows or v.outcomes or v.buckets or v.outcome_buckets or v.dropped):
                continue
            versions[name] = {
                "fingerprint": v.profile.fingerprint if v.profile is not None else None,
                "rows": Columns.concat(v.rows).to_json() if v.rows else None,
                "outcomes": Columns.concat(v.outcomes).to_json() if v.outcomes else None,
                "buckets": {str(b): c.tolist() for b, c in sorted(v.buckets.items())},
                "outcome_buckets": {str(b): c.tolist() for b, c in sorted(v.outcome_buckets.items())},
                "dropped": v.dropped,
            }
        out = {"format": SUMMARY_FORMAT, "model_name": self.model_name, "watermark_ms": self._watermark,
               "versions": versions}
        if reset:
            self._versions = {}  # nothing is kept between flushes
        return out


def merge_summaries(summaries: list[dict]) -> dict:
    """One summary equal to the sum of ``summaries`` (associative, commutative).

    The merged ``watermark_ms`` is the minimum: the merge has seen every event
    before it only if every part has.
    """
    if not summaries:
        raise ConfigError("merge_summaries needs at least one summary")
    names = {s["model_name"] for s in summaries}
    if len(names) != 1:
        raise ConfigError(f"cannot merge drift summaries of different models: {sorted(names)}")
    versions: dict[str, dict] = {}
    for s in summaries:
        if s.get("format") != SUMMARY_FORMAT:
            raise ConfigError(f"not a drift summary (format {s.get('format')!r})")
        for name, part in s["versions"].items():
            acc = versions.setdefault(name, {"fingerprint": None, "rows": [], "outcomes": [], "buckets": {},
                                             "outcome_buckets": {}, "dropped": 0})
            if part["buckets"]:
                if acc["fingerprint"] not in (None, part["fingerprint"]):
                    raise ConfigError(f"version {name}: summaries binned with different reference layouts")
                acc["fingerprint"] = part["fingerprint"]
            for key in ("rows", "outcomes"):
                if part[key] is not None:
                    acc[key].append(Columns.from_json(part[key]))
            for key in ("buckets", "outcome_buckets"):
                add_counts(acc[key], {int(b): np.asarray(c, np.int64) for b, c in part[key].items()})
            acc["dropped"] += part["dropped"]
    out = {}
    for name, acc in versions.items():
        out[name] = {"fingerprint": acc["fingerprint"],
                     "rows": Columns.concat(acc["rows"]).to_json() if acc["rows"] else None,
                     "outcomes": Columns.concat(acc["outcomes"]).to_json() if acc["outcomes"] else None,
                     "buckets": {str(b): c.tolist() for b, c in sorted(acc["buckets"].items())},
                     "outcome_buckets": {str(b): c.tolist() for b, c in sorted(acc["outcome_buckets"].items())},
                     "dropped": acc["dropped"]}
    return {"format": SUMMARY_FORMAT, "model_name": names.pop(),
            "watermark_ms": min(s["watermark_ms"] for s in summaries), "versions": out}


def summary_to_bytes(summary: dict) -> bytes:
    """Compact bytes for a topic message (zlib-compressed JSON; no pickle)."""
    return zlib.compress(json.dumps(summary, separators=(",", ":")).encode(), 1)


def summary_from_bytes(data: bytes) -> dict:
    try:
        return json.loads(zlib.decompress(data))
    except (zlib.error, ValueError) as exc:
        raise ConfigError(f"undecodable drift summary: {exc}") from exc
