"""Keep a child process running: restart it when it exits, with backoff and a cap.

``loopline up`` runs its worker through :class:`Supervisor`. A worker that
crashes (``loopline worker`` exits 3 with one sentence on stderr) is started
again after a backoff that doubles from ``backoff_start`` up to
``backoff_max``; each restart is logged as one line. More than
``max_restarts`` restarts within ``window_seconds`` means the child cannot
run (bad configuration, broker gone): the supervisor gives up and reports it
in one sentence, so a fault loop never spins silently.

Guarantee: while :meth:`Supervisor.run` runs and the cap is not reached, a
child is running or about to be restarted; :meth:`stop` (or SIGTERM handled
by the caller) terminates the child with SIGTERM, then SIGKILL after
``stop_timeout`` seconds, and no restart follows.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO


class Supervisor:
    """Run ``argv`` (with ``env``) until :meth:`stop`; see the module doc."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, name: str = "worker",
                 max_restarts: int = 5, window_seconds: float = 300.0, backoff_start: float = 1.0,
                 backoff_max: float = 30.0, stop_timeout: float = 30.0, log: IO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.argv = list(argv)
        self.env = env
        self.name = name
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.log = log or sys.stderr
        self.clock = clock
        self.restarts = 0
        self.exit_codes: list[int] = []
        self._recent: deque[float] = deque()
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._forced: str | None = None
        self._before_start: Callable[[], None] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _say(self, line: str) -> None:
        print(f"loopline up: {line}", file=self.log, flush=True)

    def run(self) -> int:
        """Supervise until :meth:`stop` (returns 0) or the restart cap is reached (returns 1)."""
        backoff = self.backoff_start
        while not self._stop.is_set():
            started = self.clock()
            with self._lock:
                if self._stop.is_set():
                    break
                self._proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
            code = self._proc.wait()
            if self._stop.is_set():
                break
            with self._lock:
                forced, self._forced = self._forced, None
                before, self._before_start = self._before_start, None
            if forced:  # asked for (restart()): not a crash, not counted against the cap
                if before is not None:
                    before()
                self._say(f"restarted the {self.name}: {forced}")
                continue
            self.exit_codes.append(code)
            now = self.clock()
            if now - started > self.window_seconds:  # it ran fine for a while: start the backoff over
                backoff = self.backoff_start
            self._recent.append(now)
            while self._recent and now - self._recent[0] > self.window_seconds:
                self._recent.popleft()
            if len(self._recent) > self.max_restarts:
                self._say(f"the {self.name} exited {len(self._recent)} times within {self.window_seconds:.0f}s "
                          f"(last exit code {code}); giving up, see its log above")
                return 1
            self.restarts += 1
            self._say(f"the {self.name} exited with code {code}; restart {self.restarts} in {backoff:.1f}s "
                      f"({len(self._recent)} of at most {self.max_restarts} within {self.window_seconds:.0f}s)")
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max)
        return 0

    def restart(self, reason: str, hard: bool = False, before_start: Callable[[], None] | None = None) -> None:
        """Terminate the child (SIGTERM, SIGKILL after ``stop_timeout``; ``hard``: SIGKILL at once) and
        start it again at once, after ``before_start()`` when given. Not counted as a crash.

        ``loopline up`` uses it when the embedded broker died: the worker is killed before the
        new broker starts (a worker stopping cleanly would write its state into the new one).
        """
        with self._lock:
            self._forced = reason
            self._before_start = before_start
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if hard:
            proc.kill()
            return
        proc.terminate()

        def _kill_if_stuck() -> None:
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()

        threading.Thread(target=_kill_if_stuck, name=f"{self.name}-restart", daemon=True).start()

    def stop(self) -> None:
        """Stop supervising and terminate the child (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
