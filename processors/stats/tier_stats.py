"""Per model and tier statistics: all-time and tumbling windows, mergeable across workers.

:class:`TierStats` keeps one :class:`~loopline.processors.stats.summary.TierSummary` per
(model, tier) for all time and for each window granularity (1 minute and 1
hour by default) — only the *current* window and the *previous* (last closed)
one. Windows are tumbling on event time: decisions by their prediction's
``emitted_at``, outcomes by the time passed in (the correction's
``reviewed_at``). A window ``[k * L, (k+1) * L)`` becomes current when the first
record of it arrives; records for the previous window still count there;
older records count only in all-time (and in ``late_*``).

Updates take whole columns and aggregate with ``np.bincount``; per call the
Python work is per (model, tier) group, not per event. Memory is bounded:
2 windows x granularities x cells, each cell fixed-size (20-bin confidence
histogram, 1,039-cell latency histogram, at most ``max_classes`` labels), at
most ``max_models`` models (later ones share the model name ``__other__``).

Summaries merge exactly: :meth:`TierStats.merge` adds another worker's
summary (counts exactly, float sums to rounding), aligning windows by start
time, so N workers report the same totals as one worker that saw every event.

>>> st = TierStats()
>>> st.update_decisions("fraud", ["auto", "auto", "review"], [0.99, 0.95, 0.6], ["legit", "legit", "fraud"],
...                     [0.02, 0.02, 1.0], [True, False, False], [0, 10, 20])
>>> st.update_outcomes("fraud", ["auto"], ["legit"], ["fraud"], "fraud", [0.02], [True], [30.0], [False], [60_000])
>>> snap = st.snapshot()["all_time"]["fraud"]
>>> snap["events"], snap["tiers"]["auto"]["routed_share"], snap["tiers"]["auto"]["error_rate_ipw"]["estimate"]
(3, 0.6666666666666666, 1.0)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from loopline.processors.errors import ConfigError
from loopline.processors.stats.latency import LogBuckets
from loopline.processors.stats.summary import C, TierSummary, build_cells
from loopline.processors.wire.names import OTHER as OTHER_MODEL
from loopline.processors.wire.names import TIERS

_TIER_CODE = {t: i for i, t in enumerate(TIERS)}
WINDOWS = {"1m": 60_000, "1h": 3_600_000}


def _codes(values, extra: dict | None = None) -> tuple[np.ndarray, list]:
    """Dictionary-encode a sequence of strings (None -> -1)."""
    index: dict = {None: -1} if extra is None else extra
    setdefault = index.setdefault
    codes = np.fromiter([setdefault(v, len(index) - 1) for v in values], dtype=np.int64, count=len(values))
    return codes, [k for k in index if k is not None]


def _tier_codes(tier, n: int) -> np.ndarray:
    if isinstance(tier, (str, int, np.integer)):
        code = _TIER_CODE[tier] if isinstance(tier, str) else int(tier)
        return np.full(n, code, dtype=np.int64)
    arr = np.asarray(tier)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return np.fromiter([_TIER_CODE[t] for t in tier], dtype=np.int64, count=n)


class _Window:
    __slots__ = ("index", "cells")

    def __init__(self, index: int) -> None:
        self.index = index
        self.cells: dict[tuple[str, str], TierSummary] = {}


class _Granularity:
    """Current and previous tumbling window of one length."""

    __slots__ = ("length_ms", "current", "previous", "late_decisions", "late_outcomes")

    def __init__(self, length_ms: int) -> None:
        self.length_ms = length_ms
        self.current: _Window | None = None
        self.previous: _Window | None = None
        self.late_decisions = 0
        self.late_outcomes = 0

    def advance(self, index: int) -> None:
        cur = self.current
        if cur is None:
            self.current, self.previous = _Window(index), _Window(index - 1)
        elif index > cur.index:
            self.previous = cur if index == cur.index + 1 else _Window(index - 1)
            self.current = _Window(index)

    def restore(self, windows: list, cells: Callable[[list], dict]) -> None:
        """Set current/previous from ``to_state`` rows ``[[index, cell rows], ...]`` (current first)."""
        ws = []
        for index, rows in windows:
            w = _Window(index)
            w.cells = cells(rows)
            ws.append(w)
        if ws:
            self.current, self.previous = ws[0], (ws[1] if len(ws) > 1 else _Window(ws[0].index - 1))

    def merge_from(self, other: _Granularity, add_cell: Callable[[dict, object, object], None]) -> None:
        """Add ``other``'s late counts and windows, aligned by start time.

        The newer current window of the two becomes current, its predecessor
        previous; older windows are dropped (their records stay in all-time).
        ``add_cell(cells, key, cell)`` adds one cell into a window's cells.
        """
        self.late_decisions += other.late_decisions
        self.late_outcomes += other.late_outcomes
        if other.current is None:
            return
        windows = [w for w in (self.current, self.previous, other.current, other.previous) if w is not None]
        top = max(w.index for w in windows)
        cur, prev = _Window(top), _Window(top - 1)
        for w in windows:
            target = cur if w.index == top else prev if w.index == top - 1 else None
            if target is not None:
                for key, cell in w.cells.items():
                    add_cell(target.cells, key, cell)
        self.current, self.previous = cur, prev

    def slots(self, t: np.ndarray) -> np.ndarray:
        """0 = current window, 1 = previous, 2 = too old; advances to the newest record first."""
        w = t // self.length_ms
        self.advance(int(w.max()))
        return np.minimum(self.current.index - w, 2)


class TierStats:
    """Per (model, tier) statistics; see the module docstring."""

    def __init__(self, windows: Mapping[str, int] = WINDOWS, conf_bins: int = 20, max_classes: int = 64,
                 max_models: int = 256, latency: LogBuckets | None = None) -> None:
        self.windows = dict(windows)
        self.conf_bins = conf_bins
        self.max_classes = max_classes
        self.max_models = max_models
        self.latency = latency if latency is not None else LogBuckets()
        self._all: dict[tuple[str, str], TierSummary] = {}
        self._grans = {name: _Granularity(length) for name, length in self.windows.items()}
        self._models: set[str] = set()

    # ------------------------------------------------------------------ updates
    def update_decisions(self, model: str | Sequence[str], tier, confidence, predicted_label,
                         propensity, audited, event_time_ms) -> None:
        """Add routing decisions (columns of equal length; ``model``/``tier`` may be scalars).

        ``tier``: names or codes (0 auto, 1 review, 2 escalate); ``predicted_label``:
        label strings, or an already dictionary-encoded ``(codes, labels)`` pair;
        ``event_time_ms``: the prediction's ``emitted_at``.
        """
        conf = np.asarray(confidence, dtype=np.float64)
        n = len(conf)
        if n == 0:
            return
        gk, keys = self._groups(model, tier, n)
        if isinstance(predicted_label, tuple):
            lc, labels = np.asarray(predicted_label[0], dtype=np.int64), list(predicted_label[1])
        else:
            lc, labels = _codes(predicted_label)
        prop = np.asarray(propensity, dtype=np.float64)
        aud = np.asarray(audited, dtype=bool)
        tiers = np.array([_TIER_CODE[t] for _, t in keys], dtype=np.int64)[gk]
        bins = np.clip((conf * self.conf_bins).astype(np.int64), 0, self.conf_bins - 1)
        unsampled = (tiers == 0) & ~(prop > 0)

        counts = {"events": np.ones(n, dtype=bool), "audited": aud, "unsampled": unsampled}
        sums = {"confidence_sum": conf, "propensity_sum": prop}
        G, B = len(keys), self.conf_bins

        def deltas(m: np.ndarray | None) -> list[TierSummary | None]:
            sub = (lambda a: a) if m is None else (lambda a: a[m])
            return build_cells(sub(gk), G, B, {k: sub(v) for k, v in counts.items()},
                               {k: sub(v) for k, v in sums.items()}, bins=sub(bins), label_codes=sub(lc),
                               labels=labels)

        self._apply(keys, deltas, np.asarray(event_time_ms, dtype=np.int64), "late_decisions")

    def update_outcomes(self, model: str | Sequence[str], tier, predicted_label: Sequence[str],
                        corrected_label: Sequence[str | None], positive_label: str | Sequence[str | None] | None,
                        propensity, audited, latency_seconds, sla_breached, event_time_ms) -> None:
        """Add joined corrections (one row per answer).

        ``tier`` is the *decision's* tier (an audit answer counts for ``auto``);
        ``corrected_label`` None = an answer without a label (unsure/escalate);
        ``positive_label`` is the model's positive class (a scalar or one per row,
        None = no precision/recall); ``latency_seconds`` is task creation → answer
        (NaN = unknown); ``event_time_ms`` places the row in windows (use ``reviewed_at``).
        """
        pred_list = list(predicted_label)
        n = len(pred_list)
        if n == 0:
            return
        gk, keys = self._groups(model, tier, n)
        index: dict = {None: -1}
        pred, _ = _codes(pred_list, index)
        corr, _ = _codes(list(corrected_label), index)
        if positive_label is None or isinstance(positive_label, str):
            pos = np.full(n, index.setdefault(positive_label, len(index) - 1), dtype=np.int64)
        else:
            pos, _ = _codes(list(positive_label), index)
        prop = np.asarray(propensity, dtype=np.float64)
        aud = np.asarray(audited, dtype=bool)
        lat = np.asarray(latency_seconds, dtype=np.float64)
        sla = np.asarray(sla_breached, dtype=bool)
        tiers = np.array([_TIER_CODE[t] for _, t in keys], dtype=np.int64)[gk]
        answered = corr >= 0
        agree = answered & (corr == pred)
        has_pos = pos >= 0
        pp, ap = has_pos & (pred == pos), has_pos & (corr == pos)
        valid_p = prop > 0
        with np.errstate(divide="ignore"):
            w = np.where(valid_p, 1.0 / np.where(valid_p, prop, 1.0), 0.0)
        ipw = (tiers == 0) & aud & answered & valid_p
        err = ipw & ~agree
        flags = {"corrections": np.ones(n, dtype=bool), "answered": answered, "agree": agree,
                 "tp": answered & pp & ap, "fp": answered & pp & has_pos & ~ap,
                 "fn": answered & has_pos & ~pp & ap, "tn": answered & has_pos & ~pp & ~ap,
                 "sla_breached": sla, "ipw_n": ipw, "ipw_errors": err, "zero_propensity": ~valid_p}
        lat_ok = np.isfinite(lat) & (lat >= 0)
        flags["latency_n"] = lat_ok
        weights = {"w_tp": w * flags["tp"], "w_fp": w * flags["fp"], "w_fn": w * flags["fn"],
                   "w_tn": w * flags["tn"], "ipw_w": w * ipw, "ipw_w2": w * w * ipw, "ipw_wy": w * err,
                   "ipw_w2y": w * w * err, "latency_sum": np.where(lat_ok, lat, 0.0)}
        cell = np.where(lat_ok, self.latency.index(np.where(lat_ok, lat, 0.0)), -1)

        G, B, K = len(keys), self.conf_bins, self.latency.size

        def deltas(m: np.ndarray | None) -> list[TierSummary | None]:
            sub = (lambda a: a) if m is None else (lambda a: a[m])
            return build_cells(sub(gk), G, B, {k: sub(v) for k, v in flags.items()},
                               {k: sub(v) for k, v in weights.items()}, latency_cells=sub(cell), latency_size=K)

        self._apply(keys, deltas, np.asarray(event_time_ms, dtype=np.int64), "late_outcomes")

    def update_routed(self, frame, decisions) -> None:
        """Add the decisions of one routed frame (``loopline.processors.routing.router.Routed`` parts)."""
        self.update_decisions(frame.model_name, decisions.tiers, frame.confidence, (frame.label_codes, frame.labels),
                              decisions.propensity, decisions.audited, frame.emitted_at)

    def update_examples(self, examples: Iterable[dict], positive_label: Callable[[str], str | None],
                        sla_ms: Callable[[str, str], int | None]) -> None:
        """Add joined ``TrainingExample`` dicts (``loopline.processors.feedback.join``).

        The decision tier is ``auto`` for audit answers, else the task's tier; the
        latency is ``reviewed_at - task_created_at``; a row breaches its SLA when
        that exceeds ``sla_ms(model, task_tier)`` (None = no SLA).
        """
        ex = list(examples)
        if not ex:
            return
        models = [e["model_name"] for e in ex]
        tiers = ["auto" if e["audit"] else e["tier"] for e in ex]
        lat_ms = np.array([e["reviewed_at"] - e["task_created_at"] for e in ex], dtype=np.float64)
        sla = [sla_ms(e["model_name"], e["tier"]) for e in ex]
        breached = [s is not None and lm > s for s, lm in zip(sla, lat_ms.tolist())]
        self.update_outcomes(models, tiers, [e["prediction"]["predicted_label"] for e in ex],
                             [e["label"] for e in ex], [positive_label(m) for m in models],
                             [e["sampling_propensity"] for e in ex], [e["audit"] for e in ex], lat_ms / 1000.0,
                             breached, [e["reviewed_at"] for e in ex])

    # ------------------------------------------------------------------ internals
    def _groups(self, model, tier, n: int) -> tuple[np.ndarray, list[tuple[str, str]]]:
        tc = _tier_codes(tier, n)
        if isinstance(model, str):
            mc, names = np.zeros(n, dtype=np.int64), [model]
        else:
            mc, names = _codes(list(model))
        names = [self._model_name(m) for m in names]
        uniq, gk = np.unique(mc * 3 + tc, return_inverse=True)
        keys = [(names[u // 3], TIERS[u % 3]) for u in uniq.tolist()]
        return gk.reshape(-1), keys

    def _model_name(self, name: str) -> str:
        if name in self._models:
            return name
        if len(self._models) >= self.max_models:
            return OTHER_MODEL
        self._models.add(name)
        return name

    def _add(self, cells: dict, keys: list, deltas: list) -> None:
        for key, d in zip(keys, deltas):
            if d is not None:
                target = cells.get(key)
                if target is None:
                    target = cells[key] = TierSummary(self.conf_bins)
                target.add(d, self.max_classes)

    def _apply(self, keys: list, deltas: Callable, t: np.ndarray, late_attr: str) -> None:
        everything = deltas(None)
        self._add(self._all, keys, everything)
        for gran in self._grans.values():
            slot = gran.slots(t)
            if not slot.any():
                self._add(gran.current.cells, keys, everything)
                continue
            for window, s in ((gran.current, 0), (gran.previous, 1)):
                m = slot == s
                if m.any():
                    self._add(window.cells, keys, deltas(m))
            setattr(gran, late_attr, getattr(gran, late_attr) + int((slot == 2).sum()))

    def _config(self) -> tuple:
        return (self.windows, self.conf_bins, self.max_classes, self.latency.key())

    # ------------------------------------------------------------------ merge, report, state
    def merge(self, other: TierStats) -> TierStats:
        """Add ``other``'s statistics into this one (``other`` is not changed); returns self."""
        if other._config() != self._config():
            raise ConfigError("tier statistics with different windows, bins or latency buckets cannot be merged")
        for key, s in other._all.items():
            self._add(self._all, [key], [s])
        for name, gran in self._grans.items():
            gran.merge_from(other._grans[name], lambda cells, key, cell: self._add(cells, [key], [cell]))
        self._models |= other._models
        return self

    @classmethod
    def merged(cls, parts: Sequence[TierStats]) -> TierStats:
        """A new summary equal to the sum of ``parts`` (which stay unchanged)."""
        first = parts[0]
        out = cls(first.windows, first.conf_bins, first.max_classes, first.max_models, first.latency)
        for p in parts:
            out.merge(p)
        return out

    def _report(self, cells: dict, all_time: bool) -> dict:
        models: dict[str, dict] = {}
        for (model, _tier), s in cells.items():
            models.setdefault(model, {"events": 0, "tiers": {}})["events"] += int(s.counts[C["events"]])
        for (model, tier), s in sorted(cells.items()):
            m = models[model]
            m["tiers"][tier] = s.report(tier, m["events"], self.latency, all_time)
        return models

    def snapshot(self) -> dict:
        """Everything as a JSON-able dict (for ``GET /stats``)."""
        windows = {}
        for name, gran in self._grans.items():
            L = gran.length_ms
            block: dict = {"length_ms": L, "late_decisions": gran.late_decisions,
                           "late_outcomes": gran.late_outcomes, "current": None, "previous": None}
            for which in ("current", "previous"):
                w = getattr(gran, which)
                if w is not None:
                    block[which] = {"start_ms": w.index * L, "end_ms": (w.index + 1) * L,
                                    "models": self._report(w.cells, False)}
            windows[name] = block
        return {"confidence_bin_edges": np.linspace(0, 1, self.conf_bins + 1).tolist(),
                "all_time": self._report(self._all, True), "windows": windows}

    def to_state(self) -> dict:
        """JSON-able exact state (to persist or to ship to another worker for :meth:`merge`)."""
        def cells(d: dict) -> list:
            return [[m, t, s.to_state()] for (m, t), s in sorted(d.items())]

        grans = {}
        for name, g in self._grans.items():
            grans[name] = {"late_decisions": g.late_decisions, "late_outcomes": g.late_outcomes,
                           "windows": [[w.index, cells(w.cells)] for w in (g.current, g.previous) if w is not None]}
        return {"config": {"windows": self.windows, "conf_bins": self.conf_bins, "max_classes": self.max_classes,
                           "max_models": self.max_models, "latency": list(self.latency.key())},
                "models": sorted(self._models), "all_time": cells(self._all), "granularities": grans}

    @classmethod
    def from_state(cls, state: dict) -> TierStats:
        cfg = state["config"]
        st = cls(cfg["windows"], cfg["conf_bins"], cfg["max_classes"], cfg["max_models"], LogBuckets(*cfg["latency"]))
        size = st.latency.size

        def cells(rows: list) -> dict:
            return {(m, t): TierSummary.from_state(s, size) for m, t, s in rows}

        st._all = cells(state["all_time"])
        st._models = set(state["models"])
        for name, g in state["granularities"].items():
            gran = st._grans[name]
            gran.late_decisions, gran.late_outcomes = g["late_decisions"], g["late_outcomes"]
            gran.restore(g["windows"], cells)
        return st

    def nbytes(self) -> int:
        """Bytes held in arrays and label counts (a gauge for the bounded-memory promise)."""
        total = 0
        for cells in [self._all] + [w.cells for g in self._grans.values() for w in (g.current, g.previous) if w]:
            for s in cells.values():
                total += s.counts.nbytes + s.sums.nbytes + s.confidence.nbytes + len(s.classes) * 16
                total += 0 if s.latency is None else s.latency.nbytes
        return total

    def copy(self) -> TierStats:
        return copy.deepcopy(self)
