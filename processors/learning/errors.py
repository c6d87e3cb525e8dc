"""Errors of the learning core (all under :class:`loopline.processors.errors.LooplineError`)."""
from __future__ import annotations

from loopline.processors.errors import ConfigError, DecodeError


class LearningConfigError(ConfigError):
    """A learner setting is invalid (unknown pipeline, bad share...)."""

    error_class = "learning_config"


class SnapshotError(DecodeError):
    """A model snapshot cannot be used."""

    error_class = "snapshot"


class SnapshotIntegrityError(SnapshotError):
    """A snapshot's HMAC does not match its bytes (tampered, or signed with another key)."""

    error_class = "snapshot_hmac"


class SnapshotFormatError(SnapshotError):
    """A snapshot whose model_format this version cannot load."""

    error_class = "snapshot_format"
