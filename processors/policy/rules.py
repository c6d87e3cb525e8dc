"""The columns a routing policy reads, and risk/context rules evaluated over them.

The policy sees predictions as columns whether they arrive as a
:class:`~loopline.processors.wire.frame.PredictionFrame` (the worker's path) or as a list of
decoded ``PredictionEvent`` dicts (:class:`EventColumns`); only the columns
the rules need are extracted.

>>> from loopline.processors.policy.model import RiskRule
>>> evs = [{"event_id": "a", "model_name": "m", "model_version": "1", "emitted_at": 0, "confidence": 0.5,
...         "predicted_label": "x", "risk": r, "context": None} for r in ({"amount": 5.0}, None)]
>>> rule_mask(RiskRule("amount", ">=", 1.0, False, "r"), EventColumns(evs, "m")).tolist()
[True, False]
>>> rule_mask(RiskRule("amount", ">=", 1.0, True, "r"), EventColumns(evs, "m")).tolist()
[True, True]
"""
from __future__ import annotations

import operator
from typing import Protocol

import numpy as np

from loopline.processors.policy.model import ContextRule, RiskRule
from loopline.processors.wire.frame import PredictionFrame

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
        "!=": operator.ne}
_EMPTY: dict = {}


class Columns(Protocol):
    model: str
    n: int
    ids: list[str]
    conf: np.ndarray  # float64
    emitted: np.ndarray  # int64
    labels: list[str]  # dictionary of predicted labels
    label_codes: np.ndarray  # int index into labels

    def risk(self, name: str) -> np.ndarray: ...  # float64, NaN where missing

    def context(self, name: str) -> tuple[np.ndarray, list[str]]: ...  # (codes, dictionary); -1 = missing


class FrameColumns:
    """Zero-copy view of a frame."""

    __slots__ = ("model", "n", "ids", "conf", "emitted", "labels", "label_codes", "override_risk", "_frame")

    def __init__(self, frame: PredictionFrame, override_risk: np.ndarray | None = None) -> None:
        self._frame = frame
        self.override_risk = override_risk  # P(a human overrides), per row, from the online model; None = no model
        self.model = frame.model_name
        self.n = frame.n
        self.ids = frame.event_ids
        self.conf = frame.confidence
        self.emitted = frame.emitted_at
        self.labels = frame.labels
        self.label_codes = frame.label_codes

    def risk(self, name: str) -> np.ndarray:
        col = self._frame.risk_column(name)
        return np.full(self.n, np.nan) if col is None else col

    def context(self, name: str) -> tuple[np.ndarray, list[str]]:
        f = self._frame
        if not f.has_context or name not in f.context_names:
            return np.full(self.n, -1, dtype=np.int32), []
        return f.context_codes[:, f.context_names.index(name)], f.strings


class EventColumns:
    """Columns pulled from decoded event dicts (one pass per column the rules use)."""

    __slots__ = ("model", "n", "ids", "conf", "emitted", "labels", "label_codes", "_events", "_cache")

    def __init__(self, events: list[dict], model: str) -> None:
        self._events = events
        self.model = model
        n = self.n = len(events)
        self.ids = [e["event_id"] for e in events]
        self.conf = np.fromiter([e["confidence"] for e in events], dtype=np.float64, count=n)
        self.emitted = np.fromiter([e["emitted_at"] for e in events], dtype=np.int64, count=n)
        index: dict[str, int] = {}
        setdefault = index.setdefault
        self.label_codes = np.fromiter([setdefault(e["predicted_label"], len(index)) for e in events],
                                       dtype=np.int32, count=n)
        self.labels = list(index)
        self._cache: dict = {}

    def risk(self, name: str) -> np.ndarray:
        key = ("risk", name)
        col = self._cache.get(key)
        if col is None:
            nan = float("nan")
            col = self._cache[key] = np.fromiter(
                [(e.get("risk") or _EMPTY).get(name, nan) for e in self._events], dtype=np.float64, count=self.n)
        return col

    def context(self, name: str) -> tuple[np.ndarray, list[str]]:
        key = ("context", name)
        out = self._cache.get(key)
        if out is None:
            index: dict = {None: -1}
            setdefault = index.setdefault
            codes = np.fromiter([setdefault((e.get("context") or _EMPTY).get(name), len(index) - 1)
                                 for e in self._events], dtype=np.int32, count=self.n)
            del index[None]
            out = self._cache[key] = (codes, list(index))
        return out


def rule_mask(rule: RiskRule | ContextRule, cols: Columns) -> np.ndarray:
    """Rows where ``rule`` fires."""
    if isinstance(rule, RiskRule):
        x = cols.risk(rule.attribute)
        missing = np.isnan(x)
        with np.errstate(invalid="ignore"):
            hit = _OPS[rule.op](x, rule.value) & ~missing
        return hit | missing if rule.match_missing else hit
    codes, strings = cols.context(rule.attribute)
    present = codes >= 0
    inside = np.isin(codes, [i for i, s in enumerate(strings) if s in rule.values])
    hit = (~inside & present) if rule.negate else inside
    return hit | ~present if rule.match_missing else hit
