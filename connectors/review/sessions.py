"""Server-side review sessions: a random id in the cookie, the session itself held here.

A session ends when it reaches its absolute lifetime (``max_age_seconds``), when it has
been idle for ``idle_seconds``, at logout (:meth:`SessionRegistry.end`), or when the
server restarts (reviewers log in again). Ending it here makes its cookie worthless at
once, wherever a copy of it is. Only a SHA-256 of each id is kept, so the table does not
hold usable cookies. At most ``max_sessions`` sessions exist; beyond that the least
recently used one ends.

>>> reg = SessionRegistry(max_age_seconds=100, idle_seconds=10, max_sessions=10)
>>> sid = reg.start("ana", now=0)
>>> reg.lookup(sid, now=5)
'ana'
>>> reg.lookup(sid, now=16) is None   # idle for 11 s
True
>>> sid = reg.start("ana", now=20); _ = reg.end(sid); reg.lookup(sid, now=21) is None
True
"""
from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Session:
    name: str
    expires_at: float
    last_seen: float


def _digest(sid: str) -> bytes:
    return hashlib.sha256(sid.encode()).digest()


class SessionRegistry:
    """Live review sessions (see the module docstring)."""

    def __init__(self, max_age_seconds: float, idle_seconds: float, max_sessions: int = 10_000) -> None:
        self.max_age_seconds = max_age_seconds
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self, name: str, now: float) -> str:
        """A new session for ``name``; returns the id to put in the cookie (256 random bits)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[_digest(sid)] = _Session(name, now + self.max_age_seconds, now)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return sid

    def lookup(self, sid: str, now: float) -> str | None:
        """The reviewer name of a live session (and mark it used), else None (the session ends if expired)."""
        key = _digest(sid)
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                return None
            if s.expires_at <= now or s.last_seen + self.idle_seconds <= now:
                del self._sessions[key]
                return None
            s.last_seen = now
            self._sessions.move_to_end(key)
            return s.name

    def end(self, sid: str) -> bool:
        """End one session (logout); True if it was live."""
        with self._lock:
            return self._sessions.pop(_digest(sid), None) is not None

    def end_all(self, name: str) -> int:
        """End every session of ``name`` (password change, removal); returns how many."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.name == name]
            for k in keys:
                del self._sessions[k]
            return len(keys)

    def sweep(self, now: float) -> int:
        """Drop expired sessions; returns how many (called on each login, so memory follows live use)."""
        with self._lock:
            dead = [k for k, s in self._sessions.items()
                    if s.expires_at <= now or s.last_seen + self.idle_seconds <= now]
            for k in dead:
                del self._sessions[k]
            return len(dead)
