"""Reliability curves and expected calibration error from verified outcomes, mergeable across workers.

**What counts.** A verified outcome is a joined ``TrainingExample`` whose
effective human label is known. It is *correct* when that label equals the
predicted label. Every outcome is weighted by ``1 / sampling_propensity``: an
audit of the auto tier was drawn with probability ``p`` (the audit rate) and
stands for ``1 / p`` auto events; a review or escalation task is created for
every event that hits its rule (propensity 1.0), so its outcome stands for
itself. Together they form an inverse-propensity sample of *all* predictions,
so a confidence bin's weighted accuracy estimates the accuracy of every
prediction in that bin, not only of the reviewed ones (review outcomes are not
a random sample of the auto tier, but they are a census of the band they come
from, which is what the weights say). Unanswered tasks are assumed missing at
random; label coverage is reported by :mod:`loopline.processors.quality.slices`.

**Auto-eligible outcomes.** For the threshold autopilot only outcomes of events
that *would* be auto-approved at a lower threshold count: audits of the auto
tier, and review/escalate outcomes routed by a confidence rule (reason
``confidence...``). Events routed by risk/context/new-version rules go to a
human whatever the threshold, so they are kept out of the auto-tier estimate. With per-class thresholds
(``min_confidence_by_class``) these cells are binned by the *margin*: the
confidence minus how far the predicted class's threshold sits above the global
one, so "auto at global threshold t" is "margin >= t" for every class.

**Bins and windows.** ``bins`` fixed-width confidence bins over [0, 1]
(default 200, width 0.005 — the autopilot's threshold grid); the reliability
curve and ECE are read at ``display_bins`` (default 10) coarser bins, each the
sum of ``bins / display_bins`` fine ones. Cells exist per (model, model
version) for all time and for one tumbling window (current and previous, on
the outcome's ``reviewed_at``), reusing :mod:`loopline.processors.stats.tier_stats` windows.
Each cell is a :class:`BinnedOutcomes`: integer counts and weighted sums per
bin, so merging two workers' states adds arrays (exact for counts).

>>> t = CalibrationTracker(bins=10, display_bins=10)
>>> t.update(["m"] * 4, ["v1"] * 4, [0.95, 0.95, 0.55, 0.55], [True, False, True, True], [1.0] * 4,
...          [True] * 4, [0] * 4)
>>> [(round(b["confidence"], 2), b["accuracy"], b["n"]) for b in t.curve("m")]
[(0.55, 1.0, 2), (0.95, 0.5, 2)]
>>> round(t.ece("m"), 3)
0.45
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from statistics import NormalDist

import numpy as np

from loopline.processors.stats.summary import Z95, wilson
from loopline.processors.stats.tier_stats import OTHER_MODEL, _codes, _Granularity

FIELDS = ("w", "w2", "wy", "w2y", "wc")  # weight, weight^2, weight*correct, weight^2*correct, weight*confidence


def z_one_sided(level: float) -> float:
    """Normal quantile for a one-sided bound at ``level`` (0.95 -> 1.645)."""
    return NormalDist().inv_cdf(level)


class BinnedOutcomes:
    """Weighted verified outcomes in fixed confidence bins; :meth:`add` merges another cell."""

    __slots__ = ("n", "correct", "sums")

    def __init__(self, bins: int) -> None:
        self.n = np.zeros(bins, dtype=np.int64)
        self.correct = np.zeros(bins, dtype=np.int64)
        self.sums = np.zeros((len(FIELDS), bins), dtype=np.float64)

    @property
    def bins(self) -> int:
        return len(self.n)

    @classmethod
    def from_rows(cls, bins: int, b: np.ndarray, correct: np.ndarray, w: np.ndarray, conf: np.ndarray
                  ) -> BinnedOutcomes:
        """One cell from per-row bin index, correctness, weight and confidence (one ``bincount`` each)."""
        out = cls(bins)
        y = correct.astype(np.float64)
        out.n[:] = np.bincount(b, minlength=bins)
        out.correct[:] = np.bincount(b, weights=y, minlength=bins).round().astype(np.int64)
        for i, col in enumerate((w, w * w, w * y, w * w * y, w * conf)):
            out.sums[i] = np.bincount(b, weights=col, minlength=bins)
        return out

    def add(self, other: BinnedOutcomes) -> None:
        self.n += other.n
        self.correct += other.correct
        self.sums += other.sums

    def to_state(self) -> dict:
        return {"n": self.n.tolist(), "correct": self.correct.tolist(), "sums": self.sums.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> BinnedOutcomes:
        out = cls(len(state["n"]))
        out.n[:] = state["n"]
        out.correct[:] = state["correct"]
        out.sums[:] = state["sums"]
        return out

    def coarse(self, display_bins: int) -> BinnedOutcomes:
        """The same outcomes in ``display_bins`` bins (``bins`` must be a multiple of it)."""
        k = self.bins // display_bins
        out = BinnedOutcomes(display_bins)
        out.n[:] = self.n.reshape(display_bins, k).sum(axis=1)
        out.correct[:] = self.correct.reshape(display_bins, k).sum(axis=1)
        out.sums[:] = self.sums.reshape(len(FIELDS), display_bins, k).sum(axis=2)
        return out

    def curve(self, z: float = Z95) -> list[dict]:
        """Non-empty bins: edges, weighted mean confidence and accuracy, counts, Wilson interval on Kish n_eff."""
        out = []
        B = self.bins
        for i in np.flatnonzero(self.n).tolist():
            w, w2, wy, _, wc = self.sums[:, i].tolist()
            if w <= 0:
                continue
            acc, n_eff = wy / w, w * w / w2
            lo, hi = wilson(acc, n_eff, z)
            out.append({"lo": i / B, "hi": (i + 1) / B, "confidence": wc / w, "accuracy": acc,
                        "n": int(self.n[i]), "correct": int(self.correct[i]), "weight": w, "effective_n": n_eff,
                        "ci": [lo, hi]})
        return out

    def ece(self) -> float | None:
        """Expected calibration error: sum over bins of weight share x |accuracy - mean confidence|."""
        w, wy, wc = self.sums[0], self.sums[2], self.sums[4]
        total = w.sum()
        if total <= 0:
            return None
        return float(np.abs(wy - wc).sum() / total)  # per bin w * |wy/w - wc/w| = |wy - wc|

    def tail(self, z: float = Z95) -> dict[str, np.ndarray]:
        """Error rate of the outcomes in bins ``>= k`` for every ``k`` (arrays indexed by k).

        Hajek estimate ``1 - sum(w y) / sum(w)``; interval: Wilson score at ``z`` on
        Kish's effective n; ``n`` raw outcomes. Entries with no weight are NaN.
        """
        rev = lambda a: np.cumsum(a[..., ::-1], axis=-1)[..., ::-1]  # noqa: E731
        n = rev(self.n)
        w, w2, wy = rev(self.sums[0]), rev(self.sums[1]), rev(self.sums[2])
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(w > 0, 1.0 - wy / w, np.nan)
            n_eff = np.where(w2 > 0, w * w / w2, 0.0)
        err = np.clip(err, 0.0, 1.0)
        lo, hi = wilson_arrays(err, n_eff, z)
        return {"n": n, "n_eff": n_eff, "estimate": err, "lower": lo, "upper": hi}


def wilson_arrays(p: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`loopline.processors.stats.summary.wilson` over arrays (NaN p or n <= 0 -> [0, 1])."""
    ok = (n > 0) & np.isfinite(p)
    nn = np.where(ok, n, 1.0)
    pp = np.where(ok, p, 0.0)
    z2 = z * z
    denom = 1.0 + z2 / nn
    center = (pp + z2 / (2 * nn)) / denom
    half = z * np.sqrt(np.maximum(pp * (1 - pp), 0.0) / nn + z2 / (4 * nn * nn)) / denom
    return np.where(ok, np.maximum(0.0, center - half), 0.0), np.where(ok, np.minimum(1.0, center + half), 1.0)


def _valid_confidence(c) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 <= c <= 1.0


def outcome_columns(examples: Sequence[dict], offset: Callable[[str, str], float] | None = None
                    ) -> dict[str, np.ndarray | list]:
    """Columns of the verified outcomes in joined ``TrainingExample`` dicts.

    Rows without an effective label, with a non-positive propensity or with a
    confidence outside [0, 1] (NaN included) are skipped (``skipped`` counts
    them). ``eligible``: audit answers and confidence-routed review/escalate
    answers (see the module docstring). ``margin``: the confidence minus
    ``offset(model, predicted_label)`` — how far a per-class threshold sits above
    the global one — so "auto at global threshold t" is ``margin >= t`` for
    every class (the autopilot moves all thresholds together).
    """
    keep = [e for e in examples if e.get("effective_label") is not None and e.get("sampling_propensity", 0) > 0
            and _valid_confidence(e["prediction"].get("confidence"))]
    p = [e["prediction"] for e in keep]
    conf = np.array([x["confidence"] for x in p], dtype=np.float64)
    margin = conf
    if offset is not None and keep:
        shift = np.array([offset(e["model_name"], x["predicted_label"]) for e, x in zip(keep, p)], dtype=np.float64)
        margin = np.clip(conf - shift, 0.0, 1.0)
    return {
        "model": [e["model_name"] for e in keep], "version": [e["model_version"] for e in keep],
        "confidence": conf, "margin": margin,
        "correct": np.array([e["effective_label"] == x["predicted_label"] for e, x in zip(keep, p)], dtype=bool),
        "weight": 1.0 / np.array([e["sampling_propensity"] for e in keep], dtype=np.float64),
        "eligible": np.array([bool(e["audit"]) or e.get("reason", "").startswith("confidence") for e in keep],
                             dtype=bool),
        "t_ms": np.array([e["reviewed_at"] for e in keep], dtype=np.int64),
        "kept": keep, "skipped": len(examples) - len(keep),
    }


class CalibrationTracker:
    """Per (model, model version) reliability data, all-time plus a tumbling window; see the module docstring."""

    def __init__(self, bins: int = 200, display_bins: int = 10, window_ms: int = 3_600_000,
                 max_keys: int = 256) -> None:
        if bins % display_bins:
            raise ValueError(f"bins ({bins}) must be a multiple of display_bins ({display_bins})")
        self.bins = bins
        self.display_bins = display_bins
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._all: dict[tuple[str, str, str], BinnedOutcomes] = {}
        self._gran = _Granularity(window_ms)
        self._keys: set[tuple[str, str]] = set()

    def _key(self, model: str, version: str) -> tuple[str, str]:
        k = (model, version)
        if k in self._keys:
            return k
        if len(self._keys) >= self.max_keys:
            return (OTHER_MODEL, OTHER_MODEL)
        self._keys.add(k)
        return k

    def update(self, model: Sequence[str], version: Sequence[str], confidence, correct, weight, eligible,
               t_ms, margin=None) -> None:
        """Add outcomes given as columns (``t_ms``: the answer's ``reviewed_at``).

        ``margin`` (default: the confidence) bins the auto-eligible cells (see :func:`outcome_columns`).
        """
        conf = np.asarray(confidence, dtype=np.float64)
        if len(conf) == 0:
            return
        y, w = np.asarray(correct, dtype=bool), np.asarray(weight, dtype=np.float64)
        elig = np.asarray(eligible, dtype=bool)
        t = np.asarray(t_ms, dtype=np.int64)
        b = np.clip((conf * self.bins).astype(np.int64), 0, self.bins - 1)
        mar = conf if margin is None else np.asarray(margin, dtype=np.float64)
        bm = b if margin is None else np.clip((mar * self.bins).astype(np.int64), 0, self.bins - 1)
        mc, names = _codes([f"{m}\x00{v}" for m, v in zip(model, version)])
        slot = self._gran.slots(t)
        for j, name in enumerate(names):
            m, v = self._key(*name.split("\x00", 1))
            rows = mc == j
            for kind, mask, bb, cc in (("all", rows, b, conf), ("eligible", rows & elig, bm, mar)):
                for cells, sel in ((self._all, mask), (self._gran.current.cells, mask & (slot == 0)),
                                   (self._gran.previous.cells, mask & (slot == 1))):
                    if sel.any():
                        cell = BinnedOutcomes.from_rows(self.bins, bb[sel], y[sel], w[sel], cc[sel])
                        cells.setdefault((m, v, kind), BinnedOutcomes(self.bins)).add(cell)
        self._gran.late_outcomes += int((slot == 2).sum())

    def update_examples(self, examples: Sequence[dict], offset: Callable[[str, str], float] | None = None) -> int:
        """Add joined ``TrainingExample`` dicts; returns how many verified outcomes counted."""
        c = outcome_columns(examples, offset)
        self.update(c["model"], c["version"], c["confidence"], c["correct"], c["weight"], c["eligible"], c["t_ms"],
                    c["margin"])
        return len(c["kept"])

    # ------------------------------------------------------------------ reads
    def _cells(self, scope: str) -> Iterable[dict]:
        if scope == "all_time":
            return [self._all]
        g = self._gran
        if scope == "current":
            return [g.current.cells] if g.current else []
        if scope == "recent":  # current + previous window
            return [w.cells for w in (g.current, g.previous) if w is not None]
        raise ValueError(f"scope must be all_time, current or recent, got {scope!r}")

    def cell(self, model: str, version: str | None = None, scope: str = "all_time",
             kind: str = "all") -> BinnedOutcomes:
        """Outcomes of ``model`` (one version or all of them) in ``scope``, summed into one cell."""
        out = BinnedOutcomes(self.bins)
        for cells in self._cells(scope):
            for (m, v, k), c in cells.items():
                if m == model and k == kind and (version is None or v == version):
                    out.add(c)
        return out

    def curve(self, model: str, version: str | None = None, scope: str = "all_time") -> list[dict]:
        """The reliability curve at ``display_bins`` bins (non-empty bins only)."""
        return self.cell(model, version, scope).coarse(self.display_bins).curve()

    def ece(self, model: str, version: str | None = None, scope: str = "all_time") -> float | None:
        return self.cell(model, version, scope).coarse(self.display_bins).ece()

    def models(self) -> list[str]:
        return sorted({m for m, _, _ in self._all})

    def snapshot(self) -> dict:
        """JSON-able curves and ECE per model and per version, all-time and recent (for ``GET /stats``)."""
        out: dict = {"bins": self.display_bins, "window_ms": self.window_ms,
                     "late_outcomes": self._gran.late_outcomes, "models": {}}
        for model in self.models():
            entry: dict = {}
            for scope in ("all_time", "recent"):
                c = self.cell(model, None, scope).coarse(self.display_bins)
                entry[scope] = {"ece": c.ece(), "outcomes": int(c.n.sum()), "curve": c.curve()}
            entry["versions"] = {v: {"ece": self.ece(model, v), "outcomes": int(self.cell(model, v).n.sum())}
                                 for v in sorted({v for m, v, _ in self._all if m == model})}
            out["models"][model] = entry
        return out

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict:
        def cells(d: dict) -> list:
            return [[m, v, k, c.to_state()] for (m, v, k), c in sorted(d.items())]

        g = self._gran
        return {"config": {"bins": self.bins, "display_bins": self.display_bins, "window_ms": self.window_ms,
                           "max_keys": self.max_keys},
                "keys": sorted(self._keys), "all_time": cells(self._all), "late_outcomes": g.late_outcomes,
                "windows": [[w.index, cells(w.cells)] for w in (g.current, g.previous) if w is not None]}

    @classmethod
    def from_state(cls, state: dict) -> CalibrationTracker:
        t = cls(**state["config"])

        def cells(rows: list) -> dict:
            return {(m, v, k): BinnedOutcomes.from_state(s) for m, v, k, s in rows}

        t._keys = {tuple(k) for k in state["keys"]}
        t._all = cells(state["all_time"])
        t._gran.late_outcomes = state["late_outcomes"]
        t._gran.restore(state["windows"], cells)
        return t

    def merge(self, other: CalibrationTracker) -> CalibrationTracker:
        """Add ``other`` (same configuration) into this tracker, aligning windows by start time."""
        if (other.bins, other.window_ms) != (self.bins, self.window_ms):
            raise ValueError("cannot merge calibration trackers with different bins or windows")
        for key, c in other._all.items():
            self._all.setdefault(key, BinnedOutcomes(self.bins)).add(c)
        self._gran.merge_from(other._gran,
                              lambda cells, key, c: cells.setdefault(key, BinnedOutcomes(self.bins)).add(c))
        self._keys |= other._keys
        return self


def ece_reference(confidence, correct, weight=None, bins: int = 10) -> float:
    """ECE straight from rows (for tests and for ground truth in benchmarks)."""
    conf = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    w = np.ones_like(conf) if weight is None else np.asarray(weight, dtype=np.float64)
    b = np.clip((conf * bins).astype(np.int64), 0, bins - 1)
    total = 0.0
    for i in range(bins):
        m = b == i
        if m.any() and w[m].sum() > 0:
            total += abs(np.sum(w[m] * y[m]) - np.sum(w[m] * conf[m]))
    return total / w.sum() if w.sum() > 0 else math.nan
