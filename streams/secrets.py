"""Production-mode checks of secrets and the default data directory.

*Production mode* means the worker talks to a broker that is not on this host:
a ``LOOPLINE_KAFKA_BOOTSTRAP`` naming any host other than a loopback address.
The embedded broker of ``loopline up``, the demo and the tests run on loopback
and stay in development mode. In production mode the snapshot HMAC key must not
be a value published in this repository (the development key, or the
``change-me`` default of docker-compose.yml) unless
``LOOPLINE_ALLOW_DEV_KEY=true`` says so explicitly: with a public key anyone
who can write to the model-updates topic can forge the models the workers load.
"""
from __future__ import annotations

import os
from pathlib import Path

from loopline.processors.errors import ConfigError
from loopline.processors.wire.names import DEV_KEY

#: Keys anyone can read in this repository.
PUBLIC_KEYS = frozenset({DEV_KEY, "change-me"})
_LOOPBACK = ("localhost", "127.", "::1", "[::1]")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/loopline``, else ``~/.local/share/loopline``: the same whatever the working directory."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "loopline"


def is_production(bootstrap: str | None) -> bool:
    """True when ``bootstrap`` names a broker on another host (any non-loopback address)."""
    if not bootstrap:
        return False
    for server in bootstrap.split(","):
        host = server.strip().rsplit(":", 1)[0]
        if not host.startswith(_LOOPBACK):
            return True
    return False


def refuse_public_key(settings) -> None:
    """Raise :class:`ConfigError` in production mode when the snapshot key is public and not explicitly allowed."""
    if not is_production(settings.kafka_bootstrap) or settings.allow_dev_key:
        return
    if settings.snapshot_hmac_key.get_secret_value() in PUBLIC_KEYS:
        raise ConfigError(f"LOOPLINE_SNAPSHOT_HMAC_KEY is a public development value and the broker "
                          f"({settings.kafka_bootstrap}) is not on this host: set a secret key "
                          f"(e.g. `openssl rand -hex 32`), or LOOPLINE_ALLOW_DEV_KEY=true for a test setup")
