"""ReviewStore without a broker: dedupe, ordering, leases, bounds, reviewers."""
from __future__ import annotations

import pytest

from loopline.connectors.review.auth import SessionSigner, hash_password, verify_password
from loopline.connectors.review.store import LeaseError, ReviewStore, TaskNotFound

NOW = 1_800_000_000.0


def task(n: int, tier: str = "review", priority: int = 1, due_by: int | None = None, created_at: float = NOW,
         label: str = "legit") -> dict:
    return {"task_id": f"e{n}:{tier}", "event_id": f"e{n}", "model_name": "fraud", "model_version": "v1",
            "tier": tier, "priority": priority, "due_by": due_by if due_by is not None else int(NOW * 1000) + n,
            "created_at": int(created_at * 1000), "reason": "low_confidence",
            "prediction": {"predicted_label": label, "class_probabilities": {label: 0.7, "fraud": 0.3}},
            "insights": {}}


@pytest.fixture
def store(tmp_path):
    s = ReviewStore(tmp_path / "review.sqlite3", lease_seconds=10, task_ttl_seconds=3600, max_tasks=5)
    yield s
    s.close()


def ids(tasks):
    return [t["task_id"] for t in tasks]


def test_dedupes_by_task_id(store):
    assert store.add_task(task(1), NOW)
    assert not store.add_task(task(1), NOW)
    assert len(store.waiting("analyst", NOW)) == 1


def test_queues_split_by_tier_and_order_by_priority_then_due_by(store):
    store.add_task(task(1, priority=1, due_by=100), NOW)
    store.add_task(task(2, priority=5, due_by=300), NOW)
    store.add_task(task(3, priority=5, due_by=200), NOW)
    store.add_task(task(4, tier="escalate"), NOW)
    assert ids(store.waiting("analyst", NOW)) == ["e3:review", "e2:review", "e1:review"]
    assert ids(store.waiting("escalation", NOW)) == ["e4:escalate"]


def test_claim_hides_task_and_expired_lease_returns_it(store):
    store.add_task(task(1), NOW)
    store.claim("e1:review", "ana", NOW)
    assert store.waiting("analyst", NOW + 1) == []
    with pytest.raises(LeaseError):
        store.claim("e1:review", "bob", NOW + 1)
    assert ids(store.waiting("analyst", NOW + 11)) == ["e1:review"]
    assert store.counter("lease_expiries") == 1
    with pytest.raises(LeaseError):
        store.complete("e1:review", "ana", NOW + 12)  # lost the lease
    store.claim("e1:review", "bob", NOW + 12)
    store.complete("e1:review", "bob", NOW + 13)
    with pytest.raises(LeaseError):
        store.complete("e1:review", "bob", NOW + 14)  # answered once only


def test_own_claim_renews_and_keeps_claim_time(store):
    store.add_task(task(1), NOW)
    store.claim("e1:review", "ana", NOW)
    t = store.claim("e1:review", "ana", NOW + 5)
    assert t["_lease"]["claimed_at"] == NOW and t["_lease"]["lease_until"] == NOW + 15


def test_unknown_task(store):
    with pytest.raises(TaskNotFound):
        store.claim("nope", "ana", NOW)


def test_ttl_bound_drops_old_tasks_with_a_counter(store):
    assert not store.add_task(task(1, created_at=NOW - 7200), NOW)
    store.add_task(task(2, created_at=NOW - 3000), NOW)
    store.add_task(task(3), NOW + 1000)  # now task 2 is older than the TTL
    assert ids(store.waiting("analyst", NOW + 1000)) == ["e3:review"]
    assert store.counter("dropped_ttl") == 2


def test_max_count_drops_least_urgent_with_a_counter(store):
    for n in range(7):
        store.add_task(task(n, priority=n), NOW)
    assert ids(store.waiting("analyst", NOW)) == [f"e{n}:review" for n in (6, 5, 4, 3, 2)]
    assert store.counter("dropped_overflow") == 2


def test_queue_stats(store):
    store.add_task(task(1, created_at=NOW - 60), NOW)
    store.add_task(task(2), NOW)
    store.claim("e2:review", "ana", NOW)
    stats = store.queue_stats(NOW)
    assert stats["analyst"] == {"waiting": 1, "leased": 1, "oldest_age_seconds": 60.0}
    assert stats["escalation"]["waiting"] == 0


def test_labels_seen_per_model(store):
    store.add_task(task(1, label="legit"), NOW)
    store.add_task(task(2, label="chargeback"), NOW)
    assert store.labels("fraud") == ["chargeback", "fraud", "legit"]


def test_escalate_copy_enters_escalation_queue(store):
    store.add_task(task(1), NOW)
    t = store.claim("e1:review", "ana", NOW)
    assert store.escalate_copy(t, NOW)
    assert ids(store.waiting("escalation", NOW)) == ["e1:escalate"]


def test_reviewers_and_passwords(store):
    salt, digest = hash_password("pw")
    store.put_reviewer("ana", "analyst", False, salt, digest)
    rev = store.reviewer("ana")
    assert verify_password("pw", rev["salt"], rev["hash"]) and not verify_password("px", rev["salt"], rev["hash"])
    assert store.reviewers() == [{"name": "ana", "role": "analyst", "pii_clearance": False}]
    assert store.remove_reviewer("ana") and not store.remove_reviewer("ana")


def test_session_cookie_rejects_forgery():
    signer = SessionSigner(b"key", 60)
    cookie = signer.sign("ana", NOW)
    assert signer.verify(cookie, NOW) == "ana"
    assert signer.verify(cookie.replace("|", "x|", 1), NOW) is None
    assert SessionSigner(b"other", 60).verify(cookie, NOW) is None


def test_reviewers_cli_exit_codes(tmp_path, monkeypatch, capsys):
    import io

    from loopline.connectors.review.cli import main

    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("long-enough-pw\n"))  # >= the 12-character minimum
    assert main(["reviewers", "add", "ana", "--role", "senior", "--pii-clearance", "--password-stdin"]) == 0
    assert main(["reviewers", "list"]) == 0
    assert "ana\tsenior\tpii_clearance" in capsys.readouterr().out
    assert main(["reviewers", "remove", "bob"]) == 1
    assert capsys.readouterr().err == "loopline: there is no reviewer named 'bob'\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["reviewers", "add", "eve", "--role", "analyst", "--password-stdin"]) == 1
    assert main(["reviewers", "remove", "ana"]) == 0
    store = ReviewStore(tmp_path / "review.sqlite3")
    assert store.reviewers() == []


def test_similar_answers_same_model_label_and_rule_latest_first_and_bounded(store, monkeypatch):
    def t(n, label="legit", reason="low_confidence"):
        x = task(n, label=label)
        x["reason"] = reason
        x["prediction"]["confidence"] = 0.5 + n / 100
        return x

    store.record_answer(t(1), "approve", "legit", NOW)
    store.record_answer(t(2), "override", "fraud", NOW + 1)
    store.record_answer(t(3, label="fraud"), "approve", "fraud", NOW + 2)  # other predicted label
    store.record_answer(t(4, reason="risk:amount>=10000"), "approve", "legit", NOW + 3)  # other rule
    got = store.similar_answers(t(9))
    assert [(r["event_id"], r["action"], r["corrected_label"]) for r in got] == \
           [("e2", "override", "fraud"), ("e1", "approve", "legit")]
    assert [r["event_id"] for r in store.similar_answers(t(1))] == ["e2"]  # never the case itself
    monkeypatch.setattr(ReviewStore, "MAX_ANSWERS", 100)
    for n in range(10, 1010):
        store.record_answer(t(n), "approve", "legit", NOW)
    kept = store._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert kept <= 100 + 500  # trimmed in batches of 500 inserts


def test_labels_seen_stay_bounded_whatever_producers_send(tmp_path, monkeypatch):
    """Hostile predictions with ever-new labels and model names cannot grow the labels table."""
    from loopline.connectors.review import store as store_module

    monkeypatch.setattr(store_module, "MAX_LABELS_PER_MODEL", 5)
    monkeypatch.setattr(store_module, "MAX_LABEL_ROWS", 12)
    s = ReviewStore(tmp_path / "r.sqlite3", lease_seconds=10, task_ttl_seconds=3600, max_tasks=10_000)
    try:
        s.add_tasks([task(i, label=f"junk-{i}") for i in range(40)], NOW)  # one model, 40 new labels
        assert len(s.labels("fraud")) == 5
        others = [{**task(100 + i, label=f"x{i}"), "model_name": f"m{i}"} for i in range(20)]
        s.add_tasks(others, NOW)  # 20 new models
        total = sum(len(s.labels(m)) for m in ["fraud"] + [f"m{i}" for i in range(20)])
        assert total == 12
    finally:
        s.close()


def test_tasks_of_a_replaced_kafka_cluster_are_retired(store):
    """An embedded broker restarted with an empty memory has a new cluster id: its old tasks can no longer
    be answered usefully (the join state is gone), so they leave the queues, counted; a stable id keeps them."""
    for n in (1, 2, 3):
        store.add_task(task(n), NOW)
    store.claim("e1:review", "ana", NOW)
    assert store.broker_cluster("cluster-a") == 0  # first sight: nothing to compare with
    assert store.broker_cluster("cluster-a") == 0  # a Kafka restart keeps the id
    store.claim("e2:review", "ana", NOW)
    store.complete("e2:review", "ana", NOW)
    assert store.broker_cluster("cluster-b") == 2  # e1 (leased) and e3; e2 was answered
    assert store.waiting("analyst", NOW) == [] and store.counter("dropped_broker_gone") == 2
    with pytest.raises(TaskNotFound):
        store.get("e3:review")
    store.add_task(task(4), NOW)  # tasks of the new broker are kept
    assert store.broker_cluster("cluster-b") == 0 and ids(store.waiting("analyst", NOW)) == ["e4:review"]
