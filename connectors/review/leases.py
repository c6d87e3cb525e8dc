"""Leases on the review server for tasks read straight from Kafka (used by ``ReviewerClient``).

Guarantees: a task is handed out only after the review server leased it to this reviewer
(``POST /api/tasks/<id>/claim`` answered 200); tasks held by someone else or answered already
(409/403) are dropped; tasks the server does not know yet (404) wait at most
``claim_wait_seconds`` (bounded: at most ``max_pending`` of them, oldest dropped first — they
stay in Kafka and in the server's queue) and are then handed out unleased. Answers to leased
tasks go through the server, which checks the lease, so one task is answered once.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from urllib.parse import quote

from loopline.processors.errors import LooplineError


class LeaseRefused(LooplineError):
    """The review server refused the answer (lease lost, bad label, ...); nothing was published."""

    error_class = "review_lease"


class ServerLeases:
    """Claims, answers and releases through the review server's JSON API with HTTP Basic auth."""

    def __init__(self, server: str, reviewer: str, password: str, claim_wait_seconds: float = 30.0,
                 max_pending: int = 10_000) -> None:
        self.server = server.rstrip("/")
        self.claim_wait_seconds = claim_wait_seconds
        self.max_pending = max_pending
        self._auth = "Basic " + base64.b64encode(f"{reviewer}:{password}".encode()).decode()
        self._pending: OrderedDict[str, tuple[dict, float]] = OrderedDict()
        self._held: set[str] = set()

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,  # noqa: S310 (the configured server)
                                     headers={"Authorization": self._auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (same URL)
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read())
            except json.JSONDecodeError:
                return exc.code, {"error": f"HTTP {exc.code}"}

    def offer(self, task: dict) -> None:
        """A task read from Kafka: queue it for a claim (a redelivered one keeps its first time)."""
        if task["task_id"] not in self._pending and task["task_id"] not in self._held:
            self._pending[task["task_id"]] = (task, time.monotonic())
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)

    def claimable(self, limit: int) -> list[dict]:
        """Claim pending tasks; return up to ``limit`` that are now leased to us (or waited too long)."""
        out: list[dict] = []
        now = time.monotonic()
        for task_id in list(self._pending):
            if len(out) >= limit:
                break
            task, since = self._pending[task_id]
            status, body = self._call("POST", f"/api/tasks/{quote(task_id, safe='')}/claim")
            if status == 200:
                del self._pending[task_id]
                self._held.add(task_id)
                out.append(task | {"lease_until": (body.get("task") or {}).get("lease_until")})
            elif status == 404 and now - since < self.claim_wait_seconds:
                continue  # the server has not stored it yet: try again on the next poll
            elif status == 404:
                del self._pending[task_id]
                out.append(task)  # the server never saw it: nobody can answer it there
            elif status == 401:
                raise LeaseRefused(body.get("error", "the review server refused the credentials"))
            else:
                del self._pending[task_id]  # someone else holds it or answered it
        return out

    def holds(self, task_id: str) -> bool:
        return task_id in self._held

    def submit(self, task_id: str, action: str, corrected_label: str | None, note: str | None, source: str) -> dict:
        body = {"action": action, "source": source}
        if corrected_label is not None:
            body["corrected_label"] = corrected_label
        if note:
            body["note"] = note
        status, resp = self._call("POST", f"/api/tasks/{quote(task_id, safe='')}/submit", body)
        if status != 200:
            raise LeaseRefused(resp.get("error", f"HTTP {status}"))
        self._held.discard(task_id)
        return resp["correction"]

    def release_all(self) -> None:
        """Give every held, unanswered task back to the queue (on close)."""
        for task_id in list(self._held):
            try:
                self._call("POST", f"/api/tasks/{quote(task_id, safe='')}/release")
            except (OSError, urllib.error.URLError):
                break  # the server is gone: the leases end on their own
            self._held.discard(task_id)
