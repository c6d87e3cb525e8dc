"""Vectorised semantic validation of a :class:`PredictionFrame`.

:func:`invalid_rows` is a fast filter over whole columns; the exact error of
each flagged row comes from :func:`loopline.processors.routing.validation.check_prediction` on
that row alone, so both paths apply one rule set (a test checks they agree).
"""
from __future__ import annotations

import numpy as np

from loopline.processors.wire.frame import PredictionFrame


def invalid_rows(frame: PredictionFrame, now_ms: int, max_skew_ms: int) -> np.ndarray:
    """Boolean mask of rows that break any rule."""
    n = frame.n
    if not frame.model_name or not frame.model_version:
        return np.ones(n, dtype=bool)
    c = frame.confidence
    bad = ~((c >= 0.0) & (c <= 1.0))
    bad |= frame.emitted_at > now_ms + max_skew_ms
    for mat in (frame.numeric, frame.class_probabilities, frame.risk):
        if mat.shape[1]:
            bad |= ~np.isfinite(mat).all(axis=1)
    if "" in frame.event_ids:
        bad |= np.fromiter((not x for x in frame.event_ids), dtype=bool, count=n)
    return bad
