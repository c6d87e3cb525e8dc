"""Policy options of the threshold autopilot and of slice-based evaluation (pure parsing).

Parsed from a model section of the policy file (``loopline.processors.policy.model``
calls these for the keys ``autopilot`` and ``slices``)::

    [models.fraud.autopilot]
    enabled = true            # default true; false (or no section) = fixed thresholds
    error_budget = 0.01       # required, (0, 1): at most 1% of auto-approved predictions wrong ...
    confidence = 0.95         # ... at this one-sided confidence level, [0.5, 1)
    min_verified = 500        # effective verified outcomes needed before loosening, >= 1
    max_step = 0.02           # largest loosening per adjustment, (0, 1]
    max_tighten_step = 0.1    # largest tightening per adjustment (the safe direction may move faster), (0, 1]
    interval_seconds = 60     # how often the autopilot evaluates, > 0
    window_minutes = 60       # verified outcomes of the last 1-2 windows count, > 0
    min_threshold = 0.5       # the threshold never goes below ...
    max_threshold = 1.0       # ... or above these, [0, 1]
    min_slice_verified = 500  # a slice with this many effective outcomes gets its own say (default min_verified)

    [[models.fraud.slices]]
    attribute = "country"     # a key of the prediction's context map ...
    kind = "context"          # ... (kind "context", top_k most frequent values + "other")
    top_k = 10                # 1..100
    [[models.fraud.slices]]
    attribute = "amount"      # or a key of its risk map, binned at edges (kind "risk")
    kind = "risk"
    edges = [100, 1000, 10000]

Every error is a :class:`~loopline.processors.errors.ConfigError` naming the field.

>>> parse_autopilot({"error_budget": 0.01}, "models.fraud.autopilot", "<s>").max_step
0.02
>>> parse_slices([{"attribute": "amount", "kind": "risk", "edges": [100, 10]}], "models.fraud.slices", "<s>")
Traceback (most recent call last):
...
loopline.processors.errors.ConfigError: models.fraud.slices[0].edges: must be strictly increasing, got [100, 10] (policy <s>)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopline.processors.policy.tables import Table as _Table
from loopline.processors.policy.tables import config_error

MAX_TOP_K = 100
MAX_EDGES = 32


@dataclass(frozen=True, slots=True)
class AutopilotSpec:
    """The autopilot's settings for one model (see the module docstring)."""

    error_budget: float
    confidence: float = 0.95
    min_verified: int = 500
    max_step: float = 0.02
    interval_seconds: float = 60.0
    window_minutes: float = 60.0
    min_threshold: float = 0.5
    max_threshold: float = 1.0
    min_slice_verified: int = 500
    enabled: bool = True
    max_tighten_step: float = 0.1


@dataclass(frozen=True, slots=True)
class SliceSpec:
    """One slice dimension: a context attribute (top-K values + other) or risk-attribute bins."""

    attribute: str
    kind: str  # "context" | "risk"
    top_k: int = 10
    edges: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.attribute}"


def parse_autopilot(table: Any, path: str, source: str) -> AutopilotSpec:
    """Validate one ``autopilot`` table; raise ``ConfigError`` naming the bad field."""
    t = _Table(table, path, source)
    enabled = t.boolean("enabled", True)
    budget = t.number("error_budget", lo=0, hi=1, lo_open=True)
    if budget >= 1:
        raise t.error("error_budget", f"must be a number in (0, 1), got {budget!r}")
    conf = t.number("confidence", 0.95, lo=0.5, hi=1)
    if conf >= 1:
        raise t.error("confidence", f"must be a number in [0.5, 1), got {conf!r}")
    min_verified = t.integer("min_verified", 500, lo=1)
    max_step = t.number("max_step", 0.02, lo=0, hi=1, lo_open=True)
    tighten_step = t.number("max_tighten_step", 0.1, lo=0, hi=1, lo_open=True)
    interval = t.number("interval_seconds", 60.0, lo=0, lo_open=True)
    window = t.number("window_minutes", 60.0, lo=0, lo_open=True)
    lo = t.number("min_threshold", 0.5, 0, 1)
    hi = t.number("max_threshold", 1.0, 0, 1)
    if hi < lo:
        raise t.error("max_threshold", f"must be >= min_threshold ({lo!r}), got {hi!r}")
    min_slice = t.integer("min_slice_verified", min_verified, lo=1)
    t.finish()
    return AutopilotSpec(budget, conf, min_verified, max_step, interval, window, lo, hi, min_slice, enabled,
                         tighten_step)


def parse_slices(value: Any, path: str, source: str) -> tuple[SliceSpec, ...]:
    """Validate a ``slices`` list of tables; raise ``ConfigError`` naming the bad field."""
    if not isinstance(value, list):
        raise config_error(path, f"must be a list of tables, got {type(value).__name__}", source)
    out: list[SliceSpec] = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(value):
        t = _Table(raw, f"{path}[{i}]", source)
        attr = t.string("attribute")
        kind = t.string("kind", "context", choices=("context", "risk"))
        if (kind, attr) in seen:
            raise t.error("attribute", f"slice {kind}:{attr} is declared twice")
        seen.add((kind, attr))
        if kind == "context":
            top_k = t.integer("top_k", 10, lo=1)
            if top_k > MAX_TOP_K:
                raise t.error("top_k", f"must be an integer <= {MAX_TOP_K}, got {top_k!r}")
            spec = SliceSpec(attr, kind, top_k)
        else:
            edges = t.raw("edges")
            ok = isinstance(edges, list) and 0 < len(edges) <= MAX_EDGES and all(
                isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
            if not ok:
                raise t.error("edges", f"must be a list of 1..{MAX_EDGES} numbers, got {edges!r}")
            if any(b <= a for a, b in zip(edges, edges[1:])):
                raise t.error("edges", f"must be strictly increasing, got {edges!r}")
            spec = SliceSpec(attr, kind, len(edges) + 1, tuple(float(e) for e in edges))
        t.finish()
        out.append(spec)
    return tuple(out)
