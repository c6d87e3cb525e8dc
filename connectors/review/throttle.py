"""Failed-login throttling for the review server, per account and per client address.

Rule (the same for both scopes, each with its own limit): ``max_failures`` failed logins
within ``window_seconds`` lock the key for ``lockout_seconds`` (default: the window) from the
failure that reached the limit. While locked, every attempt — with the right password too — is refused with the
seconds left (HTTP 429 + ``Retry-After``) *without* checking the password, so a lock cannot
be used to keep guessing, and refused attempts neither count nor extend the lock. When the
lock ends the key starts afresh. A successful login clears its account's failures (not its
address's: one valid account must not reset the counter of an address guessing others).

Memory is bounded: each table keeps at most ``max_keys`` keys (least recently failed
evicted first) and drops keys whose failures and lock have expired; a key holds at most
``max_failures`` timestamps. Keys (names, addresses) live only here — never in logs or
metric labels.

>>> t = LoginThrottle(max_failures=2, window_seconds=60, max_keys=100)
>>> t.retry_after("ana", now=0.0)
0.0
>>> t.failed("ana", now=1.0), t.failed("ana", now=2.0)
(False, True)
>>> t.retry_after("ana", now=30.0)
32.0
>>> t.retry_after("ana", now=62.0)
0.0
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class _Entry:
    failures: deque = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    """One scope (accounts, or addresses) of failed-login counting and locks; see the module docstring."""

    def __init__(self, max_failures: int, window_seconds: float, max_keys: int = 10_000,
                 lockout_seconds: float | None = None) -> None:
        lockout_seconds = window_seconds if lockout_seconds is None else lockout_seconds
        if max_failures < 1 or window_seconds <= 0 or max_keys < 1 or lockout_seconds <= 0:
            raise ValueError("max_failures, window_seconds, lockout_seconds and max_keys must be positive")
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self.max_keys = max_keys
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0.0: it may try now)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.locked_until <= now:
                return 0.0
            return entry.locked_until - now

    def failed(self, key: str, now: float) -> bool:
        """Count one failure of ``key``; True when this failure locks it."""
        with self._lock:
            self._expire(now)
            entry = self._entries.pop(key, None)
            if entry is None or (entry.locked_until and entry.locked_until <= now):
                entry = _Entry(deque(maxlen=self.max_failures))  # new, or the lock is over: start afresh
            while entry.failures and entry.failures[0] <= now - self.window_seconds:
                entry.failures.popleft()
            entry.failures.append(now)
            locked = len(entry.failures) >= self.max_failures and entry.locked_until <= now
            if locked:
                entry.locked_until = now + self.lockout_seconds
                entry.failures.clear()
            self._entries[key] = entry  # most recently failed last
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
            return locked

    def succeeded(self, key: str) -> None:
        """Forget ``key``'s failures (not an active lock: a locked key never gets this far)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until == 0.0:
                del self._entries[key]

    def _expire(self, now: float) -> None:
        # entries are ordered by their last failure: stop at the first one still relevant
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            last = entry.failures[-1] if entry.failures else 0.0
            if max(last + self.window_seconds, entry.locked_until) > now:
                break
            del self._entries[key]
