"""The correction join: review tasks ↔ corrections, deduplicated, with TTLs.

Only predictions that reach a human can be corrected, and each of them has a
``ReviewTask`` on a review topic keyed by ``event_id`` and written to the
prediction's partition. So the join does not store every prediction: it keeps
the *tasks* (state ``pending``, keyed by event_id) and matches them with
corrections (co-partitioned, keyed by event_id) — the hot path never touches it.

* a correction whose task is known yields a ``TrainingExample`` at once;
* a correction that arrives first waits in ``waiting`` (bounded by its TTL)
  and is joined when the task arrives;
* a correction whose task never arrives within the TTL is an **orphan**
  (dead letter, error class ``orphan``), as is one for a task already expired;
* a correction id seen before in *another* record is a duplicate and is dropped
  (counted); the *same* record read again (a replay after a crash, located by
  topic/partition/offset kept with the id) re-emits its example, so whatever
  counts the examples of records it had not saved before the crash still gets it;
* the state is capped as well as TTL-bound (``max_entries`` each for pending
  tasks, waiting event_ids and seen ids; producers and reviewer tools choose
  the keys): over the cap the entries closest to expiry go first — a dropped
  task's later answers and dropped waiting corrections become orphans with a
  reason that names the cap, a dropped seen id only weakens deduplication;
* several answers for one event are all kept (one example each), and every
  example carries the ``effective_label`` defined by :func:`effective_label`.

State lives in three mappings passed in (Faust tables in the worker, dicts in
tests): ``pending`` (event_id → task + answers), ``waiting`` (event_id → list
of corrections), ``seen`` (correction_id → expiry). Expiry is driven by
:meth:`FeedbackJoin.expire` with an explicit clock, so tests are deterministic.
"""
from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

TIER_RANK = {"auto": 0, "review": 1, "escalate": 2}
#: how many event_ids whose task the cap dropped are remembered, to name the cap in their late answers' orphan reason
EVICTED_IDS_KEPT = 10_000


def effective_label(answers: list[dict]) -> str | None:
    """Which label counts when several reviewers answered the same event.

    The answer from the highest tier wins (escalation > analyst review > audit
    of the auto tier); within a tier the latest ``reviewed_at`` wins; ``unsure``
    and ``escalate`` answers carry no label and never count.

    >>> effective_label([
    ...     {"tier": "review", "action": "override", "corrected_label": "fraud", "reviewed_at": 5},
    ...     {"tier": "escalate", "action": "approve", "corrected_label": "legit", "reviewed_at": 3},
    ...     {"tier": "escalate", "action": "unsure", "corrected_label": None, "reviewed_at": 9}])
    'legit'
    """
    best = None
    for a in answers:
        if a["action"] not in ("approve", "override") or a.get("corrected_label") is None:
            continue
        rank = (TIER_RANK.get(a["tier"], 0), a["reviewed_at"])
        if best is None or rank > best[0]:
            best = (rank, a["corrected_label"])
    return best[1] if best else None


@dataclass
class JoinOutput:
    examples: list[dict] = field(default_factory=list)
    orphans: list[tuple[dict, str]] = field(default_factory=list)  # (correction, why)
    orphan_sources: list[dict | None] = field(default_factory=list)  # where each orphan was read
    duplicates: int = 0
    evicted: int = 0  # pending tasks / seen ids dropped by the caps before their TTL (waiting ones become orphans)


class FeedbackJoin:
    """Join logic over injected state mappings (see module doc)."""

    def __init__(self, pending: MutableMapping, waiting: MutableMapping, seen: MutableMapping,
                 pending_ttl_ms: int, waiting_ttl_ms: int, max_answers: int = 20, max_entries: int = 0) -> None:
        self.pending = pending
        self.waiting = waiting
        self.seen = seen
        self.pending_ttl_ms = pending_ttl_ms
        self.waiting_ttl_ms = waiting_ttl_ms
        self.max_answers = max_answers
        #: cap on pending tasks, waiting event_ids and seen correction ids, each (0: TTLs only). Checked by
        #: :meth:`expire`: over the cap, the entries closest to expiry go first, down to 90% of it.
        self.max_entries = max_entries
        #: event_ids whose task the cap dropped (bounded), so their late answers say why they are orphans
        self._evicted_ids: dict[str, None] = {}

    # ------------------------------------------------------------------ inputs
    def on_task(self, task: dict, now_ms: int) -> JoinOutput:
        out = JoinOutput()
        event_id = task["event_id"]
        entry = self.pending.get(event_id)
        if entry is None:
            entry = {"task": _slim_task(task), "answers": [], "expires_at": now_ms + self.pending_ttl_ms}
        elif TIER_RANK[task["tier"]] > TIER_RANK[entry["task"]["tier"]]:
            entry = {**entry, "task": _slim_task(task)}  # escalated later: keep the higher tier's task
        waiting = self.waiting.pop(event_id, None) if event_id in self.waiting else None
        if waiting:
            for item in waiting:
                entry = self._join(entry, item["correction"], out)
        self.pending[event_id] = entry
        return out

    def on_correction(self, correction: dict, now_ms: int, source: dict | None = None,
                      mark_seen: bool = True) -> JoinOutput:
        """``source`` (topic/partition/offset of the record) is kept for the dead letter of an orphan.

        With ``mark_seen=False`` the caller records the id with :meth:`mark_seen` once the
        outputs are on the broker (the worker does): a crash before that replays the
        correction, and the join is idempotent per ``correction_id`` (an answer already in
        the pending entry is not appended again, a correction already waiting is not queued
        twice), so the replay re-emits the same example instead of losing it.
        """
        out = JoinOutput()
        cid = correction["correction_id"]
        if cid in self.seen and not _same_record(self.seen[cid], source):
            out.duplicates += 1
            return out
        if mark_seen:
            self.mark_seen(cid, now_ms, source)
        event_id = correction["event_id"]
        entry = self.pending.get(event_id)
        if entry is not None:
            self.pending[event_id] = self._join(entry, correction, out)
        else:
            items = list(self.waiting.get(event_id) or [])
            if any(i["correction"]["correction_id"] == cid for i in items):
                return out  # a replay of a correction that is already waiting
            # an answer to a task the cap dropped waits no longer: it can never join
            expires_at = now_ms if event_id in self._evicted_ids else now_ms + self.waiting_ttl_ms
            items.append({"correction": correction, "expires_at": expires_at, "source": source})
            self.waiting[event_id] = items
        return out

    def mark_seen(self, correction_id: str, now_ms: int, source: dict | None = None) -> None:
        """Remember ``correction_id`` (bounded by the longer TTL) and the record it came in.

        Later copies in other records count as duplicates; the same record read again
        (``source`` equal) is joined again, idempotently (see :meth:`on_correction`).
        """
        expires_at = now_ms + max(self.pending_ttl_ms, self.waiting_ttl_ms)
        self.seen[correction_id] = expires_at if source is None else \
            [expires_at, source["topic"], source["partition"], source["offset"]]

    def first_labelled(self, event_id: str, correction_id: str) -> bool | None:
        """Whether ``correction_id`` is the first answer that gave ``event_id`` a label (None: not known here).

        Read from the pending entry, which the changelog keeps, so the answer is the same when
        the example is emitted again after a crash: calibration counts each event once, with
        this answer, across restarts (an in-memory set of events would start empty).
        """
        entry = self.pending.get(event_id)
        if entry is None:
            return None
        for a in entry["answers"]:
            labelled = a["action"] in ("approve", "override") and a.get("corrected_label") is not None
            if a.get("correction_id") == correction_id:
                return labelled
            if labelled:
                return False
        return None

    def expire(self, now_ms: int, sweep: bool = True) -> JoinOutput:
        """Join waiting corrections whose task is pending now; expired waiting corrections become
        orphans; with ``sweep``, also drop expired pending tasks and seen ids and apply the caps.

        A task can reach ``pending`` without passing :meth:`on_task` — restored from the changelog
        after a crash while its correction was already waiting — so each tick joins those first.
        ``waiting`` is small (answers ahead of their task) and is scanned every call; ``pending``
        and ``seen`` hold days of traffic: a worker whose state is on disk passes ``sweep=False``
        and sweeps them in chunks, less often than it ticks (``streams/join_store.sweep``; an entry
        then outlives its TTL by at most one sweep interval).
        """
        out = JoinOutput()
        for event_id in [k for k in list(self.waiting.keys()) if k in self.pending]:
            entry = self.pending[event_id]
            for item in self.waiting.pop(event_id) or []:
                entry = self._join(entry, item["correction"], out)
            self.pending[event_id] = entry
        if sweep:
            for event_id in [k for k, v in list(self.pending.items()) if v["expires_at"] <= now_ms]:
                del self.pending[event_id]
        for event_id, items in list(self.waiting.items()):
            keep = []
            for item in items:
                if item["expires_at"] <= now_ms:
                    why = (f"its review task was dropped from the join by the cap of {self.max_entries} pending "
                           "tasks (LOOPLINE_FEEDBACK_MAX_ENTRIES) before this answer came"
                           if event_id in self._evicted_ids else
                           f"no review task for this event_id arrived within {self.waiting_ttl_ms / 1000:.0f}s")
                    out.orphans.append((item["correction"], why))
                    out.orphan_sources.append(item.get("source"))
                else:
                    keep.append(item)
            if not keep:
                del self.waiting[event_id]
            elif len(keep) != len(items):
                self.waiting[event_id] = keep
        if self.max_entries:
            for event_id in self._cap(self.waiting, lambda items: min(i["expires_at"] for i in items),
                                      drop=False):
                for item in self.waiting.pop(event_id) or []:  # never silently: each becomes an orphan
                    out.orphans.append((item["correction"], f"more than {self.max_entries} event_ids had corrections "
                                        "waiting for their task (LOOPLINE_FEEDBACK_MAX_ENTRIES); the oldest "
                                        "waiting ones are dead-lettered"))
                    out.orphan_sources.append(item.get("source"))
        if not sweep:
            return out
        for cid in [k for k, v in list(self.seen.items()) if _expiry(v) <= now_ms]:
            del self.seen[cid]
        if self.max_entries:
            dropped = self._cap(self.pending, lambda v: v["expires_at"])
            self.remember_evicted(dropped)
            out.evicted = len(dropped) + len(self._cap(self.seen, _expiry))
        return out

    def remember_evicted(self, event_ids: list[str]) -> None:
        """Note tasks the cap dropped (by :meth:`expire` or a sweep of the state elsewhere), so their late
        answers' orphan reason names the cap (the newest ``EVICTED_IDS_KEPT`` are kept)."""
        for event_id in event_ids:
            self._evicted_ids[event_id] = None
        while len(self._evicted_ids) > EVICTED_IDS_KEPT:
            del self._evicted_ids[next(iter(self._evicted_ids))]

    def _cap(self, table: MutableMapping, expires_at: Callable[[Any], int], drop: bool = True) -> list[str]:
        """The keys of ``table`` closest to expiry beyond 90% of ``max_entries`` once it is over the cap
        (deleted unless ``drop`` is False)."""
        over = len(table) - self.max_entries
        if over <= 0:
            return []
        keep = int(self.max_entries * 0.9)
        order = sorted(((expires_at(v), k) for k, v in list(table.items())), key=lambda t: t[0])
        dropped = [k for _, k in order[:len(order) - keep]]
        if drop:
            for k in dropped:
                del table[k]
        return dropped

    # ---------------------------------------------------------------- internals
    def _join(self, entry: dict, correction: dict, out: JoinOutput) -> dict:
        cid = correction["correction_id"]
        if any(a.get("correction_id") == cid for a in entry["answers"]):
            answers = entry["answers"]  # a replay: the example is emitted again, the answer counted once
        else:
            answers = (entry["answers"] + [_answer(correction)])[-self.max_answers:]
        task = entry["task"]
        out.examples.append({
            "event_id": correction["event_id"], "model_name": task["model_name"],
            "model_version": task["model_version"], "correction_id": correction["correction_id"],
            "reviewer_id": correction["reviewer_id"], "action": correction["action"],
            "label": correction.get("corrected_label"), "effective_label": effective_label(answers),
            "answers_so_far": len(answers), "tier": correction["tier"], "audit": task["audit"],
            "sampling_propensity": task["sampling_propensity"], "reason": task["reason"],
            "policy_version": task["policy_version"], "task_created_at": task["created_at"],
            "reviewed_at": correction["reviewed_at"], "review_seconds": correction["review_seconds"],
            "prediction": task["prediction"],
        })
        return {**entry, "answers": answers}


def _expiry(seen_value: int | list) -> int:
    """A ``seen`` entry is ``expires_at`` or ``[expires_at, topic, partition, offset]``."""
    return seen_value if isinstance(seen_value, int) else int(seen_value[0])


def _same_record(seen_value: int | list, source: dict | None) -> bool:
    """Whether ``source`` is the record the seen correction id came in (a replay of it)."""
    return (source is not None and not isinstance(seen_value, int)
            and list(seen_value[1:]) == [source["topic"], source["partition"], source["offset"]])


def _slim_task(task: dict) -> dict:
    keys = ("event_id", "model_name", "model_version", "tier", "audit", "sampling_propensity", "reason",
            "policy_version", "created_at", "prediction")
    return {k: task[k] for k in keys}


def _answer(c: dict) -> dict:
    return {"tier": c["tier"], "action": c["action"], "corrected_label": c.get("corrected_label"),
            "reviewed_at": c["reviewed_at"], "correction_id": c["correction_id"]}
