"""Names on the wire, declared once: Avro type names, tiers, header names, bucket labels.

These are persisted contracts (records on topics, state in tables, dashboards):
``tests/unit/test_persisted_names.py`` pins them, so none changes by accident.
"""
from __future__ import annotations

from typing import Final

NAMESPACE: Final = "io.loopline"

PREDICTION: Final = "io.loopline.PredictionEvent"
PREDICTION_BATCH: Final = "io.loopline.PredictionBatch"
CORRECTION: Final = "io.loopline.CorrectionEvent"
DECISION: Final = "io.loopline.RoutingDecision"
DECISION_BATCH: Final = "io.loopline.DecisionBatch"
REVIEW_TASK: Final = "io.loopline.ReviewTask"
DRIFT_EVENT: Final = "io.loopline.DriftEvent"
DRIFT_SUMMARY: Final = "io.loopline.DriftSummary"
DRIFT_REFERENCE: Final = "io.loopline.DriftReference"
RETRAIN_REQUEST: Final = "io.loopline.RetrainRequest"
MODEL_UPDATE: Final = "io.loopline.ModelUpdate"
TRAINING_EXAMPLE: Final = "io.loopline.TrainingExample"
POLICY_EVENT: Final = "io.loopline.PolicyEvent"

#: The routing tiers, in order of human attention (the ``Tier`` enum of the schemas).
TIERS: Final = ("auto", "review", "escalate")

#: Header that tells the kinds of records apart on the drift-sketches topic.
DRIFT_KIND_HEADER: Final = "loopline.drift.kind"

#: The bucket that collects keys beyond a cap (models, labels, slice values).
OTHER: Final = "__other__"

#: The development HMAC key: refused wherever a real key is required.
DEV_KEY: Final = "loopline-dev-key-change-me"

__all__ = ["CORRECTION", "DECISION", "DECISION_BATCH", "DEV_KEY", "DRIFT_EVENT", "DRIFT_KIND_HEADER",
           "DRIFT_REFERENCE", "DRIFT_SUMMARY", "MODEL_UPDATE", "NAMESPACE", "OTHER", "POLICY_EVENT",
           "PREDICTION", "PREDICTION_BATCH", "RETRAIN_REQUEST", "REVIEW_TASK", "TIERS", "TRAINING_EXAMPLE"]
