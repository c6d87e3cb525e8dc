"""Records framed by the Apache Avro Python library (``avro`` on PyPI), as a foreign producer would.

Single-object framing: ``C3 01`` + the library's own ``schema.fingerprint()`` +
the body its ``DatumWriter`` writes. Timestamps go in as ``datetime`` (the
library's representation of ``timestamp-millis``).
"""
from __future__ import annotations

import datetime as dt
import io
import json

import avro.io
import avro.schema

from loopline.processors.wire.catalogue import SchemaCatalogue

_UTC = dt.UTC


def parse(registry: SchemaCatalogue, type_name: str, label: str = "current") -> avro.schema.Schema:
    version = next(v for v in registry.versions(type_name) if v.label == label)
    return avro.schema.parse(json.dumps(version.expanded))


def to_avro_datum(event: dict, ts_fields: tuple[str, ...] = ("emitted_at",)) -> dict:
    out = dict(event)
    for f in ts_fields:
        out[f] = dt.datetime.fromtimestamp(out[f] / 1000, tz=_UTC)
    return out


def encode(schema: avro.schema.Schema, datum: dict) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + schema.fingerprint())
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def decode_body(schema: avro.schema.Schema, data: bytes, header: int = 10) -> dict:
    return avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[header:])))
