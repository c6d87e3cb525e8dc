"""Replacing the routing policy while the worker runs, and logging every change.

Three ways in, one rule: a new policy is validated completely before it is
used; an invalid one is refused with a message naming the bad field and the
policy in force stays.

- **File watch**: with ``LOOPLINE_POLICY_FILE`` set, the worker re-reads the file
  every ``policy_watch_seconds`` and applies it when its content changed.
- **HTTP**: ``POST /policy`` with the TOML as the body and ``Authorization:
  Bearer <token>`` (what ``loopline policy apply FILE`` sends to each worker) →
  200 with the versions, or 400 with the error; no token 401, a wrong one 403,
  and nothing changes (``loopline.streams.control``). The token's name is the
  change's ``actor``. ``GET /policy`` shows the version in force, the overlays and the
  effective auto-tier thresholds per model.
- **Overlays** (drift tightening, the autopilot) call ``PolicyHolder.set_overlay``
  and then :meth:`PolicyRuntime.log_change`.

Every change — and every refused policy — is a ``PolicyEvent`` on
``loopline.policy-events`` (key: worker id), a log line and a
``loopline_policy_changes_total{kind}`` increment.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from pathlib import Path

import faust
from faust.web import View
from prometheus_client import Counter

from loopline.processors.errors import ConfigError
from loopline.processors.policy.policy import PolicyChange
from loopline.processors.routing.router import OutputRecord
from loopline.processors.wire.names import POLICY_EVENT
from loopline.streams.control import ACTOR

log = logging.getLogger("loopline.policy")


def personal_marks(policy) -> dict:
    """The ``personal_data`` fields of a PolicyEvent: what the policy in force marks personal, per model."""
    spec = policy.spec
    return {"personal_data": {name: sorted(mp.personal_data) for name, mp in spec.models.items()},
            "personal_data_default": sorted(spec.fallback.personal_data), "personal_data_known": True}


class PolicyRuntime:
    """Policy replacement and the policy-change log of one worker."""

    def __init__(self, worker, app: faust.App) -> None:
        self.worker = worker
        s = worker.settings
        self.changes = Counter("loopline_policy_changes_total",
                               "Routing-policy changes in this worker by kind: replace, overlay_set, "
                               "overlay_cleared, rejected.", ["kind"], registry=worker.metrics.registry)
        self.path = Path(s.policy_file) if s.policy_file else None
        self._seen_digest = _digest(self.path) if self.path else None
        self.recent: list[dict] = []  # the last 20 changes, for GET /policy and `loopline policy status`
        if self.path and s.policy_watch_seconds > 0:
            @app.timer(interval=s.policy_watch_seconds)
            async def watch_policy_file() -> None:
                await self.check_file()

        runtime = self

        @app.page("/policy")
        class PolicyView(View):
            async def get(self, request):
                return self.json(runtime.describe())

            async def post(self, request):
                text = await request.text()
                if not text.strip():
                    return self.json({"error": "the request body must be the policy file (TOML)"}, status=400)
                actor = request.get(ACTOR)
                if not actor:  # the control middleware sets it; never change state without it
                    return self.json({"error": "this request changes state: send Authorization: Bearer <token>"},
                                     status=401)
                status, body = await runtime.apply_text(text, source="http", actor=actor)
                return self.json(body, status=status)

    # ---------------------------------------------------------------- changes
    async def apply_text(self, text: str, source: str, actor: str = "") -> tuple[int, dict]:
        """Validate and apply ``text``; ``actor`` (the control token's name) goes into the policy event."""
        holder = self.worker.policy
        try:
            change = holder.replace(text, source=source)
        except ConfigError as exc:
            await self.log_change(PolicyChange(holder.version, holder.version, _now_ms(), source, False,
                                               kind="rejected", detail=str(exc)), actor=actor)
            return 400, {"error": str(exc), "field": exc.field, "version_in_force": holder.version}
        if change.changed:
            await self.log_change(change, actor=actor)
        return 200, {"old_version": change.old_version, "new_version": change.new_version,
                     "changed": change.changed, "worker": self.worker.worker_id}

    async def check_file(self) -> None:
        """Apply the policy file if its content changed since it was last seen."""
        digest = _digest(self.path)
        if digest is None or digest == self._seen_digest:
            return
        self._seen_digest = digest  # a refused file is reported once, not on every poll
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read policy file %s: %s", self.path, exc)
            return
        await self.apply_text(text, source=str(self.path))

    async def log_change(self, change: PolicyChange, actor: str = "") -> None:
        """Publish ``change`` as a PolicyEvent, count it and log it; ``actor`` names who sent it (HTTP)."""
        w = self.worker
        event = {
            "event_id": uuid.uuid4().hex, "kind": change.kind, "worker": w.worker_id,
            "old_version": change.old_version, "new_version": change.new_version, "source": change.source,
            "model_name": change.model, "overlay": change.overlay, "evidence": dict(change.evidence),
            "detail": change.detail, "changed_at": change.changed_at_ms, "actor": actor,
            **personal_marks(w.policy.policy),
        }
        self.changes.labels(change.kind).inc()
        self.recent = (self.recent + [event])[-20:]
        level = logging.ERROR if change.kind == "rejected" else logging.INFO
        log.log(level, "policy %s: %s -> %s (%s%s)%s", change.kind, change.old_version, change.new_version,
                change.source, f" by {actor}" if actor else "", f": {change.detail}" if change.detail else "")
        await w.publish([OutputRecord("policy_events", w.worker_id.encode(), w.serde.encode(POLICY_EVENT, event))])

    def describe(self) -> dict:
        holder = self.worker.policy
        policy = holder.policy
        models = {}
        for name in sorted(set(policy.spec.models) | {m for _, m in holder.overlays}):
            mp = policy.model(name)
            models[name] = {"min_confidence": mp.min_confidence,
                            "min_confidence_by_class": dict(mp.min_confidence_by_class),
                            "audit_rate": mp.audit_rate, "max_override_risk": mp.max_override_risk}
        return {
            "version": holder.version, "base_version": holder.base.version, "source": holder.base.spec.source,
            "overlays": [{"name": o.name, "model": o.model, "min_confidence": o.min_confidence,
                          "min_confidence_delta": o.min_confidence_delta, "audit_rate": o.audit_rate,
                          "audit_rate_delta": o.audit_rate_delta, "evidence": dict(o.evidence),
                          "set_at": o.set_at_ms} for o in holder.overlays.values()],
            "models": models, "recent_changes": list(self.recent), "worker": self.worker.worker_id,
        }


def _digest(path: Path | None) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def _now_ms() -> int:
    return int(time.time() * 1000)
