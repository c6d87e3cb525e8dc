"""Semantic checks on decoded predictions. Pure functions, no I/O.

A prediction is valid when its identity is present, its confidence is a number
in [0, 1], every numeric feature / probability / risk attribute is finite, and
it was not emitted further in the future than the allowed clock skew.
"""
from __future__ import annotations

import math

from loopline.processors.errors import (
    ConfidenceOutOfRange,
    FutureTimestamp,
    MissingIdentity,
    NonFiniteFeature,
    ValidationError,
)

_isfinite = math.isfinite


def validate_prediction(event: dict, now_ms: int, max_skew_ms: int) -> None:
    """Raise a :class:`ValidationError` subclass naming the first broken rule.

    >>> ok = {"event_id": "e1", "model_name": "m", "model_version": "1", "confidence": 0.5,
    ...       "features_numeric": {"x": 1.0}, "emitted_at": 0}
    >>> validate_prediction(ok, now_ms=1000, max_skew_ms=0)
    >>> validate_prediction({**ok, "confidence": 1.5}, now_ms=1000, max_skew_ms=0)
    Traceback (most recent call last):
    ...
    loopline.processors.errors.ConfidenceOutOfRange: confidence 1.5 is outside [0, 1]
    """
    if not event["event_id"]:
        raise MissingIdentity("event_id is empty", field="event_id")
    if not event["model_name"]:
        raise MissingIdentity("model_name is empty", field="model_name")
    if not event["model_version"]:
        raise MissingIdentity("model_version is empty", field="model_version")
    c = event["confidence"]
    if not (0.0 <= c <= 1.0):  # NaN fails both comparisons
        raise ConfidenceOutOfRange(f"confidence {c} is outside [0, 1]", field="confidence")
    for group in ("features_numeric", "class_probabilities", "risk"):
        values = event.get(group)
        if values:
            for name, v in values.items():
                if not _isfinite(v):
                    # the feature *name* is schema-level, not personal data; the value is never echoed
                    raise NonFiniteFeature(f"{group}[{name}] is not finite", field=f"{group}.{name}")
    if event["emitted_at"] > now_ms + max_skew_ms:
        ahead = (event["emitted_at"] - now_ms) / 1000.0
        raise FutureTimestamp(f"emitted_at is {ahead:.0f}s in the future (allowed skew {max_skew_ms / 1000:.0f}s)",
                              field="emitted_at")


def check_prediction(event: dict, now_ms: int, max_skew_ms: int) -> ValidationError | None:
    """Like :func:`validate_prediction` but returns the error instead of raising."""
    try:
        validate_prediction(event, now_ms, max_skew_ms)
    except ValidationError as exc:
        return exc
    return None
