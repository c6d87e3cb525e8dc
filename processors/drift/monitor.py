"""``DriftMonitor``: verdicts for one model from merged, additive counts.

The monitor is the only place where drift is *decided*. It ingests summaries
(from its own :class:`~loopline.processors.drift.histogram.DriftSketch` in a single
process, or from every worker's sketch, merged or not), and evaluates each
time bucket once, when ``advance(watermark_ms)`` passes the bucket's end:

* **reference** — until a version has a reference (a pinned baseline or its
  first ``reference_events`` predictions by ``(emitted_at, event_id)``), rows
  arrive raw; when ``reference_events`` rows lie before the watermark the
  profile is built, every detector is calibrated, and the remaining rows are
  binned. A new model version starts its own reference; at most
  ``max_versions`` versions are tracked (the least recently active is dropped,
  resolving its alarms). :meth:`profiles` returns the frozen profiles for the
  workers' sketches (:meth:`DriftSketch.set_reference`);
* **evaluation** — per bucket with data: window tests on the sum of the last
  ``window_buckets`` buckets, the rank CUSUM on the bucket, the error CUSUM on
  the bucket's outcomes; each detector's :class:`Hysteresis` turns scores into
  ``started``/``ongoing``/``resolved`` DriftEvent dicts.

Because verdicts depend only on summed integer counts and on the bucket
sequence, N workers give exactly the verdicts of one.

This module holds ingestion, reference selection and version bookkeeping;
per-bucket evaluation and alarm state live in :mod:`loopline.processors.drift.evaluation`.

>>> import numpy as np
>>> cfg = DriftConfig(reference_events=500, bucket_ms=100, window_buckets=4, calibration_budgets=10)
>>> m = DriftMonitor("m", cfg)
>>> rng = np.random.default_rng(3)
>>> def events(lo, hi, shift=0.0):
...     return [{"event_id": f"e{i}", "model_name": "m", "model_version": "v1", "emitted_at": i,
...              "features_numeric": {"x": float(rng.normal(shift))}, "features_categorical": {},
...              "predicted_label": "a", "confidence": 0.9} for i in range(lo, hi)]
>>> m.update(events(0, 3000))
[]
>>> [(e["signal"], e["detector"], e["state"]) for e in m.update(events(3000, 4000, shift=1.0))]
[('x', 'rank_cusum', 'started'), ('x', 'psi', 'started')]
>>> m.status()["signals"]["x"]["active"]
True
"""
from __future__ import annotations

import math

import numpy as np

from loopline.processors.drift.columns import Columns
from loopline.processors.drift.config import DriftConfig, bucket_width, width_of
from loopline.processors.drift.evaluation import BucketEvaluation, VersionState
from loopline.processors.drift.histogram import DriftSketch, add_counts, count_buckets, count_outcomes
from loopline.processors.drift.reference import ErrorReference, ReferenceProfile, build_profile
from loopline.processors.errors import ConfigError


class DriftMonitor(BucketEvaluation):
    """Drift verdicts for one model (see the module docstring).

    Parameters
    ----------
    model_name
        The model watched.
    config
        Drift settings.
    baselines
        Pinned reference profiles (from :class:`~loopline.processors.drift.baseline.BaselineBuilder`),
        used instead of the first events for their versions.
    """

    def __init__(self, model_name: str, config: DriftConfig | None = None,
                 baselines: list[ReferenceProfile] | tuple = ()) -> None:
        self.model_name = model_name
        self.config = config or DriftConfig()
        self.baselines = tuple(baselines)
        self._pinned = {p.model_version: p for p in self.baselines}
        self._versions: dict[str, VersionState] = {}
        self._sketch = DriftSketch(model_name, self.config)
        self._pending: list[dict] = []
        self._detections: dict[tuple[str, str], int] = {}
        for p in self.baselines:
            if p.model_name != model_name:
                raise ConfigError(f"baseline of model {p.model_name!r} given to the monitor of {model_name!r}")
            self._sketch.set_reference(p)

    # ---- single process -------------------------------------------------
    def update(self, predictions=(), outcomes: list[dict] | None = None, watermark_ms: int | None = None) -> list[dict]:
        """Count a batch and evaluate every bucket that closed: the single-worker path.

        ``predictions``: decoded ``PredictionEvent`` dicts or frames; ``outcomes``:
        ``{"model_version", "event_id", "time_ms", "error"}`` dicts or ``TrainingExample``
        dicts. The watermark defaults to the latest event time seen.
        """
        self._sketch.update(predictions, outcomes)
        return self._flush(watermark_ms)

    def update_columns(self, model_version: str, rows: Columns | None = None, outcomes: Columns | None = None,
                       watermark_ms: int | None = None) -> list[dict]:
        """:meth:`update` for callers that already hold columns (see :class:`Columns`)."""
        self._sketch.update_columns(model_version, rows, outcomes)
        return self._flush(watermark_ms)

    def _flush(self, watermark_ms: int | None) -> list[dict]:
        summary = self._sketch.summary()
        self.ingest(summary)
        events = self.advance(summary["watermark_ms"] if watermark_ms is None else watermark_ms)
        for p in self.profiles().values():
            self._sketch.set_reference(p)
        return events

    # ---- merge path -----------------------------------------------------
    def ingest(self, summary: dict) -> None:
        """Add a (worker's or merged) summary; nothing is evaluated until :meth:`advance`."""
        if summary["model_name"] != self.model_name:
            raise ConfigError(f"summary of model {summary['model_name']!r} given to the monitor of {self.model_name!r}")
        for name, part in summary["versions"].items():
            vs = self._version(name)
            bucket_ms = width_of(self.config, vs.profile)
            vs.dropped += part["dropped"]
            if part["rows"] is not None:
                rows = Columns.from_json(part["rows"])
                if len(rows):
                    vs.last_ms = max(vs.last_ms, int(rows.t.max()))
                if vs.profile is None:
                    vs.pool.append(rows)
                    vs.pool_rows += len(rows)
                    self._cap_pool(vs)
                else:
                    self._add_pred(vs, count_buckets(vs.profile, rows, bucket_ms))
            if part["buckets"]:
                if vs.profile is None or part["fingerprint"] != vs.profile.fingerprint:
                    raise ConfigError(f"version {name}: counts binned with a reference layout "
                                      "this monitor does not hold")
                counts = {int(b): np.asarray(c, np.int64) for b, c in part["buckets"].items()}
                vs.last_ms = max(vs.last_ms, (max(counts) + 1) * bucket_ms - 1)
                self._add_pred(vs, counts)
            if part["outcomes"] is not None:
                out = Columns.from_json(part["outcomes"])
                if len(out):
                    vs.last_ms = max(vs.last_ms, int(out.t.max()))
                if vs.error_slot is None:
                    vs.out_pool.append(out)
                else:
                    self._add_out(vs, count_outcomes(out, bucket_ms))
            if part["outcome_buckets"]:
                self._add_out(vs, {int(b): np.asarray(c, np.int64) for b, c in part["outcome_buckets"].items()})
            self._force_pending(vs)
        self._evict()

    def advance(self, watermark_ms: int) -> list[dict]:
        """Evaluate every bucket ending at or before ``watermark_ms``; return DriftEvent dicts."""
        events, self._pending = self._pending, []
        w = int(watermark_ms)
        for name in sorted(self._versions):
            vs = self._versions[name]
            if vs.profile is None:
                self._freeze_predictions(vs, w)
            if vs.error_slot is None:
                self._freeze_outcomes(vs, w)
            closed = w // width_of(self.config, vs.profile)  # buckets < closed have ended
            todo = sorted({b for b in vs.ring if vs.last_pred < b < closed}
                          | {b for b in vs.out_ring if vs.last_out < b < closed})
            for b in todo:
                self._evaluate(vs, b, events)
            self._prune(vs)
        events.sort(key=lambda e: e["detected_at"])
        return events

    def profiles(self) -> dict[str, ReferenceProfile]:
        """Frozen reference profiles by version (pinned ones included): publish them to the workers' sketches."""
        out = dict(self._pinned)
        out.update({n: v.profile for n, v in self._versions.items() if v.profile is not None})
        return out

    # ---- reports --------------------------------------------------------
    def status(self, version: str | None = None) -> dict:
        """Per signal and detector: score, threshold, active — for review insights and metrics."""
        name = version
        if name is None and self._versions:
            name = max(self._versions, key=lambda n: (self._versions[n].last_ms, n))
        vs = self._versions.get(name) if name is not None else None
        out = {"model_name": self.model_name, "model_version": name, "phase": "idle", "signals": {},
               "active_signals": [], "detections_total": sum(self._detections.values())}
        if vs is None:
            return out
        out["phase"] = "monitoring" if vs.profile is not None else "reference"
        out["reference_events"] = vs.profile.n_events if vs.profile is not None else vs.pool_rows
        out["dropped_events"] = vs.dropped
        out["late_events"] = vs.late
        for slot in vs.slots + ([vs.error_slot] if vs.error_slot else []):
            sig = out["signals"].setdefault(slot.signal, {"active": False, "detectors": {}})
            active = slot.hysteresis.active
            sig["detectors"][slot.detector.detector] = {
                "score": None if math.isnan(slot.score) else slot.score, "threshold": slot.threshold,
                "active": active, "window_events": slot.n}
            sig["active"] = sig["active"] or active
        out["active_signals"] = [s for s, d in out["signals"].items() if d["active"]]
        return out

    def footprint(self) -> dict:
        """What the monitor holds (bounded: raw rows only until a reference freezes, ring buckets
        only for the current window and unevaluated buckets)."""
        vs = self._versions.values()
        return {"versions": len(self._versions),
                "raw_rows": sum(v.pool_rows + sum(len(p) for p in v.out_pool) for v in vs),
                "ring_buckets": sum(len(v.ring) + len(v.out_ring) for v in vs),
                "count_cells": sum(sum(c.size for c in v.ring.values()) + 2 * len(v.out_ring) for v in vs),
                "detectors": sum(len(v.slots) + (v.error_slot is not None) for v in vs)}

    def metric_samples(self) -> list[tuple[str, dict, float]]:
        """``(metric, labels, value)`` for loopline_drift_score / _active / _detections_total."""
        st = self.status()
        m = self.model_name
        samples = []
        for signal, d in st["signals"].items():
            samples.append(("loopline_drift_active", {"model": m, "signal": signal}, 1.0 if d["active"] else 0.0))
            for det, v in d["detectors"].items():
                if v["score"] is not None:
                    labels = {"model": m, "signal": signal, "detector": det}
                    samples.append(("loopline_drift_score", labels, v["score"]))
        for (signal, det), n in sorted(self._detections.items()):
            labels = {"model": m, "signal": signal, "detector": det}
            samples.append(("loopline_drift_detections_total", labels, float(n)))
        return samples

    # ---- internals ------------------------------------------------------
    def _version(self, name: str) -> VersionState:
        vs = self._versions.get(name)
        if vs is None:
            vs = self._versions[name] = VersionState(name)
            pinned = self._pinned.get(name)
            if pinned is not None:
                self._install_profile(vs, pinned)
                if pinned.error is not None:
                    self._install_error(vs, pinned.error)
        return vs

    def _add_pred(self, vs: VersionState, counts: dict[int, np.ndarray]) -> None:
        keep = vs.last_pred - self.config.window_buckets
        for b, c in counts.items():
            if b <= keep:
                vs.late += int(c.sum()) // max(len(vs.profile.signals), 1)
                continue
            if b <= vs.last_pred:
                vs.late += int(c.sum()) // max(len(vs.profile.signals), 1)
            add_counts(vs.ring, {b: c})

    def _add_out(self, vs: VersionState, counts: dict[int, np.ndarray]) -> None:
        for b, c in counts.items():
            if b <= vs.last_out:  # already evaluated: counted in the next bucket evaluated
                vs.late += int(c[0])
                b = vs.last_out + 1
            add_counts(vs.out_ring, {b: c})

    def _cap_pool(self, vs: VersionState) -> None:
        cap = max(4 * self.config.reference_events, self.config.max_raw_rows)
        if vs.pool_rows > cap:
            pool = Columns.concat(vs.pool)
            vs.dropped += len(pool) - cap
            vs.pool, vs.pool_rows = [pool.first(cap)], cap

    def _freeze_predictions(self, vs: VersionState, w: int) -> None:
        n = self.config.reference_events
        if vs.pool_rows < n:
            return
        pool = Columns.concat(vs.pool)
        if int(np.sum(pool.t < w)) < n:
            vs.pool = [pool]
            return
        order = pool.order()
        c = self.config
        ref = pool.take(order[:n])
        width = bucket_width(c, n, int(ref.t.max() - ref.t.min()))
        profile = build_profile(ref, self.model_name, vs.name, width, c.numeric_bins, c.top_k, c.max_known)
        vs.pool, vs.pool_rows = [], 0
        self._install_profile(vs, profile)
        self._add_pred(vs, count_buckets(profile, pool.take(order[n:]), width))

    def _freeze_outcomes(self, vs: VersionState, w: int) -> None:
        n = self.config.reference_outcomes
        if sum(len(p) for p in vs.out_pool) < n or (self.config.bucket_events and vs.profile is None):
            return  # with adaptive buckets the width comes with the predictions' reference: wait for it
        pool = Columns.concat(vs.out_pool)
        if int(np.sum(pool.t < w)) < n:
            vs.out_pool = [pool]
            return
        order = pool.order()
        ref = pool.take(order[:n])
        span = max(int(ref.t.max() - ref.t.min()), 1)
        width = width_of(self.config, vs.profile)
        per_bucket = self.config.outcomes_per_bucket or max((n - 1) * width / span, 1e-3)
        err = ErrorReference(n, int(round(ref.fields["error"].sum())), float(min(per_bucket, n)))
        vs.out_pool = []
        self._install_error(vs, err)
        if vs.profile is not None:
            vs.profile.error = err
        self._add_out(vs, count_outcomes(pool.take(order[n:]), width))

    def _force_pending(self, vs: VersionState) -> None:
        """Bound memory when the watermark stalls: evaluate the oldest buckets beyond ``max_pending_buckets``."""
        limit = self.config.max_pending_buckets
        pending = sorted({b for b in vs.ring if b > vs.last_pred} | {b for b in vs.out_ring if b > vs.last_out})
        if len(pending) > limit:
            for b in pending[:len(pending) - limit]:
                self._evaluate(vs, b, self._pending)
            self._prune(vs)

    def _evict(self) -> None:
        while len(self._versions) > self.config.max_versions:
            name = min(self._versions, key=lambda n: (self._versions[n].last_ms, n))
            vs = self._versions.pop(name)
            for slot in vs.slots + ([vs.error_slot] if vs.error_slot else []):
                if slot.hysteresis.active:
                    slot.hysteresis.active = False
                    ev = self._event(vs, slot, "resolved", max(vs.last_ms, 0))
                    ev["window"] = "model version retired"
                    self._pending.append(ev)
