"""Run Loopline processes as children (demo, benchmark, tests): bounded start, clean stop."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from loopline.streams.settings import Settings


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that reproduces ``settings`` in a child process (other LOOPLINE_* removed)."""
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("LOOPLINE_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, (tuple, list, dict)):
            value = json.dumps(list(value) if isinstance(value, tuple) else value)  # pydantic-settings reads JSON
        env[f"LOOPLINE_{name.upper()}"] = str(value)
    return env


def loopline_exe() -> str:
    return shutil.which("loopline", path=str(Path(sys.executable).parent)) or "loopline"


class WorkerProcess:
    """A ``loopline worker`` child process; ``start`` returns once ``/readyz`` says ready.

    ``extra_env`` overrides variables of the settings' environment; ``argv``
    replaces the ``loopline worker`` command (same readiness contract).
    """

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None,
                 argv: list[str] | None = None, cwd: Path | None = None, append_log: bool = False) -> None:
        self.settings = settings
        self.log_path = Path(log_path)
        self.extra_env = dict(extra_env or {})
        self.argv = argv
        self.cwd = cwd
        self.append_log = append_log
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        self._log = open(self.log_path, "ab" if self.append_log else "wb")
        self.proc = subprocess.Popen(self.argv or [loopline_exe(), "worker"],
                                     env={**settings_env(self.settings), **self.extra_env}, cwd=self.cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=1) as r:  # noqa: S310 (our own child's http URL)
                    if r.status == 200:
                        return self
            except Exception:  # noqa: S110 (not ready yet: poll again)
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"worker not ready within {timeout:.0f}s; log: {self.log_path}")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=5) as r:  # noqa: S310 (our own child's http URL)
            return r.read()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log:
            self._log.close()
            self._log = None
