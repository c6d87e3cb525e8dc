"""Confluent wire format through ``confluent_kafka.schema_registry``.

Used when ``LOOPLINE_SCHEMA_REGISTRY_URL`` is set: records are written as
``00`` + 4-byte schema id + Avro binary, schemas registered under the subject
``<full type name>`` (RecordNameStrategy), and ids resolved back to writer
schemas (cached) when decoding.

A writer schema registered with *references* (e.g. a ``CorrectionEvent`` whose
``tier`` field names ``io.loopline.Tier``, registered as its own subject) is
resolved the way confluent-kafka's ``AvroDeserializer`` does it: every reference's
subject/version is fetched, its own references first (recursively, at most
``MAX_REFERENCE_DEPTH`` levels and ``MAX_REFERENCES`` schemas), and each named
type is defined once before the schema that uses it.
"""
from __future__ import annotations

import json
import threading

from fastavro import parse_schema

from loopline.processors.errors import UnknownSchemaError
from loopline.processors.wire.catalogue import SchemaCatalogue, _strip_logical
from loopline.processors.wire.serde import AvroSerde

MAX_REFERENCE_DEPTH = 16
MAX_REFERENCES = 256


class RegistryFraming:
    """Implements :class:`loopline.processors.wire.serde.ConfluentFraming` with a schema registry client."""

    def __init__(self, url: str, registry: SchemaCatalogue, client=None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = client or SchemaRegistryClient.new_client({"url": url})  # mock:// URLs give the in-memory client
        self._registry = registry
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def id_for(self, type_name: str) -> int:
        schema_id = self._ids.get(type_name)
        if schema_id is None:
            from confluent_kafka.schema_registry import Schema

            expanded = self._registry.current(type_name).expanded
            with self._lock:
                schema_id = self._client.register_schema(type_name, Schema(json.dumps(expanded), "AVRO"))
                self._ids[type_name] = schema_id
        return schema_id

    def writer_for_id(self, schema_id: int) -> tuple[str, dict]:
        schema = self._client.get_schema(schema_id)
        raw = json.loads(schema.schema_str)
        name = raw["name"] if "." in raw["name"] else f"{raw.get('namespace', '')}.{raw['name']}"
        named: dict = {}
        self._define_references(schema, named, set(), 0)
        return name, parse_schema(_strip_logical(raw), named_schemas=named)

    def _define_references(self, schema, named: dict, done: set, depth: int) -> None:
        """Parse every schema ``schema`` references into ``named`` (theirs first), each named type once."""
        if depth > MAX_REFERENCE_DEPTH:
            raise UnknownSchemaError(f"schema references nest deeper than {MAX_REFERENCE_DEPTH} levels")
        for ref in schema.references or []:
            if (ref.subject, ref.version) in done:
                continue
            if len(done) >= MAX_REFERENCES:
                raise UnknownSchemaError(f"a schema references more than {MAX_REFERENCES} schemas")
            done.add((ref.subject, ref.version))
            registered = self._client.get_version(ref.subject, ref.version)
            self._define_references(registered.schema, named, done, depth + 1)
            raw = json.loads(registered.schema.schema_str)
            full = raw.get("name", "") if isinstance(raw, dict) else ""
            if isinstance(raw, dict) and "." not in full and raw.get("namespace"):
                full = f"{raw['namespace']}.{full}"
            if full and full in named:
                continue  # reached by two paths (a diamond): defined once
            parse_schema(_strip_logical(raw), named_schemas=named)


def build_serde(settings, registry: SchemaCatalogue | None = None) -> AvroSerde:
    """The serde for ``settings``: Confluent framing when a schema registry URL is set, else single-object."""
    registry = registry or SchemaCatalogue.load()
    if settings.schema_registry_url:
        return AvroSerde(registry, RegistryFraming(settings.schema_registry_url, registry))
    return AvroSerde(registry)
