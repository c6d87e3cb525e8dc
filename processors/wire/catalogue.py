"""The Avro contract: loads every ``.avsc`` under ``schemas/`` once.

Each file holds one named type. References between files are expanded the way
Avro's parsing canonical form expects (a named type is spelled out at its first
use, referred to by name afterwards). Superseded versions in
``schemas/superseded/`` are registered too, and so is every container type
expanded with every historical version of the types it references, so a record
written by any version the project ever shipped resolves by fingerprint.

Every version also answers to an *alias* fingerprint: the one the Apache Avro
Python library (``avro`` 1.12) computes, whose canonical form keeps logical-typed
primitives as ``{"type":"long"}`` (see :mod:`loopline.processors.wire.canonical`).
The bytes after the header are identical, so such records decode as the version
they name.

Timestamps (``timestamp-millis``) are read and written as plain ``int``
milliseconds on the hot path: the logical type is kept in the published
contract but stripped from the parsed schemas used for encoding and decoding,
which saves a ``datetime`` construction per field and keeps the byte layout
identical.
"""
from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from loopline.processors.errors import SchemaError
from loopline.processors.wire.canonical import canonical_form, crc64_avro
from loopline.processors.wire.names import NAMESPACE

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def schema_dir() -> Path:
    """Folder holding the ``.avsc`` files (works installed or from a checkout)."""
    return Path(str(resources.files("loopline.schemas")))


def _fullname(schema: dict) -> str:
    name = schema["name"]
    if "." in name:
        return name
    return f"{schema.get('namespace', NAMESPACE)}.{name}"


def _refs(node: Any, out: set[str]) -> set[str]:
    """Names of non-primitive types referenced by string inside ``node``."""
    if isinstance(node, str):
        if node not in PRIMITIVES:
            out.add(node if "." in node else f"{NAMESPACE}.{node}")
    elif isinstance(node, list):
        for item in node:
            _refs(item, out)
    elif isinstance(node, dict):
        t = node.get("type")
        if t in ("record", "error"):
            for f in node["fields"]:
                _refs(f["type"], out)
        elif t == "array":
            _refs(node["items"], out)
        elif t == "map":
            _refs(node["values"], out)
        elif t not in ("enum", "fixed"):
            _refs(t, out)
    return out


def _expand(node: Any, defs: dict[str, dict], seen: set[str]) -> Any:
    """Inline referenced named types at their first use (canonical-form order)."""
    if isinstance(node, str):
        full = node if "." in node else f"{NAMESPACE}.{node}"
        if node in PRIMITIVES:
            return node
        if full in seen:
            return full
        if full not in defs:
            raise SchemaError(f"type {full} is referenced but no .avsc defines it")
        return _expand(defs[full], defs, seen)
    if isinstance(node, list):
        return [_expand(item, defs, seen) for item in node]
    if isinstance(node, dict):
        t = node.get("type")
        out = dict(node)
        if t in ("record", "error", "enum", "fixed"):
            seen.add(_fullname(node))
        if t in ("record", "error"):
            out["fields"] = [{**f, "type": _expand(f["type"], defs, seen)} for f in node["fields"]]
        elif t == "array":
            out["items"] = _expand(node["items"], defs, seen)
        elif t == "map":
            out["values"] = _expand(node["values"], defs, seen)
        elif t not in ("enum", "fixed"):
            out["type"] = _expand(t, defs, seen)
        return out
    return node


def _strip_logical(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_logical(n) for n in node]
    if isinstance(node, dict):
        if node.get("logicalType") in ("timestamp-millis", "timestamp-micros") and node.get("type") == "long":
            return "long"
        return {k: _strip_logical(v) for k, v in node.items()}
    return node


@dataclass(frozen=True)
class SchemaVersion:
    """One concrete writer schema: a type name plus its fully expanded form."""

    name: str
    expanded: dict
    fingerprint: bytes  # 8 bytes little-endian CRC-64-AVRO
    parsed: dict  # fastavro-parsed, logical timestamps stripped
    current: bool
    label: str  # e.g. "current" or "prediction_event_v1"


class SchemaCatalogue:
    """All schema versions of the project, addressable by name and fingerprint.

    >>> reg = SchemaCatalogue.load()
    >>> reg.current("io.loopline.PredictionEvent").name
    'io.loopline.PredictionEvent'
    >>> len(reg.current("io.loopline.PredictionEvent").fingerprint)
    8
    """

    def __init__(self, current: dict[str, dict], superseded: dict[str, list[tuple[str, dict]]]) -> None:
        self._raw_current = current
        self._raw_superseded = superseded
        self._current: dict[str, SchemaVersion] = {}
        self._by_fp: dict[bytes, SchemaVersion] = {}
        for name in current:
            for version in self._versions_of(name):
                prev = self._by_fp.get(version.fingerprint)
                if prev is None or version.current:
                    self._by_fp[version.fingerprint] = version
                if version.current:
                    self._current[name] = version
        #: alias fingerprint (the ``avro`` Python library's variant) -> the version it names
        self._aliases: dict[bytes, SchemaVersion] = {}
        for version in self._by_fp.values():
            alias = crc64_avro(canonical_form(version.expanded, avro_python=True).encode())
            if alias not in self._by_fp and alias not in self._aliases:
                self._aliases[alias] = version

    @classmethod
    def load(cls, folder: Path | None = None) -> SchemaCatalogue:
        folder = folder or schema_dir()
        current: dict[str, dict] = {}
        for path in sorted(folder.glob("*.avsc")):
            schema = json.loads(path.read_text())
            name = _fullname(schema)
            if name in current:
                raise SchemaError(f"{path.name}: type {name} is defined twice")
            current[name] = schema
        superseded: dict[str, list[tuple[str, dict]]] = {}
        for path in sorted((folder / "superseded").glob("*.avsc")):
            schema = json.loads(path.read_text())
            superseded.setdefault(_fullname(schema), []).append((path.stem, schema))
        return cls(current, superseded)

    def _versions_of(self, name: str) -> Iterable[SchemaVersion]:
        root = self._raw_current[name]
        deps = sorted(self._closure(name))
        choices = []
        for dep in deps:
            options = [("current", self._raw_current[dep])] + self._raw_superseded.get(dep, [])
            choices.append([(dep, label, s) for label, s in options])
        own = [("current", root)] + self._raw_superseded.get(name, [])
        for own_label, own_schema in own:
            for combo in itertools.product(*choices) if choices else [()]:
                defs = dict(self._raw_current)
                labels = [] if own_label == "current" else [own_label]
                for dep, label, schema in combo:
                    defs[dep] = schema
                    if label != "current":
                        labels.append(label)
                expanded = _expand(own_schema, defs, set())
                canonical = to_parsing_canonical_form(expanded)
                fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))  # already little-endian
                yield SchemaVersion(
                    name=name,
                    expanded=expanded,
                    fingerprint=fp,
                    parsed=parse_schema(_strip_logical(copy.deepcopy(expanded))),
                    current=not labels,
                    label="current" if not labels else "+".join(labels),
                )

    def _closure(self, name: str) -> set[str]:
        todo, out = [name], set()
        while todo:
            n = todo.pop()
            schemas = [self._raw_current[n]] + [s for _, s in self._raw_superseded.get(n, [])]
            for s in schemas:
                for ref in _refs(s, set()):
                    if ref not in out and ref != name:
                        if ref not in self._raw_current:
                            raise SchemaError(f"{n} references {ref}, which no .avsc defines")
                        out.add(ref)
                        todo.append(ref)
        return out

    def current(self, name: str) -> SchemaVersion:
        full = name if "." in name else f"{NAMESPACE}.{name}"
        try:
            return self._current[full]
        except KeyError:
            raise SchemaError(f"no schema named {full}") from None

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        """The version a fingerprint names: spec-correct, or the ``avro`` library's alias."""
        return self._by_fp.get(fp) or self._aliases.get(fp)

    def aliases(self, name: str | None = None) -> dict[bytes, SchemaVersion]:
        """Alias fingerprint -> version (of ``name`` only, if given); empty for types without logical types."""
        full = None if name is None else (name if "." in name else f"{NAMESPACE}.{name}")
        return {fp: v for fp, v in self._aliases.items() if full is None or v.name == full}

    def fingerprints(self, name: str) -> list[tuple[bytes, SchemaVersion, bool]]:
        """Every fingerprint a record of ``name`` may carry: ``(fingerprint, version, is_alias)``, current first."""
        out = [(v.fingerprint, v, False) for v in self.versions(name)]
        out += [(fp, v, True) for fp, v in self.aliases(name).items()]
        return sorted(out, key=lambda t: (not t[1].current, t[2], t[1].label))

    def versions(self, name: str) -> list[SchemaVersion]:
        full = name if "." in name else f"{NAMESPACE}.{name}"
        return [v for v in self._by_fp.values() if v.name == full]

    @property
    def names(self) -> list[str]:
        return sorted(self._current)

    def raw(self, name: str) -> dict:
        return self._raw_current[name]

    def superseded_raw(self, name: str) -> list[tuple[str, dict]]:
        return list(self._raw_superseded.get(name, []))


#: The 0.1 name (it read as Confluent's Schema Registry server, which is another thing); see docs/changelog.md.
SchemaRegistry = SchemaCatalogue
