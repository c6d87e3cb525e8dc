"""The review rules, independent of HTTP: who sees what, claiming, answering, masking (metrics: ``metrics``).

Decisions documented here (the HTML pages and the JSON API share them):

* Queues: ``analyst`` holds tier ``review`` tasks, ``escalation`` tier ``escalate``. Analysts
  work the analyst queue only; seniors work both (an analyst touching an escalation task: 403).
* Answers (form/API action -> CorrectionEvent action): ``approve`` -> approve with the predicted
  label; ``correct`` (alias ``override``) -> override with a label from the model's label set
  (labels seen so far for the model plus the predicted label); ``unsure`` -> unsure, no label;
  ``escalate`` -> an ``escalate`` CorrectionEvent (it never counts as a label downstream) AND an
  escalation copy of the task (task_id ``<event_id>:escalate``) enters the escalation queue of
  this server. Escalating an escalation task is a 400.
* Every answer needs a live lease held by the answering reviewer; a task is answered once.
  Anything refused publishes nothing.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import math
import os
import re
import time
from typing import TYPE_CHECKING

from loopline.connectors.review.auth import ROLES, hash_password, verify_password
from loopline.connectors.review.contract import Contract, Contracts
from loopline.connectors.review.feed import correction_for, stable_correction_id
from loopline.connectors.review.metrics import ReviewMetrics
from loopline.connectors.review.settings import ANALYST, ESCALATION, QUEUE_OF_TIER, QUEUES, TIER_OF_QUEUE, ReviewSettings
from loopline.connectors.review.store import LeaseError, QueueFilter, ReviewStore, TaskNotFound
from loopline.connectors.review.throttle import LoginThrottle
from loopline.processors.errors import LooplineError

if TYPE_CHECKING:
    from loopline.connectors.review.policy_marks import PolicyMarks

log = logging.getLogger("loopline.review")

MASK = "•••"
ACTIONS = {"approve": "approve", "correct": "override", "override": "override", "unsure": "unsure",
           "escalate": "escalate"}
_MASKED_MAPS = ("features_numeric", "features_categorical", "context", "risk")


def _feature_key(name: str) -> str:
    """``k`` of a contribution named ``k`` or ``k=v`` (a one-hot categorical)."""
    return name.split("=", 1)[0]


def mask_personal(view: dict, masked: frozenset) -> dict:
    """Mask ``masked`` keys everywhere a task view shows feature values, in place; returns ``view``.

    The one masking rule for every channel (HTML page, JSON API, terminal reviewer):
    feature/context/risk maps show ``•••``; model insights drop contributions of a
    masked ``k`` or ``k=v`` (a number per personal feature would still hint at its
    value); drift text shows ``k=•••`` for any ``k=v`` of a masked key.
    """
    if not masked:
        return view
    pred = view.get("prediction") or {}
    for m in _MASKED_MAPS:
        values = pred.get(m) or {}
        for k in values:
            if k in masked:
                values[k] = MASK
    ins = view.get("insights")
    if isinstance(ins, dict):
        if ins.get("top_contributions"):
            ins["top_contributions"] = [c for c in ins["top_contributions"]
                                        if _feature_key(str(c.get("feature", ""))) not in masked]
        status = ins.get("drift_status")
        if isinstance(status, str) and "=" in status:
            ins["drift_status"] = _KV.sub(lambda mt: f"{mt.group(1)}={MASK}" if mt.group(1) in masked else mt.group(0),
                                          status)
    return view


_KV = re.compile(r"([\w.\-]+)=([^\s,()]+)")


class ReviewError(LooplineError):
    """A refused reviewer request; ``status`` is the HTTP status, the message one sentence."""

    error_class = "review"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoginThrottled(ReviewError):
    """Too many failed logins for the account or the address: 429 with ``retry_after`` whole seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(429, f"Too many failed logins: try again in {self.retry_after} seconds.")


def add_reviewer(store: ReviewStore, name: str, role: str, pii_clearance: bool, password: str,
                 min_length: int = 1) -> None:
    """Save a reviewer; refuses a password shorter than ``min_length`` characters."""
    if role not in ROLES:
        raise ReviewError(400, f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or not password:
        raise ReviewError(400, "a reviewer needs a name and a non-empty password")
    if len(password) < min_length:
        raise ReviewError(400, f"the password has {len(password)} characters; at least {min_length} are needed "
                               f"(LOOPLINE_REVIEW_MIN_PASSWORD_LENGTH)")
    salt, digest = hash_password(password)
    store.put_reviewer(name, role, pii_clearance, salt, digest)


class ReviewService:
    """Everything the web app and the API do, minus HTTP. ``publisher`` has ``publish(dict)``."""

    def __init__(self, settings: ReviewSettings, store: ReviewStore, publisher, metrics: ReviewMetrics) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.policy_marks: PolicyMarks | None = None  # set by build_app when it tails the policy events
        self._auth_cache: dict[tuple[str, bytes], float] = {}
        self.accounts = LoginThrottle(settings.login_max_failures, settings.login_window_seconds,
                                      settings.login_table_max, settings.login_lockout_seconds)
        self.addresses = LoginThrottle(settings.login_max_failures_per_address, settings.login_window_seconds,
                                       settings.login_table_max, settings.login_lockout_seconds)
        self.contracts = Contracts(settings.policy_file)

    # ------------------------------------------------------------ who
    def authenticate(self, name: str, password: str) -> dict | None:
        rev = self.store.reviewer(name)
        if rev is None:
            return None
        key = (name, hashlib.sha256(rev["hash"] + password.encode()).digest())
        now = time.monotonic()
        if self._auth_cache.get(key, 0) > now:
            return rev
        if not verify_password(password, rev["salt"], rev["hash"]):
            return None
        if len(self._auth_cache) >= 10_000:  # bounded: drop expired entries, then everything if still full
            self._auth_cache = {k: t for k, t in self._auth_cache.items() if t > now}
            if len(self._auth_cache) >= 10_000:
                self._auth_cache.clear()
        self._auth_cache[key] = now + 60
        return rev

    def login(self, name: str, password: str, address: str, method: str = "form",
              now: float | None = None) -> dict | None:
        """:meth:`authenticate` behind the failed-login throttle (``throttle`` module rules).

        Raises :class:`LoginThrottled` while the account or the address is locked (the password
        is not checked); returns the reviewer, or None for a wrong name or password (counted).
        """
        now = time.monotonic() if now is None else now
        account = name[:256]
        wait = max(self.accounts.retry_after(account, now), self.addresses.retry_after(address, now))
        if wait > 0:
            self.metrics.logins.labels(method, "throttled").inc()
            raise LoginThrottled(wait)
        rev = self.authenticate(name, password)
        if rev is None:
            self.metrics.logins.labels(method, "failure").inc()
            for scope, table, key in (("account", self.accounts, account), ("address", self.addresses, address)):
                if table.failed(key, now):
                    self.metrics.lockouts.labels(scope).inc()
                    log.warning("review login: an %s was locked for %.0f s after %d failed logins",
                                scope, table.lockout_seconds, table.max_failures)
            return None
        self.accounts.succeeded(account)
        self.metrics.logins.labels(method, "success").inc()
        return rev

    def reviewer(self, name: str) -> dict | None:
        return self.store.reviewer(name)

    @staticmethod
    def queues_for(reviewer: dict) -> tuple[str, ...]:
        return QUEUES if reviewer["role"] == "senior" else (ANALYST,)

    def require_queue(self, reviewer: dict, queue: str) -> None:
        if queue not in QUEUES:
            raise ReviewError(400, f"unknown queue {queue!r}: choose analyst or escalation")
        if queue not in self.queues_for(reviewer):
            raise ReviewError(403, "escalation tasks are for senior reviewers only")

    # ------------------------------------------------------------ what
    def view(self, task: dict, reviewer: dict) -> dict:
        """A copy safe to show ``reviewer``: personal features masked without pii_clearance."""
        out = copy.deepcopy({k: v for k, v in task.items() if k != "_lease"})
        out["queue"] = QUEUE_OF_TIER[task["tier"]]
        if "_lease" in task:
            out["lease_until"] = task["_lease"]["lease_until"]
            out["similar_answers"] = self.store.similar_answers(task)  # only for the task being worked on
        if not reviewer["pii_clearance"]:
            mask_personal(out, self.personal_data(task.get("model_name", "")))
        return out

    def personal_data(self, model: str) -> frozenset:
        """Keys masked for reviewers without clearance: ``LOOPLINE_REVIEW_MASKED_FEATURES``, plus the
        ``personal_data`` of the policy file (re-read when it changes), plus that of the policy in force
        in the workers (learned from the policy events topic, however the policy was applied)."""
        marks = frozenset(self.settings.masked_features) | self._file_marks(model)
        if self.policy_marks is not None:
            marks = marks | self.policy_marks.for_model(model)
        return marks

    def _file_marks(self, model: str) -> frozenset:
        path = self.settings.policy_file
        if not path:
            return frozenset()
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != getattr(self, "_policy_mtime", object()):
            self._policy_mtime = mtime
            try:
                from loopline.processors.policy.policy import Policy

                self._policy = Policy.from_file(path)
            except Exception:  # keep the last valid policy's marks; the worker reports the bad file
                log.warning("review server: cannot read personal-data marks from %s", path, exc_info=True)
        policy = getattr(self, "_policy", None)
        return policy.model(model).personal_data if policy is not None else frozenset()

    def queue_stats(self) -> dict:
        return self.store.queue_stats(time.time())

    def waiting(self, reviewer: dict, queue: str, limit: int | None = None, offset: int = 0,
                filters: QueueFilter | None = None) -> list[dict]:
        self.require_queue(reviewer, queue)
        return [self.view(t, reviewer) for t in
                self.store.waiting(queue, time.time(), limit or self.settings.page_size, offset, filters)]

    def count_waiting(self, reviewer: dict, queue: str, filters: QueueFilter | None = None) -> int:
        self.require_queue(reviewer, queue)
        return self.store.count_waiting(queue, time.time(), filters)

    def claim_next(self, reviewer: dict, queue: str, filters: QueueFilter | None = None) -> dict | None:
        """Lease the most urgent waiting task of ``queue`` to ``reviewer`` (None when none waits)."""
        self.require_queue(reviewer, queue)
        return self.store.claim_next(queue, reviewer["name"], time.time(), filters)

    def release(self, task_id: str, reviewer: dict) -> bool:
        """Give a leased task back to its queue at once (the reviewer quit or skipped it)."""
        task = self.task(task_id)
        self.require_queue(reviewer, QUEUE_OF_TIER[task["tier"]])
        return self.store.release(task_id, reviewer["name"])

    def counters(self, reviewer: dict, now: float | None = None) -> dict:
        """The reviewer's counters: answered since local midnight, agreement with others and on audits."""
        now = time.time() if now is None else now
        lt = time.localtime(now)
        midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
        return self.store.reviewer_counters(reviewer["name"], midnight)

    def contract(self, task: dict) -> Contract:
        return self.contracts.of(task["model_name"])

    def task(self, task_id: str) -> dict:
        try:
            return self.store.get(task_id)
        except TaskNotFound:
            why = (" (tasks that were waiting when the Kafka cluster was replaced were retired: their predictions "
                   "and join state were lost with the old broker)" if self.store.counter("dropped_broker_gone") else "")
            raise ReviewError(404, f"no task {task_id!r} is waiting here{why}") from None

    def labels(self, task: dict) -> list[str]:
        """The labels a correction may choose: the model's declared set, or (undeclared) the labels
        seen for the model, at most ``max_seen_labels``, plus the predicted one."""
        declared = self.contract(task).labels
        if declared:
            return list(declared)
        predicted = task["prediction"]["predicted_label"]
        seen = [lb for lb in self.store.labels(task["model_name"]) if lb != predicted]
        return sorted(seen[: max(0, self.settings.max_seen_labels - 1)] + [predicted])

    def claim(self, task_id: str, reviewer: dict) -> dict:
        task = self.task(task_id)
        self.require_queue(reviewer, QUEUE_OF_TIER[task["tier"]])
        try:
            return self.store.claim(task_id, reviewer["name"], time.time())
        except LeaseError as exc:
            raise ReviewError(409, f"cannot claim this task: {exc}.") from None

    def leased_task(self, task_id: str, reviewer: dict) -> dict:
        task = self.task(task_id)
        self.require_queue(reviewer, QUEUE_OF_TIER[task["tier"]])
        try:
            return self.store.check_lease(task_id, reviewer["name"], time.time())
        except LeaseError as exc:
            raise ReviewError(409, f"{str(exc).capitalize()}.") from None

    async def submit(self, task_id: str, reviewer: dict, action: object, corrected_label: object = None,
                     note: object = None, source: str = "web") -> dict:
        """Check everything, publish, then mark answered; returns the published CorrectionEvent.

        Publishing comes first so a crash between the two steps never loses an answer: the
        task stays open and a resubmit under the same lease publishes the same
        ``correction_id`` again (:func:`stable_correction_id`), which the feedback join drops
        as a duplicate. A failed publish answers 503 and leaves the task open.
        """
        task = self.task(task_id)
        queue = QUEUE_OF_TIER[task["tier"]]
        self.require_queue(reviewer, queue)
        if not isinstance(action, str) or action not in ACTIONS:
            raise ReviewError(400, "action must be one of approve, correct, unsure, escalate")
        if note is not None and not isinstance(note, str):
            raise ReviewError(400, "note must be a string")
        wire = ACTIONS[action]
        predicted = task["prediction"]["predicted_label"]
        label: str | None = None
        if wire == "approve":
            label = predicted
        elif wire == "override":
            allowed = self.labels(task)
            if not isinstance(corrected_label, str) or corrected_label not in allowed:
                raise ReviewError(400, f"corrected_label must be one of {', '.join(allowed)}")
            if corrected_label == predicted:
                raise ReviewError(400, f"the model already predicted {predicted!r}: approve it instead of "
                                       "correcting it to the same label")
            label = corrected_label
        elif wire == "escalate" and queue == ESCALATION:
            raise ReviewError(400, "this task is in the escalation queue already; answer it instead")
        now = time.time()
        try:
            task = self.store.begin_answer(task_id, reviewer["name"], now)
        except LeaseError as exc:
            raise ReviewError(409, f"Nothing was published: {exc}.") from None
        claimed_at = task["_lease"]["claimed_at"]
        review_seconds = now - (claimed_at or now)
        correction = correction_for(task, reviewer["name"], wire, label, (note or "").strip()[:2000] or None,
                                    review_seconds, source, now,
                                    correction_id=stable_correction_id(task_id, reviewer["name"], claimed_at))
        published = False
        try:  # publish first, then record the task answered: a crash in between leaves it open
            await asyncio.get_running_loop().run_in_executor(None, self.publisher.publish, correction)
            published = True
        except Exception as exc:
            raise ReviewError(503, f"the answer could not be published, try again ({exc})") from None
        finally:
            self.store.end_answer(task_id, published)
        why = note if wire == "escalate" else None  # the escalation copy's note, when there is a copy
        second_opinion = wire != "escalate" and self.needs_second_opinion(task, queue, wire)
        if second_opinion:
            why = (f"second opinion: {reviewer['name']} corrected {predicted!r} at confidence "
                   f"{float(task['prediction']['confidence']):.2f} to {label!r}")
            self.metrics.second_opinions.inc()
        if wire == "escalate" or second_opinion:
            self.store.escalate_copy(task, now, escalation_context(task, reviewer["name"], why, now),
                                     int((now + self.settings.escalation_sla_seconds) * 1000),
                                     self.settings.escalation_priority)
        self.store.record_answer(task, wire, label, now)
        self.store.record_reviewer_answer(reviewer["name"], task, wire, label, now)
        self.metrics.reviews.labels(TIER_OF_QUEUE[queue], wire).inc()
        self.metrics.latency.labels(TIER_OF_QUEUE[queue]).observe(review_seconds)
        return correction

    def needs_second_opinion(self, task: dict, queue: str, wire: str) -> bool:
        """An analyst's correction of a confident prediction goes to a senior too (``confirm_overrides_above``).

        A reviewer who is wrong 3% of the time, answering events the model had right 99% of the time,
        adds more errors than they remove; a second opinion on the few corrections of confident
        predictions keeps the served false positives down (docs/loop.md, bench_loop ``--confirm-above``).
        Audits are not confirmed: their outcomes estimate the auto tier's error with the reviewers'
        known noise, and a confirmation would make that sample depend on its own answers.
        """
        above = self.settings.confirm_overrides_above
        return (above is not None and wire == "override" and queue == ANALYST and not task.get("audit")
                and float(task["prediction"].get("confidence", 0.0)) >= above)


def escalation_context(task: dict, reviewer: str, note: object, now: float) -> dict:
    """What travels with an analyst's escalation: who, when (epoch ms), why, and the original routing."""
    return {"by": reviewer, "at": int(now * 1000), "note": (note or "").strip()[:2000] if isinstance(note, str) else "",
            "original_reason": task.get("reason", ""), "original_priority": int(task.get("priority", 0)),
            "original_due_by": int(task.get("due_by", 0))}
