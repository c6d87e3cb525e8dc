"""``PredictionFrame``: predictions of one model version as numpy columns.

The worker turns every input — a columnar ``PredictionBatch`` record or single
``PredictionEvent`` records — into frames, and everything downstream
(validation, policy, statistics, drift) works on whole columns.

A frame requires that its events share feature names and optional groups;
:func:`frames_from_events` splits a heterogeneous list into such groups, and
:func:`batch_from_events` / :func:`frame_to_batch` write the columnar record.

>>> from loopline.processors.testing import make_events
>>> evs = make_events(3, start_ms=0)
>>> [f.n for f in frames_from_events(evs)]
[3]
>>> frame = frames_from_events(evs)[0]
>>> frame.row(1) == evs[1]
True
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

I64, F64, I32 = np.dtype("<i8"), np.dtype("<f8"), np.dtype("<i4")


def _keys(d: dict | None) -> frozenset | None:
    return None if d is None else frozenset(d)


def signature(e: dict) -> tuple:
    """Events with equal signatures can share a frame (key order does not matter)."""
    return (e["model_name"], e["model_version"], frozenset(e["features_numeric"]), frozenset(e["features_categorical"]),
            _keys(e.get("class_probabilities")), _keys(e.get("risk")), _keys(e.get("context")))


@dataclass(slots=True)
class PredictionFrame:
    model_name: str
    model_version: str
    event_ids: list[str]
    emitted_at: np.ndarray  # int64
    confidence: np.ndarray  # float64
    labels: list[str]  # dictionary
    label_codes: np.ndarray  # int32
    numeric_names: list[str]
    numeric: np.ndarray  # float64 (n, k)
    categorical_names: list[str]
    context_names: list[str]
    strings: list[str]
    categorical_codes: np.ndarray  # int32 (n, m)
    context_codes: np.ndarray  # int32 (n, q)
    has_context: bool
    class_names: list[str]
    class_probabilities: np.ndarray  # float64 (n, c)
    has_class_probabilities: bool
    risk_names: list[str]
    risk: np.ndarray  # float64 (n, r)
    has_risk: bool
    trace_ids: list | None
    batch_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.event_ids)

    def risk_column(self, name: str) -> np.ndarray | None:
        if not self.has_risk or name not in self.risk_names:
            return None
        return self.risk[:, self.risk_names.index(name)]

    def predicted_labels(self) -> list[str]:
        labels = self.labels
        return [labels[c] for c in self.label_codes.tolist()]

    def row(self, i: int) -> dict:
        """Event ``i`` as the dict a ``PredictionEvent`` decodes to."""
        s = self.strings
        num = self.numeric[i].tolist()
        cat = self.categorical_codes[i].tolist()
        event = {
            "event_id": self.event_ids[i],
            "model_name": self.model_name,
            "model_version": self.model_version,
            "emitted_at": int(self.emitted_at[i]),
            "features_numeric": dict(zip(self.numeric_names, num)),
            "features_categorical": {k: s[c] for k, c in zip(self.categorical_names, cat)},
            "predicted_label": self.labels[int(self.label_codes[i])],
            "confidence": float(self.confidence[i]),
            "class_probabilities": (dict(zip(self.class_names, self.class_probabilities[i].tolist()))
                                    if self.has_class_probabilities else None),
            "risk": dict(zip(self.risk_names, self.risk[i].tolist())) if self.has_risk else None,
            "context": ({k: s[c] for k, c in zip(self.context_names, self.context_codes[i].tolist())}
                        if self.has_context else None),
            "trace_id": self.trace_ids[i] if self.trace_ids is not None else None,
        }
        return event

    def take(self, index: np.ndarray) -> PredictionFrame:
        """A frame holding only the rows in ``index`` (a bool mask or int array)."""
        idx = np.flatnonzero(index) if index.dtype == bool else index
        ids = self.event_ids
        return PredictionFrame(
            self.model_name, self.model_version, [ids[i] for i in idx.tolist()], self.emitted_at[idx],
            self.confidence[idx], self.labels, self.label_codes[idx], self.numeric_names, self.numeric[idx],
            self.categorical_names, self.context_names, self.strings, self.categorical_codes[idx],
            self.context_codes[idx], self.has_context, self.class_names, self.class_probabilities[idx],
            self.has_class_probabilities, self.risk_names, self.risk[idx], self.has_risk,
            None if self.trace_ids is None else [self.trace_ids[i] for i in idx.tolist()], self.batch_id)


def _matrix(buf: bytes, dtype: np.dtype, n: int, k: int) -> np.ndarray:
    if k == 0:
        return np.zeros((n, 0), dtype=dtype)
    return np.frombuffer(buf, dtype=dtype).reshape(n, k)


def frame_from_batch(rec: dict) -> PredictionFrame:
    """Columns of a decoded ``PredictionBatch`` (zero-copy views on its bytes).

    Raises ``ValueError`` when the columns do not fit together (the caller
    dead-letters the record as malformed).
    """
    ids = rec["event_ids"]
    n = len(ids)
    emitted = np.frombuffer(rec["emitted_at"], dtype=I64)
    conf = np.frombuffer(rec["confidence"], dtype=F64)
    codes = np.frombuffer(rec["label_codes"], dtype=I32)
    if not (len(emitted) == len(conf) == len(codes) == n):
        raise ValueError(f"column lengths differ from {n} event ids")
    labels = rec["labels"]
    if n and (codes.min() < 0 or codes.max() >= len(labels)):
        raise ValueError("label code outside the label dictionary")
    k, m, q = len(rec["numeric_names"]), len(rec["categorical_names"]), len(rec["context_names"])
    c, r = len(rec["class_names"]), len(rec["risk_names"])
    sizes = {"numeric_values": (rec["numeric_values"], n * k * 8), "categorical_codes": (rec["categorical_codes"], n * m * 4),
             "context_codes": (rec["context_codes"], n * q * 4),
             "class_probabilities": (rec["class_probabilities"], n * c * 8), "risk_values": (rec["risk_values"], n * r * 8)}
    for name, (buf, want) in sizes.items():
        if len(buf) != want:
            raise ValueError(f"{name} holds {len(buf)} bytes, expected {want}")
    cat = _matrix(rec["categorical_codes"], I32, n, m)
    ctx = _matrix(rec["context_codes"], I32, n, q)
    ns = len(rec["strings"])
    for mat in (cat, ctx):
        if mat.size and (mat.min() < 0 or mat.max() >= ns):
            raise ValueError("category code outside the string dictionary")
    trace = rec.get("trace_ids")
    if trace is not None and len(trace) != n:
        raise ValueError("trace_ids length differs from event ids")
    return PredictionFrame(
        rec["model_name"], rec["model_version"], ids, emitted, conf, labels, codes,
        rec["numeric_names"], _matrix(rec["numeric_values"], F64, n, k),
        rec["categorical_names"], rec["context_names"], rec["strings"], cat, ctx, rec["has_context"],
        rec["class_names"], _matrix(rec["class_probabilities"], F64, n, c), rec["has_class_probabilities"],
        rec["risk_names"], _matrix(rec["risk_values"], F64, n, r), rec["has_risk"], trace, rec["batch_id"])


class _Dict:
    __slots__ = ("index", "values")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.values: list[str] = []

    def code(self, s: str) -> int:
        c = self.index.get(s)
        if c is None:
            c = self.index[s] = len(self.values)
            self.values.append(s)
        return c


def _float_matrix(events: list[dict], group: str, names: list[str]) -> np.ndarray:
    n = len(events)
    first = tuple(names)
    rows = []
    for e in events:
        d = e[group]
        rows.append(list(d.values()) if tuple(d) == first else [d[k] for k in names])
    return np.array(rows, dtype=F64).reshape(n, len(names))


def batch_from_events(events: list[dict], batch_id: str | None = None) -> dict:
    """The ``PredictionBatch`` record for events that share one signature.

    Raises ``ValueError`` if they do not (use :func:`group_by_signature`).
    """
    first = events[0]
    n = len(events)
    sig = signature(first)
    for e in events:
        if e["model_name"] != first["model_name"] or e["model_version"] != first["model_version"]:
            raise ValueError("a PredictionBatch holds one model version: group events with group_by_signature()")
    if any(signature(e) != sig for e in events):
        raise ValueError("events of a PredictionBatch must share feature names: group them with group_by_signature()")
    num_names = list(first["features_numeric"])
    cat_names = list(first["features_categorical"])
    cls = first.get("class_probabilities")
    risk = first.get("risk")
    ctx = first.get("context")
    labels, strings = _Dict(), _Dict()
    sc = strings.code
    numeric = _float_matrix(events, "features_numeric", num_names)
    cat = np.array([[sc(f[k]) for k in cat_names] for f in (e["features_categorical"] for e in events)],
                   dtype=I32).reshape(n, len(cat_names))
    ctx_names = list(ctx) if ctx is not None else []
    ctx_codes = (np.array([[sc(f[k]) for k in ctx_names] for f in (e["context"] for e in events)],
                          dtype=I32).reshape(n, len(ctx_names)) if ctx is not None else np.zeros((n, 0), I32))
    cls_names = list(cls) if cls is not None else []
    probs = _float_matrix(events, "class_probabilities", cls_names) if cls is not None else np.zeros((n, 0), F64)
    risk_names = list(risk) if risk is not None else []
    risks = _float_matrix(events, "risk", risk_names) if risk is not None else np.zeros((n, 0), F64)
    traces = [e.get("trace_id") for e in events]
    return {
        "batch_id": batch_id or uuid.uuid4().hex,
        "model_name": first["model_name"],
        "model_version": first["model_version"],
        "event_ids": [e["event_id"] for e in events],
        "emitted_at": np.array([e["emitted_at"] for e in events], dtype=I64).tobytes(),
        "confidence": np.array([e["confidence"] for e in events], dtype=F64).tobytes(),
        "label_codes": np.array([labels.code(e["predicted_label"]) for e in events], dtype=I32).tobytes(),
        "labels": labels.values,
        "numeric_names": num_names, "numeric_values": numeric.tobytes(),
        "categorical_names": cat_names, "context_names": ctx_names, "strings": strings.values,
        "categorical_codes": cat.tobytes(), "context_codes": ctx_codes.tobytes(), "has_context": ctx is not None,
        "class_names": cls_names, "class_probabilities": probs.tobytes(), "has_class_probabilities": cls is not None,
        "risk_names": risk_names, "risk_values": risks.tobytes(), "has_risk": risk is not None,
        "trace_ids": traces if any(t is not None for t in traces) else None,
    }


def group_by_signature(events: list[dict]) -> list[list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for e in events:
        groups.setdefault(signature(e), []).append(e)
    return list(groups.values())


def frames_from_events(events: list[dict]) -> list[PredictionFrame]:
    """Frames for arbitrary events (grouped by signature, order kept within a group)."""
    return [frame_from_batch(batch_from_events(g, batch_id="")) for g in group_by_signature(events)]


def events_of_batch(rec: dict) -> list[dict]:
    """The ``PredictionEvent`` dicts held by a decoded ``PredictionBatch``."""
    frame = frame_from_batch(rec)
    return [frame.row(i) for i in range(frame.n)]
