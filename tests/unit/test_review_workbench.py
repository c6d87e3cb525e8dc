"""The review workbench rules in memory: declared labels, no same-label corrections, urgency order,
escalations that keep their context, release, per-reviewer counters.

The Kafka publisher is replaced by a list here (these are the service's rules); the same flows run
against the real broker and Chromium in tests/integration/test_review_shift.py.
"""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from loopline.connectors.review.metrics import ReviewMetrics
from loopline.connectors.review.service import ReviewError, ReviewService, add_reviewer
from loopline.connectors.review.settings import ReviewSettings
from loopline.connectors.review.store import QueueFilter, ReviewStore

POLICY = '''version = "p1"
[models.fraud]
labels = ["fraud", "legit", "friendly_fraud"]
positive_label = "fraud"
guidelines = "Fraud: the card holder did not make the payment."
'''


class ListPublisher:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def publish(self, correction: dict) -> None:
        self.sent.append(correction)


def task(n: int, model: str = "fraud", label: str = "legit", tier: str = "review", priority: int = 150,
         created_ms: int | None = None, due_in_ms: int = 4 * 3_600_000, audit: bool = False) -> dict:
    now = int(time.time() * 1000) if created_ms is None else created_ms
    return {"task_id": f"ev-{n}:{tier}", "event_id": f"ev-{n}", "model_name": model, "model_version": "1",
            "tier": tier, "priority": priority, "reason": "confidence<0.9", "policy_version": "p1", "audit": audit,
            "sampling_propensity": 1.0, "created_at": now, "due_by": now + due_in_ms,
            "prediction": {"event_id": f"ev-{n}", "predicted_label": label, "confidence": 0.7, "emitted_at": now,
                           "features_numeric": {"amount": 10720.0}, "class_probabilities": {label: 0.7}},
            "insights": {"confidence": 0.7, "rule": "confidence<0.9", "override_risk": None, "drift_status": None,
                         "online_prediction": None, "top_contributions": []}}


@pytest.fixture
def svc(tmp_path):
    from prometheus_client import CollectorRegistry

    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    settings = ReviewSettings(policy_file=path, max_seen_labels=3)
    store = ReviewStore(":memory:", audit_sla_seconds=settings.audit_sla_seconds, audit_priority=settings.audit_priority)
    service = ReviewService(settings, store, ListPublisher(), ReviewMetrics(CollectorRegistry(), store))
    for name, role in (("ana", "analyst"), ("sam", "senior")):
        add_reviewer(store, name, role, False, f"{name}-pw")
    return service


def who(svc, name):
    return svc.reviewer(name)


def submit(svc, task_id, name, action, label=None, note=None):
    return asyncio.run(svc.submit(task_id, who(svc, name), action, label, note))


def test_declared_labels_are_offered_and_same_label_correction_is_refused(svc):
    svc.store.add_task(task(1, label="legit"), time.time())
    svc.store.add_task(task(2, label="fraud"), time.time())  # no junk label can enter the offer
    t = svc.claim("ev-1:review", who(svc, "ana"))
    assert svc.labels(t) == ["fraud", "legit", "friendly_fraud"]
    assert svc.contract(t).guidelines.startswith("Fraud:")
    with pytest.raises(ReviewError) as info:
        submit(svc, "ev-1:review", "ana", "correct", "legit")
    assert info.value.status == 400 and "approve it instead" in str(info.value)
    with pytest.raises(ReviewError) as info:
        submit(svc, "ev-1:review", "ana", "correct", "a")
    assert info.value.status == 400
    assert svc.publisher.sent == []  # refused answers publish nothing
    got = submit(svc, "ev-1:review", "ana", "correct", "friendly_fraud")
    assert (got["action"], got["corrected_label"]) == ("override", "friendly_fraud")


def test_undeclared_model_offers_a_bounded_set_of_seen_labels(svc):
    now = time.time()
    for i, lb in enumerate(["a", "b", "c", "d", "e"]):
        svc.store.add_task(task(10 + i, model="churn", label=lb), now)
    t = svc.claim("ev-14:review", who(svc, "ana"))
    offered = svc.labels(t)
    assert len(offered) == 3 and "e" in offered  # max_seen_labels=3, the predicted one always included
    assert not svc.contract(t).declared


def test_escalation_keeps_its_context_and_sorts_by_its_sla(svc):
    now = time.time()
    for i in range(3):  # native escalations, due in 60 min at priority 200..202
        svc.store.add_task(task(20 + i, tier="escalate", priority=200 + i, due_in_ms=3_600_000), now)
    svc.store.add_task(task(1), now)
    svc.claim("ev-1:review", who(svc, "ana"))
    submit(svc, "ev-1:review", "ana", "escalate", note="need senior eyes")
    first = svc.waiting(who(svc, "sam"), "escalation")[0]
    assert first["task_id"] == "ev-1:escalate"
    esc = first["escalation"]
    assert (esc["by"], esc["note"], esc["original_reason"], esc["original_priority"]) == (
        "ana", "need senior eyes", "confidence<0.9", 150)
    assert first["priority"] == svc.settings.escalation_priority
    assert abs(first["due_by"] - (now + svc.settings.escalation_sla_seconds) * 1000) < 5000
    assert first["notes"][0]["text"] == "need senior eyes"
    with pytest.raises(ReviewError):
        svc.claim("ev-1:escalate", who(svc, "ana"))  # analysts do not answer escalations


def confident(n: int, confidence: float, audit: bool = False) -> dict:
    t = task(n, audit=audit)
    t["prediction"]["confidence"] = t["insights"]["confidence"] = confidence
    return t


def test_a_correction_of_a_confident_prediction_gets_a_seniors_second_opinion(svc):
    import dataclasses

    from loopline.processors.feedback.join import effective_label

    plain = svc.settings
    svc.settings = dataclasses.replace(plain, confirm_overrides_above=0.9)
    now = time.time()
    svc.store.add_tasks([confident(1, 0.97), confident(2, 0.97), confident(3, 0.7), confident(4, 0.97, audit=True)],
                        now)
    ana = who(svc, "ana")
    for n in (1, 2, 3, 4):
        svc.claim(f"ev-{n}:review", ana)
    first = submit(svc, "ev-1:review", "ana", "correct", "fraud")  # confident, corrected: a senior confirms
    submit(svc, "ev-2:review", "ana", "approve")  # approved: nothing to confirm
    submit(svc, "ev-3:review", "ana", "correct", "fraud")  # the model was unsure: the analyst decides
    submit(svc, "ev-4:review", "ana", "correct", "fraud")  # an audit: its outcome estimates the noise-aware error
    waiting = svc.waiting(who(svc, "sam"), "escalation")
    assert [t["task_id"] for t in waiting] == ["ev-1:escalate"]
    esc = waiting[0]["escalation"]
    assert esc["by"] == "ana" and "second opinion" in esc["note"] and "0.97" in esc["note"]
    assert svc.metrics.second_opinions._value.get() == 1
    svc.claim("ev-1:escalate", who(svc, "sam"))
    second = submit(svc, "ev-1:escalate", "sam", "approve")  # the senior says the model was right
    assert second["tier"] == "escalate"
    assert effective_label([first, second]) == "legit"  # what is served and learned: the senior's answer
    svc.settings = plain  # off (the default): no copy
    svc.store.add_task(confident(5, 0.99), now)
    svc.claim("ev-5:review", ana)
    submit(svc, "ev-5:review", "ana", "correct", "fraud")
    assert [t["task_id"] for t in svc.waiting(who(svc, "sam"), "escalation")] == []


def test_paging_filters_search_and_counts(svc):
    now = time.time()
    svc.store.add_tasks([task(i, priority=100 + i % 7, audit=i % 10 == 0) for i in range(120)], now)
    ana = who(svc, "ana")
    assert svc.count_waiting(ana, "analyst") == 120
    pages = [svc.waiting(ana, "analyst", 50, off) for off in (0, 50, 100)]
    assert [len(p) for p in pages] == [50, 50, 20]
    ids = [t["task_id"] for p in pages for t in p]
    assert len(set(ids)) == 120
    assert svc.count_waiting(ana, "analyst", QueueFilter(kind="audit")) == 12
    assert [t["event_id"] for t in svc.waiting(ana, "analyst", filters=QueueFilter(event_id="ev-77"))] == ["ev-77"]
    assert svc.count_waiting(ana, "analyst", QueueFilter(model="churn")) == 0


def test_release_gives_the_task_back_at_once(svc):
    svc.store.add_task(task(1), time.time())
    svc.claim("ev-1:review", who(svc, "ana"))
    assert svc.count_waiting(who(svc, "ana"), "analyst") == 0
    assert svc.release("ev-1:review", who(svc, "ana"))
    assert svc.count_waiting(who(svc, "ana"), "analyst") == 1
    assert not svc.release("ev-1:review", who(svc, "sam"))  # nothing to release without an own lease


def test_counters_answered_today_and_agreement(svc):
    now = time.time()
    svc.store.add_tasks([task(1), task(2, audit=True), task(3)], now)
    for tid, label in (("ev-1:review", "fraud"), ("ev-2:review", "fraud"), ("ev-3:review", None)):
        svc.claim(tid, who(svc, "ana"))
        if label:
            submit(svc, tid, "ana", "correct", label)
        else:
            submit(svc, tid, "ana", "escalate", note="?")
    svc.claim("ev-3:escalate", who(svc, "sam"))
    submit(svc, "ev-3:escalate", "sam", "approve")
    c = svc.counters(who(svc, "ana"))
    assert c["answered"] == 3 and c["compared_others"] == 0  # an escalation carries no label to compare
    # sam reviews ev-1 and ev-2 again (a double review): agrees on ev-1, not on the audit ev-2
    svc.store.record_reviewer_answer("sam", task(1), "override", "fraud", now)
    svc.store.record_reviewer_answer("sam", task(2, audit=True), "approve", "legit", now)
    c = svc.counters(who(svc, "ana"))
    assert (c["compared_others"], c["agree_others"], c["compared_audits"], c["agree_audits"]) == (2, 1, 1, 0)


def test_audit_tasks_are_served_within_their_due_time_at_the_demo_answer_rate():
    """A simulated hour: tasks arrive at the demo's mix (about 5% audits, the rest routed reviews
    with priority 100..200) and reviewers answer 8% of the arrivals, most urgent first. Every audit
    task must be claimed before its own due time; under the old priority-first order none is."""
    rnd = random.Random(3)
    store = ReviewStore(":memory:", audit_sla_seconds=1800, audit_priority=200)
    old = ReviewStore(":memory:")  # no audit due time; ordered as before only by urgency of raw priority
    t0 = 1_800_000_000.0
    arrivals_per_min, answers_per_min = 100, 8
    audits, late, old_served_audits, n = {}, [], 0, 0
    for minute in range(60):
        now = t0 + 60 * minute
        batch = []
        for _ in range(arrivals_per_min):
            audit = rnd.random() < 0.05
            t = task(n, priority=0 if audit else 100 + rnd.randrange(100), created_ms=int(now * 1000),
                     due_in_ms=4 * 3_600_000, audit=audit)
            batch.append(t)
            if audit:
                audits[t["task_id"]] = None
            n += 1
        store.add_tasks(batch, now)
        old.add_tasks(batch, now)
        for k in range(answers_per_min):
            at = now + 60 * (k + 1) / answers_per_min
            got = store.claim_next("analyst", "ana", at)
            store.complete(got["task_id"], "ana", at)
            if got.get("audit"):
                audits[got["task_id"]] = at
                if at * 1000 > got["due_by"]:
                    late.append(got["task_id"])
            prior = old._db.execute("SELECT task_id, body FROM tasks WHERE done = 0 AND leased_by IS NULL "
                                    "ORDER BY priority DESC, due_by ASC LIMIT 1").fetchone()
            old._db.execute("UPDATE tasks SET done = 1 WHERE task_id = ?", (prior[0],))
            old_served_audits += '"audit": true' in prior[1]
    served = {k: v for k, v in audits.items() if v is not None}
    waiting_audits = [k for k, v in audits.items() if v is None]
    assert len(audits) > 200 and not late
    # every audit that arrived more than one audit SLA before the end was served
    assert all(int(k.split(":")[0][3:]) >= n - 30 * arrivals_per_min for k in waiting_audits)
    assert len(served) >= 0.9 * len(audits) - 0.05 * 30 * arrivals_per_min
    assert old_served_audits == 0  # the priority-first order starves audits
    print(f"audits: {len(served)} of {len(audits)} served, all within due; old order served {old_served_audits}")


def test_a_store_from_the_previous_version_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY, queue TEXT NOT NULL, priority INTEGER NOT NULL, "
               "due_by INTEGER NOT NULL, created_at INTEGER NOT NULL, model_name TEXT NOT NULL, body TEXT NOT NULL, "
               "leased_by TEXT, lease_until REAL, claimed_at REAL, done INTEGER NOT NULL DEFAULT 0)")
    import json

    for t in (task(1, priority=100), task(2, priority=190, audit=True)):
        db.execute("INSERT INTO tasks (task_id, queue, priority, due_by, created_at, model_name, body) VALUES "
                   "(?, 'analyst', ?, ?, ?, 'fraud', ?)", (t["task_id"], t["priority"], t["due_by"], t["created_at"],
                                                          json.dumps(t)))
    db.commit()
    db.close()
    store = ReviewStore(path)
    now = time.time()
    assert [t["task_id"] for t in store.waiting("analyst", now)] == ["ev-2:review", "ev-1:review"]
    assert store.count_waiting("analyst", now, QueueFilter(kind="audit", reason="confidence<0.9")) == 1


def test_a_task_retired_with_its_broker_is_answered_with_the_reason(svc):
    svc.store.broker_cluster("loopline-old")
    svc.store.add_task(task(1), time.time())
    with pytest.raises(ReviewError) as before:
        svc.task("nope")
    assert "Kafka cluster" not in str(before.value)
    assert svc.store.broker_cluster("loopline-new") == 1
    with pytest.raises(ReviewError) as info:
        svc.task(task(1)["task_id"])
    assert info.value.status == 404 and "Kafka cluster was replaced" in str(info.value)
