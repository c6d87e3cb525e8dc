"""Confluent wire format through ``confluent_kafka.schema_registry``.

Used when ``LOOPLINE_SCHEMA_REGISTRY_URL`` is set: records are written as
``00`` + 4-byte schema id + Avro binary, schemas registered under the subject
``<full type name>`` (RecordNameStrategy), and ids resolved back to writer
schemas (cached) when decoding.
"""
from __future__ import annotations

import json
import threading

from fastavro import parse_schema

from loopline.processors.wire.catalogue import SchemaCatalogue, _strip_logical
from loopline.processors.wire.serde import AvroSerde


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
        return name, parse_schema(_strip_logical(raw))


def build_serde(settings, registry: SchemaCatalogue | None = None) -> AvroSerde:
    """The serde for ``settings``: Confluent framing when a schema registry URL is set, else single-object."""
    registry = registry or SchemaCatalogue.load()
    if settings.schema_registry_url:
        return AvroSerde(registry, RegistryFraming(settings.schema_registry_url, registry))
    return AvroSerde(registry)
