"""Every error Loopline raises, under one root.

Each class names a failure kind; ``error_class`` is the short, stable name that
goes into the ``loopline.error.class`` dead-letter header, and the message never
contains feature values or other personal data.
"""
from __future__ import annotations


class LooplineError(Exception):
    """Root of every Loopline error."""

    error_class = "loopline_error"


class ConfigError(LooplineError):
    """A setting or a policy file is invalid."""

    error_class = "config"


class SchemaError(LooplineError):
    """The Avro schemas in ``schemas/`` are inconsistent."""

    error_class = "schema"


class SerializationError(LooplineError):
    """A record could not be encoded."""

    error_class = "serialization"


class DecodeError(LooplineError):
    """A record's bytes could not be decoded."""

    error_class = "decode"


class BadMagicError(DecodeError):
    """The record starts with neither Avro single-object nor Confluent framing."""

    error_class = "bad_magic"


class UnknownSchemaError(DecodeError):
    """The record's schema fingerprint or registry id is not known."""

    error_class = "unknown_schema"


class TruncatedPayloadError(DecodeError):
    """The framing is right but the Avro body is cut short or malformed."""

    error_class = "truncated_payload"


class IncompatibleSchemaError(DecodeError):
    """The writer's schema cannot be resolved to the reader's (e.g. a field without default removed)."""

    error_class = "incompatible_schema"


class UnexpectedTypeError(DecodeError):
    """The record decodes, but to a type this topic does not carry."""

    error_class = "unexpected_type"


class ModelLimitError(LooplineError):
    """A record names one model too many: the per-process model cap is reached (producers choose model names)."""

    error_class = "model_limit"


class ValidationError(LooplineError):
    """A decoded record breaks a semantic rule."""

    error_class = "invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfidenceOutOfRange(ValidationError):
    """Confidence is not a number in [0, 1]."""

    error_class = "confidence_out_of_range"


class NonFiniteFeature(ValidationError):
    """A numeric feature, probability or risk attribute is NaN or infinite."""

    error_class = "non_finite_feature"


class MissingIdentity(ValidationError):
    """event_id, model_name or model_version is empty."""

    error_class = "missing_identity"


class FutureTimestamp(ValidationError):
    """emitted_at lies further in the future than the allowed clock skew."""

    error_class = "future_timestamp"


class UndeclaredLabel(ValidationError):
    """The predicted label is not in the label set its model declares in the policy."""

    error_class = "undeclared_label"


class BrokerError(LooplineError):
    """The Kafka broker could not be started, reached or configured."""

    error_class = "broker"
