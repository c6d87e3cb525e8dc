"""Reviewer passwords (scrypt, per-user salt) and signed session cookies (HMAC-SHA256).

>>> salt, digest = hash_password("s3cret")
>>> verify_password("s3cret", salt, digest), verify_password("nope", salt, digest)
(True, False)
>>> signer = SessionSigner(b"k", max_age_seconds=60)
>>> signer.verify(signer.sign("ana", now=0), now=30)
'ana'
>>> signer.verify(signer.sign("ana", now=0), now=61) is None
True
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

ROLES = ("analyst", "senior")
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}


def hash_password(password: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    salt = os.urandom(16) if salt is None else salt
    return salt, hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


def verify_password(password: str, salt: bytes, digest: bytes) -> bool:
    return hmac.compare_digest(hash_password(password, salt)[1], digest)


class SessionSigner:
    """``name|expiry|mac`` cookies; the key is derived from the project's HMAC key."""

    def __init__(self, key: bytes, max_age_seconds: float) -> None:
        self.key = hmac.new(key, b"loopline-review-session-v1", hashlib.sha256).digest()
        self.max_age_seconds = max_age_seconds

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def sign(self, name: str, now: float) -> str:
        payload = f"{base64.urlsafe_b64encode(name.encode()).decode()}|{int(now + self.max_age_seconds)}"
        return f"{payload}|{self._mac(payload.encode())}"

    def verify(self, cookie: str, now: float) -> str | None:
        """The reviewer name, or None when the cookie is forged, malformed or expired."""
        try:
            name_b64, expiry, mac = cookie.split("|")
            if not hmac.compare_digest(mac, self._mac(f"{name_b64}|{expiry}".encode())):
                return None
            if int(expiry) < now:
                return None
            return base64.urlsafe_b64decode(name_b64.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
