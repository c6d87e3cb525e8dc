"""Drift detection on mergeable count summaries (pure logic, no Kafka).

Workers count (:class:`DriftSketch`), summaries add up (:func:`merge_summaries`),
one :class:`DriftMonitor` per model decides, :class:`DriftPolicy` says what
drift does. See ``README.md`` ("Drift") for signals, detectors and calibration.
"""
from processors.drift.baseline import BaselineBuilder
from processors.drift.config import DriftConfig
from processors.drift.monitor import DriftMonitor
from processors.drift.policy import DriftPolicy
from processors.drift.reference import ErrorReference, ReferenceProfile, SignalProfile, build_profile
from processors.drift.sketch import DriftSketch, merge_summaries, summary_from_bytes, summary_to_bytes

__all__ = ["BaselineBuilder", "DriftConfig", "DriftMonitor", "DriftPolicy", "DriftSketch", "ErrorReference",
           "ReferenceProfile", "SignalProfile", "build_profile", "merge_summaries", "summary_from_bytes",
           "summary_to_bytes"]
