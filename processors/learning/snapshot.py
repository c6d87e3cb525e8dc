"""Model snapshots as ``ModelUpdate`` records: pickled, compressed, signed with HMAC-SHA256.

Snapshots travel over Kafka to other processes, and unpickling runs code, so
the HMAC over ``model_bytes`` (key: ``settings.snapshot_hmac_key``) is checked
*before* anything is unpickled; a mismatch raises
:class:`~loopline.processors.learning.errors.SnapshotIntegrityError` and nothing is loaded.

>>> up = build_update("fraud", "override_risk", 3, {"w": 1}, key=b"k", parent_version=2, now_ms=0)
>>> load_model(up, b"k")
{'w': 1}
>>> up["model_bytes"] = up["model_bytes"][:-1] + b"x"
>>> load_model(up, b"k")
Traceback (most recent call last):
...
loopline.processors.learning.errors.SnapshotIntegrityError: fraud/override_risk v3: HMAC mismatch; snapshot refused
"""
from __future__ import annotations

import hashlib
import hmac
import pickle
import time
import zlib

from loopline.processors.learning.errors import SnapshotFormatError, SnapshotIntegrityError

MODEL_FORMAT = "river-pickle-zlib/1"
ROLES = ("challenger", "champion", "override_risk", "learner")


def sign(model_bytes: bytes, key: bytes) -> str:
    return hmac.new(key, model_bytes, hashlib.sha256).hexdigest()


def update_key(model_name: str, role: str) -> bytes:
    """The compacted topic's key: ``<model>/<role>``."""
    return f"{model_name}/{role}".encode()


def build_update(model_name: str, role: str, version: int, obj, *, key: bytes, parent_version: int | None = None,
                 examples_seen: int = 0, trained_through: list[dict] | None = None,
                 metrics: dict[str, float] | None = None, now_ms: int | None = None) -> dict:
    """A ``ModelUpdate`` dict holding ``obj`` (pickled, zlib-compressed, signed)."""
    data = zlib.compress(pickle.dumps(obj, protocol=5), 6)
    return {"model_name": model_name, "role": role, "version": int(version), "parent_version": parent_version,
            "examples_seen": int(examples_seen), "trained_through": list(trained_through or []),
            "metrics": {k: float(v) for k, v in (metrics or {}).items()}, "model_format": MODEL_FORMAT,
            "model_bytes": data, "hmac_sha256": sign(data, key),
            "published_at": int(time.time() * 1000) if now_ms is None else now_ms}


def verify(update: dict, key: bytes) -> None:
    """Raise unless ``update`` is in a known format and its HMAC matches its bytes."""
    name = f"{update.get('model_name')}/{update.get('role')} v{update.get('version')}"
    if update.get("model_format") != MODEL_FORMAT:
        raise SnapshotFormatError(f"{name}: model_format {update.get('model_format')!r} is not {MODEL_FORMAT!r}")
    expected = sign(update["model_bytes"], key)
    if not hmac.compare_digest(expected, str(update.get("hmac_sha256", ""))):
        raise SnapshotIntegrityError(f"{name}: HMAC mismatch; snapshot refused")


def load_model(update: dict, key: bytes):
    """The object in ``update``, after :func:`verify` (which raises before any unpickling)."""
    verify(update, key)
    try:
        return pickle.loads(zlib.decompress(update["model_bytes"]))  # noqa: S301 (only after the HMAC check above)
    except Exception as exc:  # signed but unloadable: another River version, say
        raise SnapshotFormatError(f"{update['model_name']}/{update['role']} v{update['version']}: "
                                  f"cannot load ({type(exc).__name__})") from exc
