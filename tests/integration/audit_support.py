"""Helpers for the audit sink tests and benchmark: a throw-away PostgreSQL database, the sink as a child process."""
from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator

from loopline.connectors.processes import WorkerProcess, loopline_exe

#: The machine's PostgreSQL (trust auth); LOOPLINE_TEST_PG_URL overrides it.
PG_ADMIN_URL = os.environ.get("LOOPLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """A new, uniquely named PostgreSQL database for one test; dropped afterwards (only that one)."""
    import psycopg

    name = f"loopline_audit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sink_process(settings, log_path) -> WorkerProcess:
    """``loopline audit-sink`` as a child; ready when its /readyz answers (on ``settings.audit_port``)."""
    probe = settings.model_copy(update={"web_port": settings.audit_port})
    return WorkerProcess(probe, log_path, argv=[loopline_exe(), "audit-sink"], append_log=True)


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) in a Prometheus text exposition."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


def wait_for(check, timeout: float, what: str, every: float = 0.3):
    """Poll ``check()`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (our own child's http URL)
        return r.read().decode()
