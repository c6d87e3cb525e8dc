"""Simulated traffic, producer model and reviewers for the end-to-end demo (no Kafka here).

* :class:`FraudTraffic` — seeded fraud-like transactions with a covariate shift
  and a concept drift, as ``PredictionEvent`` dicts in numpy-generated chunks;
  ground truth kept apart in a bounded :class:`GroundTruthStore`.
* :class:`StaticProducerModel` — the numpy logistic regression that fills the
  predictions, fitted once on the traffic's past, optionally over-confident.
* :class:`SimulatedReviewers` — reviewers with capacity, latency, label noise
  and (optionally) adversarial flips, answering ``ReviewTask`` dicts with
  ``CorrectionEvent`` dicts in simulated time.
"""
from loopline.connectors.simulator.features import CHANNELS, MERCHANTS, NUMERIC_FEATURES
from loopline.connectors.simulator.ground_truth import LABELS, GroundTruthStore
from loopline.connectors.simulator.producer_model import StaticProducerModel
from loopline.connectors.simulator.reviewers import ReviewerProfile, SimulatedReviewers, default_reviewers
from loopline.connectors.simulator.traffic import FraudTraffic, TrafficArrays, TrafficChunk

__all__ = [
    "CHANNELS",
    "FraudTraffic",
    "GroundTruthStore",
    "LABELS",
    "MERCHANTS",
    "NUMERIC_FEATURES",
    "ReviewerProfile",
    "SimulatedReviewers",
    "StaticProducerModel",
    "TrafficArrays",
    "TrafficChunk",
    "default_reviewers",
]
