"""Reference profiles: what a model version's inputs and outputs looked like.

A :class:`ReferenceProfile` holds, per signal, the bin layout and the reference
counts. Numeric signals (each numeric feature and ``confidence``) get edges at
the reference sample's quantiles plus underflow, overflow and missing bins, so
the reference histogram is flat by construction. Categorical signals (each
categorical feature and ``class``, the predicted label) keep the top-K
reference categories, one "other known category" bin and one "unseen" bin.
Binning a batch is one ``np.searchsorted`` (numeric) or one dictionary lookup
per *distinct* value (categorical), so the cost per event is a few numpy ops.

>>> import numpy as np
>>> from loopline.processors.drift.columns import Columns
>>> rng = np.random.default_rng(0)
>>> cols = Columns(np.arange(1000), np.array([f"e{i}" for i in range(1000)], dtype=object),
...                {"n:x": rng.normal(size=1000), "c:country": rng.choice(["DE", "FR"], 1000).astype(object),
...                 "confidence": rng.uniform(size=1000), "label": np.array(["a"] * 1000, dtype=object)})
>>> p = build_profile(cols, "fraud", "v1", bucket_ms=100, numeric_bins=4)
>>> [(s.name, s.kind, s.n_bins) for s in p.signals]
[('country', 'categorical', 4), ('x', 'numeric', 7), ('confidence', 'numeric', 7), ('class', 'categorical', 3)]
>>> p.signal("x").counts.tolist()
[0, 250, 250, 250, 250, 0, 0]
>>> p.signal("country").bin(np.array(["FR", "DE", "IT"], dtype=object)).tolist()
[0, 1, 3]
>>> ReferenceProfile.from_json(p.to_json()).to_json() == p.to_json()
True
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loopline.processors.drift.columns import MISSING, Columns
from loopline.processors.errors import ConfigError

FORMAT = "loopline.drift.profile/1"
RESERVED = ("confidence", "class", "error")


def signal_name(column: str) -> str:
    """Signal name of a column field (``n:amount`` → ``amount``; ``label`` → ``class``)."""
    if column == "label":
        return "class"
    if column == "confidence":
        return "confidence"
    name = column[2:]
    return "feature:" + name if name in RESERVED else name


@dataclass
class SignalProfile:
    """Bin layout and reference counts of one signal."""

    name: str
    column: str
    kind: str  # "numeric" | "categorical"
    counts: np.ndarray
    edges: np.ndarray | None = None
    categories: list[str] | None = None
    known: list[str] | None = None
    unseen_rate: float = 0.0
    scale: float = 1.0
    _lut: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.kind == "numeric":
            self.edges = np.asarray(self.edges, dtype=np.float64)
        else:
            k = len(self.categories)
            self._lut = {c: k for c in self.known}
            self._lut.update({c: i for i, c in enumerate(self.categories)})

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    @property
    def ordered(self) -> slice:
        """Bins with an order (numeric: all but 'missing'; categorical: none)."""
        return slice(0, self.n_bins - 1) if self.kind == "numeric" else slice(0, 0)

    def bin(self, values: np.ndarray) -> np.ndarray:
        """Bin index of every value (int64)."""
        if self.kind == "numeric":
            x = np.asarray(values, dtype=np.float64)
            codes = np.searchsorted(self.edges, x, side="right")
            codes[np.isnan(x)] = self.n_bins - 1
            return codes
        uniq, inv = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
        unseen = self.n_bins - 1
        lut = self._lut
        return np.fromiter((lut.get(u, unseen) for u in uniq.tolist()), np.int64, len(uniq))[inv.reshape(-1)]

    def bin_dictionary(self, strings) -> np.ndarray:
        """Bin of each string of a frame's dictionary (categorical signals)."""
        lut, unseen = self._lut, self.n_bins - 1
        return np.fromiter((lut.get(str(x), unseen) for x in strings), np.int64, len(strings))

    def centres(self) -> np.ndarray:
        """Representative value of each ordered numeric bin (under, interior..., over)."""
        e = self.edges
        if len(e) < 2:
            c = e[0] if len(e) else 0.0
            return np.array([c - 1.0, c, c + 1.0][: self.n_bins - 1])
        mids = (e[1:] + e[:-1]) / 2.0
        return np.concatenate([[e[0] - (e[1] - e[0]) / 2.0], mids, [e[-1] + (e[-1] - e[-2]) / 2.0]])

    def null_alpha(self) -> np.ndarray:
        """Dirichlet parameters for the true bin probabilities given the reference.

        Numeric bins between sample quantiles: the probability mass between order
        statistics is exactly Dirichlet(counts) for continuous data; under- and
        overflow get 1 (mass beyond the sample extremes), missing gets count + 1/2.
        Categorical: counts + 1/2, and the unseen bin the Good–Turing missing mass.
        """
        a = self.counts.astype(np.float64)
        n = max(float(a.sum()), 1.0)
        if self.kind == "numeric":
            a = np.maximum(a, 0.5)
            a[0] = max(a[0], 1.0)
            a[-2] = max(a[-2], 1.0)
            return a
        a = a + 0.5
        a[-1] = max(self.unseen_rate * n, 0.5)
        return a

    def to_json(self) -> dict:
        d = {"name": self.name, "column": self.column, "kind": self.kind, "counts": self.counts.tolist()}
        if self.kind == "numeric":
            d.update(edges=self.edges.tolist(), scale=self.scale)
        else:
            d.update(categories=self.categories, known=self.known, unseen_rate=self.unseen_rate)
        return d

    @classmethod
    def from_json(cls, d: dict) -> SignalProfile:
        return cls(d["name"], d["column"], d["kind"], d["counts"], edges=d.get("edges"),
                   categories=d.get("categories"), known=d.get("known"),
                   unseen_rate=d.get("unseen_rate", 0.0), scale=d.get("scale", 1.0))


@dataclass
class ErrorReference:
    """Reference error (override) rate of a model version."""

    n: int
    errors: int
    outcomes_per_bucket: float

    @property
    def rate(self) -> float:
        return (self.errors + 0.5) / (self.n + 1.0)


@dataclass
class ReferenceProfile:
    """Reference of one model version: per-signal layouts and counts, JSON-serialisable."""

    model_name: str
    model_version: str
    n_events: int
    start_ms: int
    end_ms: int
    events_per_bucket: float
    signals: list[SignalProfile]
    error: ErrorReference | None = None
    source: str = "first_n"
    bucket_ms: int = 0  # the width this version's buckets are counted with; 0 = the configured bucket_ms

    def __post_init__(self) -> None:
        sizes = [s.n_bins for s in self.signals]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._by_name = {s.name: s for s in self.signals}
        layout = json.dumps([s.to_json() for s in self.signals], sort_keys=True).encode()
        if self.bucket_ms:  # counts of different widths never merge either
            layout += f"|{int(self.bucket_ms)}".encode()
        self._fingerprint = f"{zlib.crc32(layout):08x}"

    @property
    def total_bins(self) -> int:
        return int(self.offsets[-1])

    @property
    def fingerprint(self) -> str:
        """Identifies the bin layout: summaries binned with different layouts never merge."""
        return self._fingerprint

    def signal(self, name: str) -> SignalProfile:
        return self._by_name[name]

    def bin_columns(self, cols: Columns) -> np.ndarray:
        """Global bin index ``(rows, signals)`` of every row and signal (offset by the signal's slot)."""
        n = len(cols)
        out = np.empty((n, len(self.signals)), dtype=np.int64)
        for j, s in enumerate(self.signals):
            col = cols.fields.get(s.column)
            if col is None:
                col = np.full(n, np.nan) if s.kind == "numeric" else np.full(n, MISSING, dtype=object)
            out[:, j] = s.bin(col) + self.offsets[j]
        return out

    def bin_frame(self, frame) -> np.ndarray:
        """:meth:`bin_columns` straight from a ``PredictionFrame``: categorical values are looked up once
        per dictionary string, not once per event (same result, a fraction of the cost)."""
        n = frame.n
        out = np.empty((n, len(self.signals)), dtype=np.int64)
        num = {name: j for j, name in enumerate(frame.numeric_names)}
        cat = {name: j for j, name in enumerate(frame.categorical_names)}
        for j, s in enumerate(self.signals):
            c = s.column
            if c == "confidence":
                codes = s.bin(frame.confidence)
            elif c == "label":
                codes = s.bin_dictionary(frame.labels)[frame.label_codes] if n else np.zeros(0, np.int64)
            elif c.startswith("n:") and c[2:] in num:
                codes = s.bin(frame.numeric[:, num[c[2:]]])
            elif c.startswith("c:") and c[2:] in cat:
                codes = s.bin_dictionary(frame.strings)[frame.categorical_codes[:, cat[c[2:]]]]
            else:  # the frame lacks this feature: missing
                codes = s.bin(np.full(n, np.nan) if s.kind == "numeric" else np.full(n, MISSING, dtype=object))
            out[:, j] = codes + self.offsets[j]
        return out

    def to_json(self) -> dict:
        return {"format": FORMAT, "model_name": self.model_name, "model_version": self.model_version,
                "n_events": self.n_events, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "events_per_bucket": self.events_per_bucket, "source": self.source, "bucket_ms": self.bucket_ms,
                "signals": [s.to_json() for s in self.signals],
                "error": None if self.error is None else {"n": self.error.n, "errors": self.error.errors,
                                                          "outcomes_per_bucket": self.error.outcomes_per_bucket}}

    @classmethod
    def from_json(cls, d: dict) -> ReferenceProfile:
        if d.get("format") != FORMAT:
            raise ConfigError(f"not a drift reference profile (format {d.get('format')!r}, expected {FORMAT!r})")
        err = d.get("error")
        return cls(d["model_name"], d["model_version"], d["n_events"], d["start_ms"], d["end_ms"],
                   d["events_per_bucket"], [SignalProfile.from_json(s) for s in d["signals"]],
                   None if err is None else ErrorReference(err["n"], err["errors"], err["outcomes_per_bucket"]),
                   d.get("source", "first_n"), int(d.get("bucket_ms", 0) or 0))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read drift reference profile {path}: {exc}") from exc


def _numeric(name: str, column: str, x: np.ndarray, bins: int) -> SignalProfile:
    finite = x[np.isfinite(x)]
    if len(finite):
        qs = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1))
        qs[-1] = np.nextafter(qs[-1], np.inf)
        edges = np.unique(qs)
        scale = float(np.std(finite)) or 1.0
    else:
        edges, scale = np.zeros(1), 1.0
    prof = SignalProfile(name, column, "numeric", np.zeros(len(edges) + 2, np.int64), edges=edges, scale=scale)
    prof.counts = np.bincount(prof.bin(x), minlength=prof.n_bins).astype(np.int64)
    return prof


def _categorical(name: str, column: str, x: np.ndarray, top_k: int, max_known: int) -> SignalProfile:
    uniq, counts = np.unique(np.asarray(x, dtype=object).astype(str), return_counts=True)
    order = np.lexsort((uniq, -counts))  # by count desc, then name: deterministic
    uniq, counts = uniq[order].tolist(), counts[order]
    top, known = uniq[:top_k], uniq[top_k:max_known]
    n = max(int(counts.sum()), 1)
    singletons = int(np.sum(counts == 1)) + int(counts[max_known:].sum())  # Good–Turing + mass not remembered
    prof = SignalProfile(name, column, "categorical", np.zeros(len(top) + 2, np.int64), categories=top, known=known,
                         unseen_rate=(singletons + 1.0) / (n + 1.0))
    prof.counts = np.bincount(prof.bin(x), minlength=prof.n_bins).astype(np.int64)
    return prof


def build_profile(cols: Columns, model_name: str, model_version: str, bucket_ms: int, numeric_bins: int = 10,
                  top_k: int = 20, max_known: int = 1000, source: str = "first_n") -> ReferenceProfile:
    """A profile from reference rows (every column in ``cols`` becomes a signal)."""
    if len(cols) == 0:
        raise ConfigError("a reference profile needs at least one event")
    signals = []
    cat_cols = sorted(k for k in cols.fields if k.startswith("c:"))
    num_cols = sorted(k for k in cols.fields if k.startswith("n:"))
    for k in cat_cols:
        signals.append(_categorical(signal_name(k), k, cols.fields[k], top_k, max_known))
    for k in num_cols:
        signals.append(_numeric(signal_name(k), k, cols.fields[k], numeric_bins))
    if "confidence" in cols.fields:
        signals.append(_numeric("confidence", "confidence", cols.fields["confidence"], numeric_bins))
    if "label" in cols.fields:
        signals.append(_categorical("class", "label", cols.fields["label"], top_k, max_known))
    n = len(cols)
    t0, t1 = int(cols.t.min()), int(cols.t.max())
    per_bucket = float(min(n, (n - 1) * bucket_ms / max(t1 - t0, 1))) if n > 1 else 1.0
    return ReferenceProfile(model_name, model_version, n, t0, t1, max(per_bucket, 1.0), signals, None, source,
                            int(bucket_ms))
