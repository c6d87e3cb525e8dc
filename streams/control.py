"""Who may change a running worker: named bearer tokens for every state-changing request.

The worker's web port serves two kinds of requests. Reads (``GET /metrics``,
``/healthz``, ``/readyz``, ``/stats``, ``/policy``, ``/learning``) stay open so
Prometheus and operators can look. Every other method (``POST``, ``PUT``,
``PATCH``, ``DELETE``) on any path changes state and needs
``Authorization: Bearer <token>``:

* no or malformed header -> 401 with a JSON message and ``WWW-Authenticate: Bearer``;
* a token that matches none -> 403;
* no token configured at all -> 403 ("control plane disabled"): secure by default.

Nothing reaches the view in those cases, so nothing changes. A matching token
yields its *name* (the actor), which the policy event and the log line record.

Tokens come from ``LOOPLINE_CONTROL_TOKENS`` (``name:token,name2:token2``) and/or
``LOOPLINE_CONTROL_TOKEN_FILE`` (one ``name:token`` per line, ``#`` comments).
The presented token is compared with :func:`hmac.compare_digest` against every
configured token (no early exit), so the response time does not reveal which
token, or how much of one, matched.

>>> tokens = ControlTokens.parse("ops:s3cret-token-0001,ci:another-token-02")
>>> tokens.check("Bearer s3cret-token-0001").actor
'ops'
>>> tokens.check(None).status, tokens.check("Bearer nope").status
(401, 403)
>>> ControlTokens.parse("").check("Bearer anything").status
403
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from loopline.processors.errors import ConfigError

log = logging.getLogger("loopline.control")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DISABLED = "control plane disabled: set LOOPLINE_CONTROL_TOKENS (or LOOPLINE_CONTROL_TOKEN_FILE)"
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``actor`` set when allowed, else an HTTP ``status`` and ``error``."""

    actor: str | None = None
    status: int = 200
    error: str = ""

    @property
    def allowed(self) -> bool:
        return self.actor is not None


class ControlTokens:
    """Named bearer tokens (``name -> token``); see the module docstring for the rules."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = tuple((name, token.encode()) for name, token in tokens.items())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    @classmethod
    def parse(cls, text: str, origin: str = "LOOPLINE_CONTROL_TOKENS", sep: str = ",") -> ControlTokens:
        """``name:token`` items separated by ``sep``; raises ``ConfigError`` naming the bad item (never the token)."""
        tokens: dict[str, str] = {}
        for n, raw in enumerate(text.split(sep), 1):
            item = raw.strip()
            if not item or item.startswith("#"):
                continue
            name, colon, token = item.partition(":")
            name, token = name.strip(), token.strip()
            if not colon or not name or not token:
                raise ConfigError(f"{origin}: item {n} must be name:token")
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"{origin}: the token of {name!r} is shorter than {MIN_TOKEN_LENGTH} characters")
            if name in tokens:
                raise ConfigError(f"{origin}: the name {name!r} appears twice")
            tokens[name] = token
        return cls(tokens)

    @classmethod
    def from_settings(cls, settings) -> ControlTokens:
        """Tokens of ``control_tokens`` plus those in ``control_token_file`` (a name in both is an error)."""
        tokens = dict(cls.parse(settings.control_tokens.get_secret_value())._items())
        path: Path | None = settings.control_token_file
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"LOOPLINE_CONTROL_TOKEN_FILE: cannot read {path}: {exc.__class__.__name__}") from None
            for name, token in cls.parse(text, origin=f"LOOPLINE_CONTROL_TOKEN_FILE {path}", sep="\n")._items():
                if name in tokens:
                    raise ConfigError(f"control token name {name!r} is set twice")
                tokens[name] = token
        return cls(tokens)

    def _items(self):
        return ((name, token.decode()) for name, token in self._tokens)

    def check(self, authorization: str | None) -> Verdict:
        """The verdict on one request's ``Authorization`` header."""
        if not self._tokens:
            return Verdict(status=403, error=DISABLED)
        scheme, _, presented = (authorization or "").strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return Verdict(status=401, error="this request changes state: send Authorization: Bearer <token>")
        given = presented.encode()
        actor = None
        for name, token in self._tokens:  # every token is compared: timing does not tell which one matched
            if hmac.compare_digest(given, token) and actor is None:
                actor = name
        if actor is None:
            return Verdict(status=403, error="the bearer token is not valid for this worker")
        return Verdict(actor=actor)


def refusal_headers(verdict: Verdict) -> dict[str, str]:
    """``WWW-Authenticate`` for a 401 (RFC 6750), nothing otherwise."""
    if verdict.status == 401:
        return {"WWW-Authenticate": 'Bearer realm="loopline-worker"'}
    if verdict.status == 403 and verdict.error != DISABLED:
        return {"WWW-Authenticate": 'Bearer realm="loopline-worker", error="invalid_token"'}
    return {}


# key of the allowed token's name on an aiohttp request
ACTOR = web.RequestKey("loopline_control_actor", str) if hasattr(web, "RequestKey") else "loopline_control_actor"


def control_middleware(tokens: ControlTokens, refusals=None):
    """An aiohttp middleware: reads pass, every other method needs a valid bearer token.

    An allowed request carries the token's name under ``request[ACTOR]``. ``refusals``
    (optional) is a prometheus ``Counter`` with one label, incremented with
    ``unauthenticated`` (401), ``forbidden`` (403) or ``disabled`` (403, no token configured).
    """
    @web.middleware
    async def guard(request, handler):
        if request.method in READ_METHODS:
            return await handler(request)
        verdict = tokens.check(request.headers.get("Authorization"))
        if not verdict.allowed:
            reason = ("unauthenticated" if verdict.status == 401 else
                      "disabled" if verdict.error == DISABLED else "forbidden")
            if refusals is not None:
                refusals.labels(reason).inc()
            log.warning("refused %s %s: %s", request.method, request.path, reason)  # no client address (PII)
            return web.json_response({"error": verdict.error}, status=verdict.status,
                                     headers=refusal_headers(verdict))
        request[ACTOR] = verdict.actor
        return await handler(request)

    return guard


def worker_control_middleware(worker):
    """The guard of one worker's web server, from its settings; counts refusals on its registry.

    Raises ``ConfigError`` at start when a token setting is malformed (never later, per request).
    """
    from prometheus_client import Counter

    tokens = ControlTokens.from_settings(worker.settings)
    worker.control_tokens = tokens
    refusals = Counter("loopline_control_refusals_total",
                       "State-changing worker requests refused, by reason: unauthenticated (no bearer token, "
                       "401), forbidden (wrong token, 403), disabled (no token configured, 403).",
                       ["reason"], registry=worker.metrics.registry)
    if tokens.enabled:
        log.info("control plane: %d bearer token(s): %s", len(tokens.names), ", ".join(tokens.names))
    else:
        log.warning("control plane disabled: POST /policy is refused until LOOPLINE_CONTROL_TOKENS is set")
    return control_middleware(tokens, refusals)
