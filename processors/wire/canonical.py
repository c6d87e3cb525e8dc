"""Avro parsing canonical form, spec-correct and in the Apache Avro Python library's variant.

The Avro spec's canonical form writes a primitive with attributes (a logical
type) as the bare primitive name: ``{"type":"long","logicalType":"timestamp-millis"}``
becomes ``"long"``. The Apache Avro Python library (``avro`` on PyPI, 1.12) keeps
it as an object, ``{"type":"long"}``, so every type with a ``timestamp-millis``
field gets a different CRC-64-AVRO fingerprint from that library
(``avro.schema.parse(s).fingerprint()``) while the binary body is identical.
:func:`canonical_form` computes either; the schema catalogue registers the
variant's fingerprint as an alias of the spec-correct one.

>>> s = {"type": "record", "name": "T", "namespace": "x", "doc": "d",
...      "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
>>> canonical_form(s)
'{"name":"x.T","type":"record","fields":[{"name":"at","type":"long"}]}'
>>> canonical_form(s, avro_python=True)
'{"name":"x.T","type":"record","fields":[{"name":"at","type":{"type":"long"}}]}'
"""
from __future__ import annotations

import json
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_KEY_ORDER = ("name", "type", "fields", "symbols", "items", "values", "size")


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _node(node: Any, namespace: str | None, variant: bool, seen: set[str]) -> Any:
    if isinstance(node, str):
        return node if node in PRIMITIVES else _full(node, namespace)
    if isinstance(node, list):
        return [_node(n, namespace, variant, seen) for n in node]
    t = node["type"]
    if t in PRIMITIVES:
        has_more = any(k != "type" for k in node)
        return {"type": t} if variant and has_more else t
    if not isinstance(t, str) or t not in ("record", "error", "enum", "fixed", "array", "map"):
        return _node(t, namespace, variant, seen)
    out: dict[str, Any] = {}
    if t in ("record", "error", "enum", "fixed"):
        ns = node.get("namespace", namespace)
        full = _full(node["name"], ns)
        if full in seen:
            return full
        seen.add(full)
        namespace = full.rpartition(".")[0] or None
        out["name"] = full
    out["type"] = "record" if t == "error" else t
    if t in ("record", "error"):
        out["fields"] = [{"name": f["name"], "type": _node(f["type"], namespace, variant, seen)} for f in node["fields"]]
    elif t == "enum":
        out["symbols"] = list(node["symbols"])
    elif t == "array":
        out["items"] = _node(node["items"], namespace, variant, seen)
    elif t == "map":
        out["values"] = _node(node["values"], namespace, variant, seen)
    elif t == "fixed":
        out["size"] = int(node["size"])
    return {k: out[k] for k in _KEY_ORDER if k in out}


def canonical_form(schema: Any, avro_python: bool = False) -> str:
    """The parsing canonical form of ``schema`` (``avro_python=True``: the ``avro`` 1.12 library's variant)."""
    return json.dumps(_node(schema, None, avro_python, set()), separators=(",", ":"), ensure_ascii=False)


_EMPTY = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _table()


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO (the spec's ``Rabin`` fingerprint) of ``data``, as the 8 little-endian bytes single-object framing carries."""
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xFF]
    return fp.to_bytes(8, "little")
