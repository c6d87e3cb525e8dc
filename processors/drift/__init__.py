"""Drift detection on mergeable count summaries (pure logic, no Kafka).

Workers count (:class:`DriftSketch`), summaries add up (:func:`merge_summaries`),
one :class:`DriftMonitor` per model decides, :class:`DriftPolicy` says what
drift does. In the pipeline: each worker's :class:`DriftCollector` counts,
the drift agent's :class:`DriftCoordinator` merges and decides, every route
worker's :class:`DriftBoard` follows the verdicts. See ``README.md`` ("Drift")
for signals, detectors and calibration.
"""
from loopline.processors.drift.baseline import BaselineBuilder
from loopline.processors.drift.board import DriftBoard
from loopline.processors.drift.collector import DriftCollector
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.coordinator import DriftCoordinator, PartitionWatermarks
from loopline.processors.drift.histogram import DriftSketch, merge_summaries, summary_from_bytes, summary_to_bytes
from loopline.processors.drift.monitor import DriftMonitor
from loopline.processors.drift.policy import DriftPolicy, DriftPolicyBook
from loopline.processors.drift.reference import ErrorReference, ReferenceProfile, SignalProfile, build_profile

__all__ = ["BaselineBuilder", "DriftBoard", "DriftCollector", "DriftConfig", "DriftCoordinator", "DriftMonitor",
           "DriftPolicy", "DriftPolicyBook", "DriftSketch", "ErrorReference", "PartitionWatermarks",
           "ReferenceProfile", "SignalProfile", "build_profile", "merge_summaries", "summary_from_bytes",
           "summary_to_bytes"]
