"""Slice-based evaluation: per-slice volume, routing, verified error and calibration, bounded cardinality.

A slice dimension (:class:`~loopline.processors.policy.quality_options.SliceSpec`) is a context
attribute (``country``) or bins of a risk attribute (``amount`` at edges
100/1000/10000). Per (model, dimension, slice value) and per tumbling window
(current and previous), a :class:`SliceCell` holds:

* volume from the decision stream (:meth:`SliceStats.update_routed`, a route
  hook): events, events per tier, audited;
* verified outcomes from joined examples (:meth:`SliceStats.update_examples`):
  answers received, a :class:`~loopline.processors.quality.reliability.BinnedOutcomes` of all
  labelled outcomes (inverse-propensity weights, as in calibration) and one of
  the auto-eligible outcomes (for the threshold autopilot).

Reported per slice: volume, routed share per tier, verified error rate (Hajek,
Wilson interval on Kish n), override rate (share of labelled answers that
changed the predicted label, unweighted), label coverage (labelled answers /
events sent to a human) and calibration error (ECE). Worst slices (highest
verified error) come first.

**Bounded cardinality.** Context values are tracked by a space-saving sketch
(:class:`SpaceSaving`, Metwally et al. 2005) of ``max(4 top_k, 32)`` counters
(every value with more than ``1 / capacity`` of the volume is tracked); a value
not tracked counts in the slice ``__other__``, and when the sketch evicts a
value its cells are merged into ``__other__`` (nothing is lost, nothing grows).
Reports list the ``top_k`` heaviest tracked values plus ``__other__`` (which
then also holds the tracked values beyond ``top_k``). Risk bins are fixed
(at most 33 slices) plus ``__missing__``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from loopline.processors.policy.quality_options import SliceSpec
from loopline.processors.quality.reliability import BinnedOutcomes, outcome_columns
from loopline.processors.stats.summary import wilson
from loopline.processors.stats.tier_stats import _Granularity, _Window
from loopline.processors.wire.names import OTHER, TIERS

MISSING = "__missing__"
VOLUME = ("events", "auto", "review", "escalate", "audited", "answers")


class SpaceSaving:
    """Heavy hitters with ``capacity`` counters; a count overestimates by at most the evicted minimum."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}

    def offer(self, values: dict[str, int]) -> list[str]:
        """Count each value ``values[v]`` times; returns the values evicted to make room."""
        evicted = []
        counts = self.counts
        for v, c in sorted(values.items(), key=lambda kv: -kv[1]):
            if v in counts:
                counts[v] += c
            elif len(counts) < self.capacity:
                counts[v] = c
            else:
                low = min(counts, key=counts.get)
                floor = counts.pop(low)
                evicted.append(low)
                counts[v] = floor + c
        return evicted

    def top(self, k: int) -> list[str]:
        return [v for v, _ in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


class SliceCell:
    """Volume counts and verified outcomes of one slice in one window; :meth:`add` merges."""

    __slots__ = ("volume", "outcomes", "eligible")

    def __init__(self, bins: int) -> None:
        self.volume = np.zeros(len(VOLUME), dtype=np.int64)
        self.outcomes = BinnedOutcomes(bins)
        self.eligible = BinnedOutcomes(bins)

    def add(self, other: SliceCell) -> None:
        self.volume += other.volume
        self.outcomes.add(other.outcomes)
        self.eligible.add(other.eligible)

    def to_state(self) -> dict:
        return {"volume": self.volume.tolist(), "outcomes": self.outcomes.to_state(),
                "eligible": self.eligible.to_state()}

    @classmethod
    def from_state(cls, s: dict) -> SliceCell:
        c = cls(len(s["outcomes"]["n"]))
        c.volume[:] = s["volume"]
        c.outcomes, c.eligible = BinnedOutcomes.from_state(s["outcomes"]), BinnedOutcomes.from_state(s["eligible"])
        return c

    def report(self, display_bins: int) -> dict:
        v = dict(zip(VOLUME, self.volume.tolist()))
        o = self.outcomes
        labelled = int(o.n.sum())
        w, w2, wy = (float(o.sums[i].sum()) for i in range(3))
        err = ci = None
        if w > 0:
            err = 1.0 - wy / w
            ci = list(wilson(err, w * w / w2))
        human = v["review"] + v["escalate"] + v["audited"]
        ev = v["events"]
        return {
            "events": ev, "routed_share": {t: (v[t] / ev if ev else None) for t in TIERS},
            "audited": v["audited"], "answers": v["answers"], "labelled": labelled,
            "verified_error_rate": err, "verified_error_ci95": ci,
            "override_rate": (labelled - int(o.correct.sum())) / labelled if labelled else None,
            "label_coverage": labelled / human if human else None,
            "calibration_error": o.coarse(display_bins).ece(),
        }


def sketch_capacity(top_k: int) -> int:
    """Counters per context dimension: every value above 1/capacity of the volume is surely tracked."""
    return max(4 * top_k, 32)


def slice_labels(spec: SliceSpec) -> list[str]:
    """Names of a risk dimension's bins: ``amount<100``, ``100<=amount<1000``, ..., ``amount>=10000``."""
    e, a = [f"{x:g}" for x in spec.edges], spec.attribute
    return [f"{a}<{e[0]}"] + [f"{lo}<={a}<{hi}" for lo, hi in zip(e, e[1:])] + [f"{a}>={e[-1]}"]


class SliceStats:
    """Per-slice statistics for every model with slices declared; see the module docstring.

    ``specs_for(model)`` returns the model's slice dimensions (empty = none).
    """

    def __init__(self, specs_for: Callable[[str], Sequence[SliceSpec]], bins: int = 200, display_bins: int = 10,
                 window_ms: int = 3_600_000, max_models: int = 64) -> None:
        self.specs_for = specs_for
        self.bins, self.display_bins, self.window_ms, self.max_models = bins, display_bins, window_ms, max_models
        self._gran = _Granularity(window_ms)
        self._sketches: dict[tuple[str, str], SpaceSaving] = {}
        self._models: set[str] = set()

    # ------------------------------------------------------------------ values
    def _dims(self, model: str) -> Sequence[SliceSpec]:
        specs = self.specs_for(model)
        if not specs:
            return ()
        if model not in self._models:
            if len(self._models) >= self.max_models:
                return ()  # bounded: models beyond max_models get no slices
            self._models.add(model)
        return specs

    def _context_groups(self, model: str, spec: SliceSpec, values: list, counts: list[int]) -> list[str]:
        """Reported slice name of each distinct raw value (None = missing); offers the counts to the sketch."""
        vals = [MISSING if v is None else str(v) for v in values]
        offer: dict[str, int] = {}
        for v, c in zip(vals, counts):
            offer[v] = offer.get(v, 0) + int(c)
        sk = self._sketches.setdefault((model, spec.name), SpaceSaving(sketch_capacity(spec.top_k)))
        for gone in sk.offer(offer):
            self._fold(model, spec.name, gone)
        return [v if v in sk.counts else OTHER for v in vals]

    def _fold(self, model: str, dim: str, value: str) -> None:
        for w in (self._gran.current, self._gran.previous):
            if w is not None and (model, dim, value) in w.cells:
                cell = w.cells.pop((model, dim, value))
                w.cells.setdefault((model, dim, OTHER), SliceCell(self.bins)).add(cell)

    @staticmethod
    def _risk_groups(spec: SliceSpec, col: np.ndarray | None, n: int) -> tuple[list[str], np.ndarray]:
        labels = slice_labels(spec) + [MISSING]
        if col is None:
            return [MISSING], np.zeros(n, dtype=np.intp)
        idx = np.searchsorted(np.asarray(spec.edges), col, side="right")
        return labels, np.where(np.isfinite(col), idx, len(labels) - 1)

    def _cell(self, slot: int, key: tuple) -> SliceCell:
        w = self._gran.current if slot == 0 else self._gran.previous
        return w.cells.setdefault(key, SliceCell(self.bins))

    # ------------------------------------------------------------------ updates
    def update_routed(self, frame, decisions) -> None:
        """Add one routed frame's decisions (``loopline.processors.routing.router.Routed`` parts; a route hook)."""
        dims = self._dims(frame.model_name)
        if not dims or frame.n == 0:
            return
        slot = self._gran.slots(np.asarray(frame.emitted_at, dtype=np.int64))
        tiers = np.asarray(decisions.tiers)
        cols = {"events": np.ones(frame.n, bool), "auto": tiers == 0, "review": tiers == 1,
                "escalate": tiers == 2, "audited": np.asarray(decisions.audited, dtype=bool)}
        for spec in dims:
            if spec.kind == "risk":
                labels, inv = self._risk_groups(spec, frame.risk_column(spec.attribute), frame.n)
            elif frame.has_context and spec.attribute in frame.context_names:
                codes = frame.context_codes[:, frame.context_names.index(spec.attribute)]
                uniq, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
                strings = frame.strings
                labels = self._context_groups(frame.model_name, spec, [strings[c] for c in uniq.tolist()],
                                              counts.tolist())
            else:
                labels = self._context_groups(frame.model_name, spec, [None], [frame.n])
                inv = np.zeros(frame.n, dtype=np.intp)
            self._add_volume(frame.model_name, spec.name, labels, inv.reshape(-1), slot, cols)

    def _add_volume(self, model: str, dim: str, labels: list[str], inv: np.ndarray, slot: np.ndarray,
                    cols: dict) -> None:
        """Add volume columns grouped by ``labels[inv]`` (one ``bincount`` per column and window)."""
        G = len(labels)
        for s in (0, 1):
            ms = slot == s
            if not ms.any():
                continue
            g = inv[ms]
            sums = [np.bincount(g, weights=cols[k][ms], minlength=G) if k in cols else np.zeros(G) for k in VOLUME]
            for j in np.flatnonzero(np.bincount(g, minlength=G)).tolist():
                cell = self._cell(s, (model, dim, labels[j]))
                cell.volume += np.array([round(x[j]) for x in sums], dtype=np.int64)

    def update_examples(self, examples: Sequence[dict], offset: Callable[[str, str], float] | None = None) -> None:
        """Add joined ``TrainingExample`` dicts (answers, labelled outcomes, auto-eligible outcomes).

        ``offset``: per-class threshold offsets, as in :func:`loopline.processors.quality.reliability.outcome_columns`.
        """
        by_model: dict[str, list[dict]] = {}
        for e in examples:
            by_model.setdefault(e["model_name"], []).append(e)
        for model, ex in by_model.items():
            dims = self._dims(model)
            if not dims:
                continue
            slot_all = self._gran.slots(np.array([e["reviewed_at"] for e in ex], dtype=np.int64))
            c = outcome_columns(ex, offset)
            kept = c["kept"]
            slot_kept = self._gran.slots(c["t_ms"]) if kept else np.zeros(0, np.int64)
            b = np.clip((c["confidence"] * self.bins).astype(np.int64), 0, self.bins - 1)
            bm = np.clip((c["margin"] * self.bins).astype(np.int64), 0, self.bins - 1)
            for spec in dims:
                labels, inv = self._example_groups(model, spec, ex)
                self._add_volume(model, spec.name, labels, inv, slot_all, {"answers": np.ones(len(ex), bool)})
                if not kept:
                    continue
                labels, inv = self._example_groups(model, spec, kept, offer=False)
                for s in (0, 1):
                    for j, name in enumerate(labels):
                        m = (slot_kept == s) & (inv == j)
                        if not m.any():
                            continue
                        cell = self._cell(s, (model, spec.name, name))
                        args = (b[m], c["correct"][m], c["weight"][m], c["confidence"][m])
                        cell.outcomes.add(BinnedOutcomes.from_rows(self.bins, *args))
                        e = m & c["eligible"]
                        if e.any():
                            cell.eligible.add(BinnedOutcomes.from_rows(
                                self.bins, bm[e], c["correct"][e], c["weight"][e], c["margin"][e]))

    def _example_groups(self, model: str, spec: SliceSpec, ex: Sequence[dict], offer: bool = True
                        ) -> tuple[list[str], np.ndarray]:
        if spec.kind == "risk":
            col = np.array([((e["prediction"].get("risk") or {}).get(spec.attribute, np.nan)) for e in ex],
                           dtype=np.float64)
            return self._risk_groups(spec, col, len(ex))
        raw = [(e["prediction"].get("context") or {}).get(spec.attribute) for e in ex]
        index: dict = {}
        inv = np.fromiter((index.setdefault(v, len(index)) for v in raw), dtype=np.intp, count=len(raw))
        values = list(index)
        if offer:
            return self._context_groups(model, spec, values, np.bincount(inv, minlength=len(values)).tolist()), inv
        sk = self._sketches.get((model, spec.name))
        names = [MISSING if v is None else str(v) for v in values]
        return [v if sk is not None and v in sk.counts else OTHER for v in names], inv

    # ------------------------------------------------------------------ reads
    def _recent(self, model: str, dim: str) -> dict[str, SliceCell]:
        out: dict[str, SliceCell] = {}
        for w in (self._gran.current, self._gran.previous):
            if w is None:
                continue
            for (m, d, v), cell in w.cells.items():
                if m == model and d == dim:
                    out.setdefault(v, SliceCell(self.bins)).add(cell)
        spec = next((s for s in self.specs_for(model) if s.name == dim), None)
        if spec is not None and spec.kind == "context":
            keep = set(self._sketches.get((model, dim), SpaceSaving(0)).top(spec.top_k))
            for v in [v for v in out if v not in keep and v != OTHER]:
                out.setdefault(OTHER, SliceCell(self.bins)).add(out.pop(v))
        return out

    def eligible(self, model: str) -> dict[str, BinnedOutcomes]:
        """Auto-eligible outcomes per reported slice (``"dim=value"``) of ``model``, recent windows."""
        out = {}
        for spec in self.specs_for(model):
            for v, cell in self._recent(model, spec.name).items():
                out[f"{spec.attribute}={v}"] = cell.eligible
        return out

    def report(self, model: str) -> dict[str, list[dict]]:
        """Per dimension: the reported slices (recent windows), worst verified error first."""
        out = {}
        for spec in self.specs_for(model):
            rows = [{"slice": v, **cell.report(self.display_bins)}
                    for v, cell in self._recent(model, spec.name).items()]
            rows.sort(key=lambda r: (r["verified_error_rate"] is None, -(r["verified_error_rate"] or 0.0),
                                     -r["events"], r["slice"]))
            out[spec.name] = rows
        return out

    def models(self) -> list[str]:
        ms = {m for w in (self._gran.current, self._gran.previous) if w for m, _, _ in w.cells}
        return sorted(ms)

    def snapshot(self) -> dict:
        return {"window_ms": self.window_ms, "models": {m: self.report(m) for m in self.models()}}

    def cells_count(self) -> int:
        """Cells held (the bounded-memory promise: <= models x dims x (capacity + 1) x 2 windows)."""
        return sum(len(w.cells) for w in (self._gran.current, self._gran.previous) if w is not None)

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict:
        g = self._gran
        return {"sketches": [[m, d, sk.capacity, sk.counts] for (m, d), sk in sorted(self._sketches.items())],
                "windows": [[w.index, [[m, d, v, c.to_state()] for (m, d, v), c in sorted(w.cells.items())]]
                            for w in (g.current, g.previous) if w is not None]}

    def merge_state(self, state: dict) -> SliceStats:
        """Add another worker's :meth:`to_state` (same slice specs): sketches add, windows align by start."""
        for m, d, cap, counts in state["sketches"]:
            sk = self._sketches.setdefault((m, d), SpaceSaving(cap))
            for gone in sk.offer(counts):
                self._fold(m, d, gone)
        g = self._gran
        for index, rows in state["windows"]:
            if g.current is None:
                g.current, g.previous = _Window(index), _Window(index - 1)
            if index > g.current.index:
                g.advance(index)
            target = g.current if index == g.current.index else g.previous if index == g.previous.index else None
            if target is None:
                continue
            for m, d, v, cs in rows:
                sk = self._sketches.get((m, d))
                if sk is not None and v not in sk.counts:  # only context dimensions have sketches
                    v = OTHER
                target.cells.setdefault((m, d, v), SliceCell(self.bins)).add(SliceCell.from_state(cs))
        return self
