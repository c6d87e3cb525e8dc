"""Online learning from the correction stream (pure: no Kafka, no Faust).

* :class:`ModelLearner` — per source model: challenger, override-risk model,
  progressive validation, dedupe, offsets, guards (``core``);
* :mod:`~loopline.processors.learning.snapshot` — HMAC-signed ``ModelUpdate`` snapshots;
* :class:`RiskScorer` — the route side: P(override) for whole frames, insights (``scorer``).
"""
from loopline.processors.learning.core import OUTCOMES, BatchOutcome, LearnerConfig, ModelLearner
from loopline.processors.learning.errors import SnapshotError, SnapshotFormatError, SnapshotIntegrityError
from loopline.processors.learning.snapshot import build_update, load_model, update_key, verify

__all__ = ["OUTCOMES", "BatchOutcome", "LearnerConfig", "ModelLearner", "SnapshotError", "SnapshotFormatError",
           "SnapshotIntegrityError", "build_update", "load_model", "update_key", "verify"]
