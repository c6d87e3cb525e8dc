"""Avro on the wire: single-object encoding by default, Confluent framing optionally.

* Single-object encoding (Avro spec): ``C3 01`` + 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema + Avro binary body. The writer
  schema is looked up by fingerprint among every version in ``schemas/`` and
  the record is resolved to the current version of its type.
* Confluent wire format: ``00`` + 4-byte big-endian schema id + Avro binary.
  Decoding and encoding it needs a :class:`ConfluentFraming` (implemented in
  ``loopline.streams.confluent`` with ``confluent_kafka.schema_registry``), so this
  module stays free of Kafka imports.

Anything else raises a :class:`~loopline.processors.errors.DecodeError` subclass; the
worker turns those into dead-letter records.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from io import BytesIO
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from loopline.processors.errors import (
    BadMagicError,
    IncompatibleSchemaError,
    SerializationError,
    TruncatedPayloadError,
    UnknownSchemaError,
)
from loopline.processors.wire.catalogue import SchemaCatalogue, SchemaVersion
from loopline.processors.wire.names import (  # noqa: F401 (re-exported: the serde is where callers look)
    CORRECTION,
    DECISION,
    DECISION_BATCH,
    DRIFT_EVENT,
    DRIFT_REFERENCE,
    DRIFT_SUMMARY,
    MODEL_UPDATE,
    POLICY_EVENT,
    PREDICTION,
    PREDICTION_BATCH,
    RETRAIN_REQUEST,
    REVIEW_TASK,
    TRAINING_EXAMPLE,
)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
HEADER_LEN = 10



class ConfluentFraming(Protocol):
    """What the serde needs from a schema registry client."""

    def writer_for_id(self, schema_id: int) -> tuple[str, dict]:
        """(type name, fastavro-parsed writer schema) for a registry id."""

    def id_for(self, type_name: str) -> int:
        """Registry id of the current schema of ``type_name`` (registering it if needed)."""


class AvroSerde:
    """Encodes and decodes Loopline records. Parses every schema once.

    >>> serde = AvroSerde(SchemaCatalogue.load())
    >>> data = serde.encode(DRIFT_EVENT, {"model_name": "m", "model_version": "1",
    ...     "signal": "amount", "detector": "psi", "score": 0.3, "threshold": 0.2,
    ...     "window": "last 5000", "state": "started", "detected_at": 0})
    >>> data[:2].hex()
    'c301'
    >>> serde.decode(data)[1]["score"]
    0.3
    """

    def __init__(self, registry: SchemaCatalogue, confluent: ConfluentFraming | None = None) -> None:
        self.registry = registry
        self.confluent = confluent
        self._encoders: dict[str, tuple[bytes, dict]] = {}
        for name in registry.names:
            v = registry.current(name)
            self._encoders[name] = (SINGLE_OBJECT_MAGIC + v.fingerprint, v.parsed)
        # fingerprint -> (type name, writer parsed, reader parsed or None when identical)
        self._decoders: dict[bytes, tuple[str, dict, dict | None]] = {}
        for name in registry.names:
            current = registry.current(name)
            for v in registry.versions(name):
                reader = None if v.fingerprint == current.fingerprint else current.parsed
                self._decoders[v.fingerprint] = (name, v.parsed, reader)
            for fp, v in registry.aliases(name).items():  # the avro library's variant fingerprints
                reader = None if v.fingerprint == current.fingerprint else current.parsed
                self._decoders.setdefault(fp, (name, v.parsed, reader))
        self._confluent_cache: dict[int, tuple[str, dict, dict | None]] = {}

    # ---------------------------------------------------------------- encode
    def encode(self, type_name: str, record: dict) -> bytes:
        """Encode one record of the current version of ``type_name``."""
        if self.confluent is not None:
            return self._encode_confluent(type_name, record)
        header, parsed = self._encoder(type_name)
        buf = BytesIO()
        buf.write(header)
        try:
            schemaless_writer(buf, parsed, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise SerializationError(f"cannot encode {type_name}: {exc}") from exc
        return buf.getvalue()

    def encode_many(self, type_name: str, records: Iterable[dict]) -> list[bytes]:
        return [self.encode(type_name, r) for r in records]

    def _encoder(self, type_name: str) -> tuple[bytes, dict]:
        try:
            return self._encoders[type_name]
        except KeyError:
            raise SerializationError(f"no schema named {type_name}") from None

    def _encode_confluent(self, type_name: str, record: dict) -> bytes:
        _, parsed = self._encoder(type_name)
        schema_id = self.confluent.id_for(type_name)  # type: ignore[union-attr]
        buf = BytesIO()
        buf.write(bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big"))
        try:
            schemaless_writer(buf, parsed, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise SerializationError(f"cannot encode {type_name}: {exc}") from exc
        return buf.getvalue()

    # ---------------------------------------------------------------- decode
    def decode(self, data: bytes | None, expect: Sequence[str] = ()) -> tuple[str, Any]:
        """Return ``(type name, record)`` resolved to the current schema version.

        ``expect``: the types the caller's topic carries; an unknown fingerprint's
        error then names the fingerprints those types have (else those of the
        types producers write).
        """
        if not data:
            raise BadMagicError("empty record value")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            entry = self._decoders.get(data[2:HEADER_LEN])
            if entry is None:
                if len(data) < HEADER_LEN:
                    raise TruncatedPayloadError(f"single-object header cut short ({len(data)} bytes)")
                raise UnknownSchemaError(unknown_fingerprint_message(self.registry, data[2:HEADER_LEN], expect))
            offset = HEADER_LEN
        elif data[0] == CONFLUENT_MAGIC and self.confluent is not None:
            if len(data) < 5:
                raise TruncatedPayloadError("Confluent header cut short")
            entry = self._confluent_entry(int.from_bytes(data[1:5], "big"))
            offset = 5
        else:
            what = "Confluent framing but no schema registry is configured" if data[0] == 0 else (
                f"unknown framing byte 0x{data[0]:02x}")
            raise BadMagicError(f"not an Avro single-object or Confluent record: {what}")
        name, writer, reader = entry
        bio = BytesIO(data)
        bio.seek(offset)
        try:
            record = schemaless_reader(bio, writer, reader)
        except SchemaResolutionError as exc:
            raise IncompatibleSchemaError(f"{name}: the writer's schema cannot be read as the current one "
                                          f"({clean_message(exc)})") from exc
        except (EOFError, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, OverflowError,
                MemoryError) as exc:
            raise TruncatedPayloadError(f"{name}: Avro body unreadable "
                                        f"({type(exc).__name__}: {clean_message(exc)})") from exc
        except Exception as exc:  # fastavro raises assorted types on garbage
            raise TruncatedPayloadError(f"{name}: Avro body unreadable ({type(exc).__name__})") from exc
        if bio.tell() != len(data):
            raise TruncatedPayloadError(f"{name}: {len(data) - bio.tell()} trailing bytes after the record")
        return name, record

    def _confluent_entry(self, schema_id: int) -> tuple[str, dict, dict | None]:
        entry = self._confluent_cache.get(schema_id)
        if entry is None:
            try:
                name, writer = self.confluent.writer_for_id(schema_id)  # type: ignore[union-attr]
            except Exception as exc:
                raise UnknownSchemaError(f"schema id {schema_id} not resolvable: {exc}") from exc
            if name not in self._encoders:
                raise UnknownSchemaError(f"schema id {schema_id} is {name}, not a Loopline type")
            current = self.registry.current(name)
            entry = (name, writer, current.parsed)
            self._confluent_cache[schema_id] = entry
        return entry

    def fingerprint_of(self, type_name: str) -> bytes:
        return self._encoder(type_name)[0][2:]


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def clean_message(exc: BaseException) -> str:
    """The library's message with object reprs (``<_io.BytesIO object at 0x…>``) replaced by "the record"."""
    return _OBJECT_REPR.sub("the record", str(exc))[:300]


#: the types producers outside Loopline write: named when an unknown fingerprint has no expected type
PRODUCED_TYPES = (PREDICTION, PREDICTION_BATCH, CORRECTION)


def unknown_fingerprint_message(registry: SchemaCatalogue, fp: bytes, expect: Sequence[str] = ()) -> str:
    """One sentence: the unknown fingerprint and the ones the expected types have (``loopline schemas`` lists all)."""
    parts = []
    for name in expect or PRODUCED_TYPES:
        fps = ", ".join(f.hex() for f, _, _ in registry.fingerprints(name))
        parts.append(f"{name.rsplit('.', 1)[-1]}: {fps}")
    return (f"unknown schema fingerprint {fp.hex()}; known fingerprints ({'; '.join(parts)}); "
            f"`loopline schemas` lists every schema")


def schema_version_of(data: bytes, registry: SchemaCatalogue) -> SchemaVersion | None:
    """Which schema version wrote a single-object record (None if not single-object)."""
    if data[:2] != SINGLE_OBJECT_MAGIC:
        return None
    return registry.by_fingerprint(data[2:HEADER_LEN])
