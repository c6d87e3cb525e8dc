"""Raw rows kept only while a reference is being chosen: columns with a sort key.

A model version's reference is *the first N events by (emitted_at, event_id)*.
That set is the same whichever worker saw which event, so reference rows are
shipped raw (bounded by N per worker and flush) and chosen after merging:
``Columns.concat`` + ``first(n)`` is associative and order-independent.

Field names: ``n:<feature>`` numeric (float, NaN = missing), ``c:<feature>``
categorical (str), ``confidence`` (float), ``label`` (str), ``error`` (0/1).

>>> a = Columns(np.array([5, 1]), np.array(["e5", "e1"]), {"confidence": np.array([0.5, 0.9])})
>>> b = Columns(np.array([3]), np.array(["e3"]),
...             {"confidence": np.array([0.7]), "label": np.array(["x"], dtype=object)})
>>> c = Columns.concat([a, b]).first(2)
>>> c.ids.tolist(), c.fields["label"].tolist()
(['e1', 'e3'], ['\\x00missing', 'x'])
>>> Columns.from_json(c.to_json()).ids.tolist()
['e1', 'e3']
"""
from __future__ import annotations

import base64

import numpy as np

from loopline.processors.wire.frame import PredictionFrame

MISSING = "\x00missing"


def _is_float(name: str) -> bool:
    return name.startswith("n:") or name in ("confidence", "error")


class Columns:
    """Rows as numpy columns: ``t`` (int64 ms), ``ids`` (str) and named ``fields``."""

    __slots__ = ("t", "ids", "fields")

    def __init__(self, t: np.ndarray, ids: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        self.t = np.asarray(t, dtype=np.int64)
        self.ids = np.asarray(ids, dtype=object)
        self.fields = fields

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def empty(cls) -> Columns:
        return cls(np.zeros(0, np.int64), np.zeros(0, object), {})

    @classmethod
    def from_frame(cls, frame: PredictionFrame) -> Columns:
        """The drift-relevant columns of a prediction frame."""
        f: dict[str, np.ndarray] = {}
        for j, name in enumerate(frame.numeric_names):
            f["n:" + name] = np.array(frame.numeric[:, j], dtype=np.float64)
        strings = np.asarray(frame.strings, dtype=object)
        for j, name in enumerate(frame.categorical_names):
            f["c:" + name] = strings[frame.categorical_codes[:, j]] if len(strings) else np.zeros(frame.n, object)
        f["confidence"] = np.array(frame.confidence, dtype=np.float64)
        f["label"] = np.asarray(frame.labels, dtype=object)[frame.label_codes] if frame.n else np.zeros(0, object)
        return cls(np.array(frame.emitted_at, dtype=np.int64), np.asarray(frame.event_ids, dtype=object), f)

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        names = sorted({k for p in parts for k in p.fields})
        fields = {}
        for k in names:
            cols = []
            for p in parts:
                col = p.fields.get(k)
                if col is None:
                    col = np.full(len(p), np.nan) if _is_float(k) else np.full(len(p), MISSING, dtype=object)
                cols.append(col)
            fields[k] = np.concatenate(cols)
        return cls(np.concatenate([p.t for p in parts]), np.concatenate([p.ids for p in parts]), fields)

    def take(self, idx: np.ndarray) -> Columns:
        return Columns(self.t[idx], self.ids[idx], {k: v[idx] for k, v in self.fields.items()})

    def order(self) -> np.ndarray:
        """Row order by (t, id): the same for any split and order of the input."""
        return np.lexsort((self.ids.astype(str), self.t)) if len(self) else np.zeros(0, np.int64)

    def first(self, n: int) -> Columns:
        """The ``n`` smallest rows by (t, id), sorted."""
        return self.take(self.order()[:n])

    def split_before(self, watermark_ms: int) -> tuple[Columns, Columns]:
        early = self.t < watermark_ms
        return self.take(np.flatnonzero(early)), self.take(np.flatnonzero(~early))

    def to_json(self) -> dict:
        """JSON-able form: numbers as base64 little-endian arrays (``{"f8": ...}`` / ``{"i8": ...}``;
        NaN = missing), strings as lists. Decoding and encoding cost a copy, not a Python
        object per value (a JSON float list cost ~2 µs per value)."""
        return {"t": _pack(self.t, "<i8", "i8"), "ids": self.ids.tolist(),
                "fields": {k: _pack(v, "<f8", "f8") if _is_float(k) else v.tolist() for k, v in self.fields.items()}}

    @classmethod
    def from_json(cls, d: dict) -> Columns:
        """Inverse of :meth:`to_json`; also reads the older form with plain lists (``None`` = missing)."""
        fields = {}
        for k, v in d["fields"].items():
            if _is_float(k):
                fields[k] = _unpack(v, np.float64)
            else:
                fields[k] = np.array(v, dtype=object)
        return cls(_unpack(d["t"], np.int64), np.array(d["ids"], dtype=object), fields)


def _pack(v: np.ndarray, dtype: str, tag: str) -> dict:
    return {tag: base64.b64encode(np.ascontiguousarray(v, dtype=dtype).tobytes()).decode("ascii")}


def _unpack(v, dtype) -> np.ndarray:
    if isinstance(v, dict):
        tag, data = next(iter(v.items()))
        return np.frombuffer(base64.b64decode(data), dtype="<f8" if tag == "f8" else "<i8").astype(dtype)
    if dtype is np.float64:
        return np.array([np.nan if x is None else x for x in v], dtype=np.float64)
    return np.array(v, dtype=dtype)


def outcome_columns(outcomes: list[dict]) -> dict[str, Columns]:
    """Joined outcomes grouped by model version.

    Each outcome is ``{"model_version", "event_id", "time_ms", "error"}``
    (``error`` truthy = the human overrode the prediction), or a
    ``TrainingExample`` dict (see :func:`outcome_from_example`).
    """
    groups: dict[str, list[tuple]] = {}
    for o in outcomes:
        if "prediction" in o:
            o = outcome_from_example(o)
            if o is None:
                continue
        groups.setdefault(o["model_version"], []).append((int(o["time_ms"]), o["event_id"], 1.0 if o["error"] else 0.0))
    out = {}
    for v, rows in groups.items():
        t, ids, err = zip(*rows)
        out[v] = Columns(np.array(t, np.int64), np.array(ids, dtype=object), {"error": np.array(err, np.float64)})
    return out


def outcome_from_example(example: dict) -> dict | None:
    """The error outcome of a ``TrainingExample`` (None when the answer carries no label).

    >>> outcome_from_example({"model_version": "v1", "event_id": "e", "reviewed_at": 7, "action": "override",
    ...                       "effective_label": "fraud", "prediction": {"predicted_label": "legit"}})
    {'model_version': 'v1', 'event_id': 'e', 'time_ms': 7, 'error': 1}
    """
    label = example.get("effective_label") or example.get("label")
    if label is None or example.get("action") not in ("approve", "override"):
        return None
    err = int(label != example["prediction"]["predicted_label"])
    return {"model_version": example["model_version"], "event_id": example["event_id"],
            "time_ms": int(example["reviewed_at"]), "error": err}
