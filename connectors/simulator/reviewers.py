"""``SimulatedReviewers``: people answering review tasks, in simulated time. Pure logic, no Kafka.

Each reviewer works one task at a time and claims at most ``capacity_per_minute``
tasks a minute: after claiming at ``t`` the next claim is no earlier than
``t + max(60 s / capacity, review time)``. Tasks wait in a queue per tier,
highest ``priority`` first, then oldest; tasks no free reviewer can take yet
stay in the backlog. Audit samples of the ``auto`` tier wait in the ``review``
queue. A reviewer's answer is drawn per task:

* ``unsure`` with probability ``unsure_rate`` (no label);
* otherwise the true label, except that it is replaced by another label with
  probability ``label_noise`` (honest mistakes) or ``adversarial_flip_rate``
  (deliberate flips), so a label is wrong with probability
  ``1 - (1 - label_noise) * (1 - adversarial_flip_rate)``;
* ``approve`` when that label equals the predicted one, else ``override``.

Review times are log-normal with the profile's mean and standard deviation.
Everything is drawn from one seeded stream: the same calls give the same answers.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

_QUEUE_OF = {"auto": "review", "review": "review", "escalate": "escalate"}


@dataclass(frozen=True)
class ReviewerProfile:
    """How one simulated reviewer behaves.

    >>> ReviewerProfile("ana", capacity_per_minute=2, latency_mean_s=20, latency_sd_s=5).min_gap_ms
    30000.0
    """

    reviewer_id: str
    capacity_per_minute: float
    latency_mean_s: float
    latency_sd_s: float = 0.0
    label_noise: float = 0.0
    adversarial_flip_rate: float = 0.0
    unsure_rate: float = 0.0
    tiers: tuple[str, ...] = ("review", "escalate")

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        if not self.reviewer_id:
            raise ValueError("reviewer_id must not be empty")
        if self.capacity_per_minute <= 0 or self.latency_mean_s <= 0 or self.latency_sd_s < 0:
            raise ValueError(f"{self.reviewer_id}: capacity and mean latency must be positive, sd >= 0")
        for name in ("label_noise", "adversarial_flip_rate", "unsure_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{self.reviewer_id}: {name} must be in [0, 1]")
        unknown = set(self.tiers) - {"review", "escalate"}
        if unknown or not self.tiers:
            raise ValueError(f"{self.reviewer_id}: tiers must be a non-empty subset of ('review', 'escalate')")

    @property
    def min_gap_ms(self) -> float:
        """Least time between two claims, from the capacity."""
        return 60_000.0 / self.capacity_per_minute


def default_reviewers(adversarial: bool = False) -> list[ReviewerProfile]:
    """A small team: three analysts, two seniors (escalations), optionally one adversary.

    >>> [(r.reviewer_id, r.tiers) for r in default_reviewers()][-2:]
    [('senior-1', ('review', 'escalate')), ('senior-2', ('escalate',))]
    >>> default_reviewers(adversarial=True)[-1].adversarial_flip_rate
    0.3
    """
    team = [
        ReviewerProfile("analyst-1", 4.0, 12.0, 6.0, label_noise=0.03, unsure_rate=0.02, tiers=("review",)),
        ReviewerProfile("analyst-2", 4.0, 15.0, 8.0, label_noise=0.05, unsure_rate=0.02, tiers=("review",)),
        ReviewerProfile("analyst-3", 3.0, 20.0, 10.0, label_noise=0.04, unsure_rate=0.03, tiers=("review",)),
        ReviewerProfile("senior-1", 2.0, 30.0, 15.0, label_noise=0.01, unsure_rate=0.01),
        ReviewerProfile("senior-2", 2.0, 35.0, 15.0, label_noise=0.01, unsure_rate=0.01, tiers=("escalate",)),
    ]
    if adversarial:
        team.append(ReviewerProfile("reviewer-x", 4.0, 8.0, 3.0, label_noise=0.02, adversarial_flip_rate=0.3,
                                    tiers=("review",)))
    return team


@dataclass(slots=True)
class _Pending:
    """What is kept of a waiting task: enough to answer it, not the whole prediction."""

    task_id: str
    event_id: str
    model_name: str
    model_version: str
    tier: str
    priority: int
    predicted: str
    labels: tuple[str, ...]
    true_label: str
    due_by: int
    arrival: float


@dataclass
class _Counts:
    assigned: int = 0
    wrong_labels: int = 0
    adversarial_flips: int = 0
    unsure: int = 0
    busy_ms: float = 0.0


@dataclass
class _Totals:
    submitted: int = 0
    dropped: int = 0
    late: int = 0
    wait_ms: float = 0.0
    per_reviewer: dict[str, _Counts] = field(default_factory=dict)


class SimulatedReviewers:
    """A team of simulated reviewers turning ``ReviewTask`` dicts into ``CorrectionEvent`` dicts.

    Parameters
    ----------
    seed
        Seed of the single random stream behind every answer and review time.
    reviewers
        The team (default :func:`default_reviewers`).
    max_backlog
        Waiting tasks at most; :meth:`submit` refuses (and counts) tasks beyond it.
    source
        ``source`` field of every correction.

    Examples
    --------
    >>> team = SimulatedReviewers(seed=1, reviewers=[
    ...     ReviewerProfile("ana", capacity_per_minute=2, latency_mean_s=10, tiers=("review",))])
    >>> def task(i):
    ...     prediction = {"event_id": f"e{i}", "model_name": "fraud", "model_version": "v1",
    ...                   "predicted_label": "legit", "class_probabilities": {"fraud": 0.4, "legit": 0.6}}
    ...     return {"task_id": f"t{i}", "event_id": f"e{i}", "model_name": "fraud", "model_version": "v1",
    ...             "tier": "review", "priority": 1, "created_at": 0, "due_by": 600_000, "prediction": prediction}
    >>> for i in range(3):
    ...     team.submit(task(i), true_label="fraud" if i == 0 else "legit")
    True
    True
    True
    >>> [(c["event_id"], c["action"], c["corrected_label"], c["reviewed_at"]) for c in team.advance(60_000)]
    [('e0', 'override', 'fraud', 10000), ('e1', 'approve', 'legit', 40000)]
    >>> team.backlog, team.in_review
    (0, 1)
    >>> [c["event_id"] for c in team.drain()]
    ['e2']
    """

    def __init__(self, seed: int = 0, reviewers: list[ReviewerProfile] | None = None, *, max_backlog: int = 50_000,
                 source: str = "simulator") -> None:
        self.seed = seed
        self.reviewers = tuple(default_reviewers() if reviewers is None else reviewers)
        if not self.reviewers:
            raise ValueError("at least one reviewer is needed")
        if len({r.reviewer_id for r in self.reviewers}) != len(self.reviewers):
            raise ValueError("reviewer ids must be unique")
        self.max_backlog = max_backlog
        self.source = source
        self._rng = np.random.default_rng(seed)
        self._free = [-math.inf] * len(self.reviewers)
        self._queues: dict[str, list] = {"review": [], "escalate": []}
        self._incoming: list = []  # (arrival, seq, _Pending) for tasks arriving after the clock
        self._outbox: list = []  # (reviewed_at, seq, correction)
        self._clock = -math.inf
        self._seq = 0
        self._waiting = 0
        self._covered = {t for r in self.reviewers for t in r.tiers}
        self._totals = _Totals(per_reviewer={r.reviewer_id: _Counts() for r in self.reviewers})
        self._lognormal = []  # log-normal (mu, sigma) per reviewer, from mean and sd
        for r in self.reviewers:
            s2 = math.log1p((r.latency_sd_s / r.latency_mean_s) ** 2)
            self._lognormal.append((math.log(r.latency_mean_s) - s2 / 2, math.sqrt(s2)))

    # ---------------------------------------------------------------- state
    @property
    def clock_ms(self) -> float:
        """Simulated time reached so far (``-inf`` before anything happened)."""
        return self._clock

    @property
    def backlog(self) -> int:
        """Tasks submitted and not yet claimed by anyone."""
        return self._waiting

    def backlog_by_tier(self) -> dict[str, int]:
        """Waiting tasks per queue (``auto`` audit samples count as ``review``)."""
        out = {tier: len(q) for tier, q in self._queues.items()}
        for _, _, rec in self._incoming:
            out[_QUEUE_OF[rec.tier]] += 1
        return out

    @property
    def in_review(self) -> int:
        """Tasks claimed whose answer is not due yet."""
        return len(self._outbox)

    def stats(self) -> dict:
        """Counters so far: submitted, dropped, late answers, mean wait, and per reviewer."""
        t = self._totals
        assigned = sum(c.assigned for c in t.per_reviewer.values())
        return {
            "submitted": t.submitted, "dropped": t.dropped, "backlog": self._waiting, "in_review": self.in_review,
            "assigned": assigned, "late": t.late,
            "mean_wait_s": (t.wait_ms / assigned / 1000.0) if assigned else 0.0,
            "reviewers": {rid: vars(c).copy() for rid, c in t.per_reviewer.items()},
        }

    # ---------------------------------------------------------------- input
    def submit(self, task: dict, true_label: str, now_ms: int | None = None) -> bool:
        """Queue one ReviewTask dict; ``true_label`` is the ground truth of its event.

        The task arrives at ``now_ms`` (default its ``created_at``), or at the
        simulator's clock if that is later. Returns ``False`` (and counts a drop)
        when the backlog is full. Raises ``ValueError`` for a tier nobody reviews.
        """
        queue = _QUEUE_OF.get(task["tier"])
        if queue is None or queue not in self._covered:
            raise ValueError(f"no simulated reviewer takes tier {task['tier']!r}")
        self._totals.submitted += 1
        if self._waiting >= self.max_backlog:
            self._totals.dropped += 1
            return False
        prediction = task["prediction"]
        predicted = prediction["predicted_label"]
        labels = set(prediction.get("class_probabilities") or ()) | {predicted, true_label}
        arrival = float(task["created_at"] if now_ms is None else now_ms)
        rec = _Pending(task["task_id"], task["event_id"], task["model_name"], task["model_version"], task["tier"],
                       int(task.get("priority", 0)), predicted, tuple(sorted(labels)), true_label,
                       int(task.get("due_by", 2 ** 62)), max(arrival, self._clock))
        self._seq += 1
        self._waiting += 1
        if rec.arrival <= self._clock:
            heapq.heappush(self._queues[queue], (-rec.priority, rec.arrival, self._seq, rec))
        else:
            heapq.heappush(self._incoming, (rec.arrival, self._seq, rec))
        return True

    # ---------------------------------------------------------------- time
    def advance(self, until_ms: float) -> list[dict]:
        """Let simulated time run to ``until_ms``; return the corrections answered by then, in time order."""
        self._run(until_ms)
        self._clock = max(self._clock, float(until_ms))
        return self._release(until_ms)

    def drain(self) -> list[dict]:
        """Answer everything submitted so far, however long it takes; return those corrections."""
        self._run(math.inf)
        out = self._release(math.inf)
        if out:
            self._clock = max(self._clock, float(out[-1]["reviewed_at"]))
        return out

    def _run(self, until: float) -> None:
        queues, reviewers, free = self._queues, self.reviewers, self._free
        while True:
            best_t, best_r = math.inf, -1
            for r, prof in enumerate(reviewers):
                if any(queues[t] for t in prof.tiers):
                    t = max(free[r], self._clock)
                    if t < best_t:
                        best_t, best_r = t, r
            if self._incoming and self._incoming[0][0] <= best_t:
                arrival = self._incoming[0][0]
                if arrival > until:
                    return
                self._clock = max(self._clock, arrival)
                while self._incoming and self._incoming[0][0] <= self._clock:
                    _, seq, rec = heapq.heappop(self._incoming)
                    heapq.heappush(queues[_QUEUE_OF[rec.tier]], (-rec.priority, rec.arrival, seq, rec))
                continue
            if best_r < 0 or best_t > until:
                return
            self._clock = best_t
            self._claim(best_r, best_t)

    def _claim(self, r: int, t: float) -> None:
        prof = self.reviewers[r]
        heads = [(self._queues[tier][0], tier) for tier in prof.tiers if self._queues[tier]]
        _, tier = min(heads, key=lambda h: h[0][:3])
        _, _, _, rec = heapq.heappop(self._queues[tier])
        self._waiting -= 1

        mu, sigma = self._lognormal[r]
        z = self._rng.standard_normal()
        u = self._rng.random(4).tolist()
        latency_ms = 1000.0 * (math.exp(mu + sigma * z) if sigma > 0 else prof.latency_mean_s)
        self._free[r] = t + max(prof.min_gap_ms, latency_ms)

        counts = self._totals.per_reviewer[prof.reviewer_id]
        counts.assigned += 1
        counts.busy_ms += latency_ms
        self._totals.wait_ms += t - rec.arrival
        if u[0] < prof.unsure_rate:
            action, label = "unsure", None
            counts.unsure += 1
        else:
            flipped = u[1] < prof.adversarial_flip_rate
            wrong = flipped or u[2] < prof.label_noise
            others = [lab for lab in rec.labels if lab != rec.true_label]
            label = others[int(u[3] * len(others))] if wrong and others else rec.true_label
            action = "approve" if label == rec.predicted else "override"
            counts.wrong_labels += label != rec.true_label
            counts.adversarial_flips += flipped and label != rec.true_label
        reviewed_at = int(t + latency_ms)
        if reviewed_at > rec.due_by:
            self._totals.late += 1
        correction = {
            "correction_id": f"{rec.task_id}:{prof.reviewer_id}",
            "event_id": rec.event_id,
            "model_name": rec.model_name,
            "model_version": rec.model_version,
            "reviewer_id": prof.reviewer_id,
            "action": action,
            "corrected_label": label,
            "tier": rec.tier,
            "reviewed_at": reviewed_at,
            "review_seconds": round(latency_ms / 1000.0, 3),
            "note": None,
            "source": self.source,
        }
        self._seq += 1
        heapq.heappush(self._outbox, (reviewed_at, self._seq, correction))

    def _release(self, until: float) -> list[dict]:
        out = []
        while self._outbox and self._outbox[0][0] <= until:
            out.append(heapq.heappop(self._outbox)[2])
        return out
