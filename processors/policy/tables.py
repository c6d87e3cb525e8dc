"""Validated reading of a policy file's TOML tables: every error names the dotted field.

:class:`Table` wraps one table, hands out typed values (numbers in a range,
integers, strings from a set, string lists, sub-tables) and remembers what was
read, so :meth:`Table.finish` can refuse unknown options — a typo never
silently disables a rule. Used by :mod:`loopline.processors.policy.model` and
:mod:`loopline.processors.policy.quality_options`.
"""
from __future__ import annotations

import math
from typing import Any

from loopline.processors.errors import ConfigError

_MISSING = object()


def config_error(path: str, problem: str, source: str) -> ConfigError:
    """A :class:`ConfigError` naming ``path`` (also kept as ``.field``)."""
    err = ConfigError(f"{path}: {problem} (policy {source})")
    err.field = path  # type: ignore[attr-defined]
    err.source = source  # type: ignore[attr-defined]
    return err


def _show(value: Any) -> str:
    return f"a {type(value).__name__}" if isinstance(value, (dict, list)) else repr(value)


def fmt_number(x: float) -> str:
    """Numbers in reason strings: ``10000`` not ``10000.0``, ``0.9`` not ``0.90000``."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


class Table:
    """Typed, path-aware reads from one TOML table; ``finish`` rejects unknown keys."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, dict):
            raise config_error(path, f"must be a table, got {_show(data)}", source)
        self.data, self.path, self.source = data, path, source
        self._seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> ConfigError:
        return config_error(self.at(key), problem, self.source)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self._seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def number(self, key: str, default: Any = _MISSING, lo: float = -math.inf, hi: float = math.inf,
               lo_open: bool = False) -> Any:
        v = self.raw(key, default)
        if v is None and default is None:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
        if not ok:
            if lo == 0 and hi == 1 and not lo_open:
                want = "a number in [0, 1]"
            elif hi == math.inf:
                want = f"a number {'>' if lo_open else '>='} {fmt_number(lo)}"
            else:
                want = "a finite number"
            raise self.error(key, f"must be {want}, got {_show(v)}")
        return float(v)

    def integer(self, key: str, default: Any = _MISSING, lo: int | None = None) -> Any:
        v = self.raw(key, default)
        if v is None and default is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo):
            want = "an integer" if lo is None else f"an integer >= {lo}"
            raise self.error(key, f"must be {want}, got {_show(v)}")
        return v

    def string(self, key: str, default: Any = _MISSING, choices: tuple[str, ...] = ()) -> Any:
        v = self.raw(key, default)
        if v is None and default is None:
            return None
        if not isinstance(v, str) or not v or (choices and v not in choices):
            want = f"one of {', '.join(choices)}" if choices else "a non-empty string"
            raise self.error(key, f"must be {want}, got {_show(v)}")
        return v

    def boolean(self, key: str, default: bool) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self.error(key, f"must be true or false, got {_show(v)}")
        return v

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        v = self.raw(key, default)
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            raise self.error(key, f"must be a list of non-empty strings, got {_show(v)}")
        return tuple(v)

    def table(self, key: str) -> Table:
        return Table(self.raw(key, {}), self.at(key), self.source)

    def tables(self, key: str) -> list[Table]:
        v = self.raw(key, [])
        if not isinstance(v, list):
            raise self.error(key, f"must be a list of tables, got {_show(v)}")
        return [Table(t, f"{self.at(key)}[{i}]", self.source) for i, t in enumerate(v)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.error(unknown[0], f"unknown option (known here: {', '.join(sorted(self._seen))})")
