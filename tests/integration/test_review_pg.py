"""Two review-server processes on one PostgreSQL task store (the real one at 127.0.0.1:5432) serve
1,000 tasks to 10 concurrent reviewers: no task is leased twice, no answer is lost.

The store contract of the SQLite default (tests/unit/test_review_store.py) and the workbench rules
(tests/unit/test_review_workbench.py: urgency order, filters, counts, release, escalation context,
per-reviewer counters) run here again on :class:`PgReviewStore`, each on a fresh database."""
from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from urllib.parse import urlencode

import pytest

from loopline.connectors.broker import free_port
from loopline.connectors.processes import loopline_exe, settings_env
from loopline.connectors.review.pg_store import PgReviewStore, open_store
from loopline.connectors.review.service import add_reviewer
from loopline.connectors.review.settings import ReviewSettings
from loopline.connectors.review.store import LeaseError, QueueFilter
from tests.helpers import read_topic
from tests.integration.audit_support import scratch_postgres, wait_for
from tests.integration.test_review_api import make_task, publish_tasks
from tests.unit import test_review_store as sqlite_contract
from tests.unit import test_review_workbench as workbench
from tests.unit.test_review_workbench import POLICY, ListPublisher
from tests.unit.test_review_workbench import task as wb_task

N_TASKS, N_REVIEWERS = 1000, 10

# The SQLite store contract and the workbench rules, collected here again with the PostgreSQL
# `store` / `svc` fixtures below (pytest resolves fixtures in the module that collects the test).
test_pg_claim_hides_task_and_expired_lease_returns_it = sqlite_contract.test_claim_hides_task_and_expired_lease_returns_it
test_pg_dedupes_by_task_id = sqlite_contract.test_dedupes_by_task_id
test_pg_escalate_copy_enters_escalation_queue = sqlite_contract.test_escalate_copy_enters_escalation_queue
test_pg_labels_seen_per_model = sqlite_contract.test_labels_seen_per_model
test_pg_max_count_drops_least_urgent_with_a_counter = sqlite_contract.test_max_count_drops_least_urgent_with_a_counter
test_pg_own_claim_renews_and_keeps_claim_time = sqlite_contract.test_own_claim_renews_and_keeps_claim_time
test_pg_queue_stats = sqlite_contract.test_queue_stats
test_pg_queues_split_by_tier_and_order_by_priority_then_due_by = sqlite_contract.test_queues_split_by_tier_and_order_by_priority_then_due_by
test_pg_reviewers_and_passwords = sqlite_contract.test_reviewers_and_passwords
test_pg_ttl_bound_drops_old_tasks_with_a_counter = sqlite_contract.test_ttl_bound_drops_old_tasks_with_a_counter
test_pg_unknown_task = sqlite_contract.test_unknown_task
test_pg_tasks_of_a_replaced_kafka_cluster_are_retired = sqlite_contract.test_tasks_of_a_replaced_kafka_cluster_are_retired
test_pg_counters_answered_today_and_agreement = workbench.test_counters_answered_today_and_agreement
test_pg_declared_labels_are_offered_and_same_label_correction_is_refused = workbench.test_declared_labels_are_offered_and_same_label_correction_is_refused
test_pg_escalation_keeps_its_context_and_sorts_by_its_sla = workbench.test_escalation_keeps_its_context_and_sorts_by_its_sla
test_pg_paging_filters_search_and_counts = workbench.test_paging_filters_search_and_counts
test_pg_release_gives_the_task_back_at_once = workbench.test_release_gives_the_task_back_at_once
test_pg_undeclared_model_offers_a_bounded_set_of_seen_labels = workbench.test_undeclared_model_offers_a_bounded_set_of_seen_labels


class Session:
    """A logged-in reviewer on one server (cookie session: no password hash per request)."""

    def __init__(self, base: str, name: str, password: str) -> None:
        self.base = base
        self.cookie = ""
        self.call("POST", "/login", form={"name": name, "password": password})
        assert self.cookie, f"{name} could not log in"

    def call(self, method: str, path: str, body=None, form=None) -> tuple[int, object]:
        headers, data = {}, None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if form is not None:
            data, headers["Content-Type"] = urlencode(form).encode(), "application/x-www-form-urlencoded"
        if self.cookie:
            headers["Cookie"] = self.cookie
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **kw):
                return None

        try:
            with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
                status, text, hdrs = r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as exc:
            status, text, hdrs = exc.code, exc.read().decode(), exc.headers
        if hdrs.get("Set-Cookie"):
            self.cookie = hdrs["Set-Cookie"].split(";")[0]
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


@pytest.fixture
def store():
    """The SQLite contract's `store` (tests/unit/test_review_store.py) on a fresh PostgreSQL database."""
    with scratch_postgres() as url:
        s = PgReviewStore(url, lease_seconds=10, task_ttl_seconds=3600, max_tasks=5)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def svc(tmp_path):
    """The workbench's `svc` (tests/unit/test_review_workbench.py) on a fresh PostgreSQL database."""
    from prometheus_client import CollectorRegistry

    from loopline.connectors.review.metrics import ReviewMetrics
    from loopline.connectors.review.service import ReviewService

    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    with scratch_postgres() as url:
        settings = ReviewSettings(policy_file=path, max_seen_labels=3, db_url=url)
        s = open_store(settings)
        assert isinstance(s, PgReviewStore) and s.urgency.audit_sla_seconds == settings.audit_sla_seconds
        try:
            service = ReviewService(settings, s, ListPublisher(), ReviewMetrics(CollectorRegistry(), s))
            for name, role in (("ana", "analyst"), ("sam", "senior")):
                add_reviewer(s, name, role, False, f"{name}-pw")
            yield service
        finally:
            s.close()


def test_urgency_filters_and_facets_with_exclusive_claims_across_connections():
    """Audit tasks get their own due time and priority; ``claim_next`` follows the urgency order
    of ``waiting``, honours filters, and two connections never get the same task."""
    with scratch_postgres() as url:
        a = PgReviewStore(url, lease_seconds=60, audit_sla_seconds=1800, audit_priority=200)
        b = PgReviewStore(url, lease_seconds=60, audit_sla_seconds=1800, audit_priority=200)
        try:
            now = 1_800_000_000.0
            ms = int(now * 1000)
            tasks = [wb_task(i, priority=100 + i, created_ms=ms) for i in range(6)]
            tasks.append(wb_task(50, priority=0, created_ms=ms, audit=True))  # low raw priority, audit
            tasks.append(wb_task(60, model="churn", priority=10, created_ms=ms))
            tasks[-1]["reason"] = "risk:amount>=10000"
            tasks.append(wb_task(70, priority=101, created_ms=ms, due_in_ms=7_200_000))  # due 2 h earlier
            assert a.add_tasks(tasks, now) == 9
            order = [t["task_id"] for t in a.waiting("analyst", now)]
            assert order[0] == "ev-50:review"  # the audit's SLA beats priority 105
            # urgency = due_by - priority x 60 s: 2 h earlier outweighs 4 points of priority
            assert order[1:8] == [f"ev-{i}:review" for i in (70, 5, 4, 3, 2, 1, 0)] and order[8] == "ev-60:review"
            assert order == [t["task_id"] for t in b.waiting("analyst", now)]
            audit = a.get("ev-50:review")
            assert (audit["priority"], audit["due_by"]) == (200, ms + 1_800_000)
            assert [t["task_id"] for t in a.waiting("analyst", now, limit=3, offset=2)] == order[2:5]
            assert a.count_waiting("analyst", now) == 9
            assert a.count_waiting("analyst", now, QueueFilter(kind="audit")) == 1
            assert a.count_waiting("analyst", now, QueueFilter(kind="regular", model="fraud")) == 7
            assert a.count_waiting("analyst", now, QueueFilter(reason="risk:amount>=10000")) == 1
            assert a.count_waiting("analyst", now, QueueFilter(due="hour")) == 1  # the audit only
            assert a.count_waiting("analyst", now + 1801, QueueFilter(due="overdue")) == 1
            assert [t["task_id"] for t in a.waiting("analyst", now, filters=QueueFilter(event_id="ev-3"))] == [
                "ev-3:review"]
            assert a.facets("analyst") == {"model": ["churn", "fraud"],
                                           "reason": ["confidence<0.9", "risk:amount>=10000"]}
            assert a.facets("escalation") == {"model": [], "reason": []}

            got = a.claim_next("analyst", "ana", now, QueueFilter(model="churn"))
            assert got["task_id"] == "ev-60:review"
            assert b.claim_next("analyst", "bob", now, QueueFilter(model="churn")) is None  # leased by ana
            claimed = [a.claim_next("analyst", "ana", now)["task_id"], b.claim_next("analyst", "bob", now)["task_id"],
                       a.claim_next("analyst", "ana", now)["task_id"]]
            assert claimed == order[:3]  # urgency order, each task once across both connections
            assert a.count_waiting("analyst", now) == 5
            assert not a.release("ev-50:review", "bob")  # not bob's lease
            assert b.release("ev-50:review", "ana")
            assert b.claim_next("analyst", "bob", now)["task_id"] == "ev-50:review"
        finally:
            a.close()
            b.close()


def test_concurrent_claim_next_hands_out_each_task_once():
    """8 threads on 8 connections drain 200 tasks with ``claim_next``: every task leased exactly once."""
    with scratch_postgres() as url:
        stores = [PgReviewStore(url, lease_seconds=600) for _ in range(8)]
        try:
            now = time.time()
            stores[0].add_tasks([wb_task(i, priority=i % 5, audit=i % 7 == 0) for i in range(200)], now)
            got: list[list[str]] = [[] for _ in stores]

            def drain(k: int) -> None:
                while (t := stores[k].claim_next("analyst", f"r{k}", now, QueueFilter(model="fraud"))) is not None:
                    got[k].append(t["task_id"])

            threads = [threading.Thread(target=drain, args=(k,)) for k in range(len(stores))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            ids = [tid for g in got for tid in g]
            assert len(ids) == 200 and len(set(ids)) == 200
            assert sum(1 for g in got if g) >= 2
        finally:
            for s in stores:
                s.close()


def test_escalate_copy_and_reviewer_counters():
    with scratch_postgres() as url:
        s = PgReviewStore(url, lease_seconds=60)
        try:
            now = time.time()
            s.add_task(wb_task(1), now)
            t = s.claim("ev-1:review", "ana", now)
            esc = {"by": "ana", "at": now, "note": "look", "original_reason": "confidence<0.9"}
            due = int((now + 600) * 1000)
            assert s.escalate_copy(t, now, escalation=esc, due_by=due, priority=300)
            assert not s.escalate_copy(t, now, escalation=esc)  # one copy per event
            copy = s.get("ev-1:escalate")
            assert (copy["tier"], copy["due_by"], copy["priority"], copy["escalation"]["note"]) == (
                "escalate", due, 300, "look")
            assert copy["notes"][-1] == {"by": "ana", "at": now, "text": "look", "action": "escalate"}
            assert s.waiting("escalation", now)[0]["task_id"] == "ev-1:escalate"
            s.record_reviewer_answer("ana", wb_task(2), "override", "fraud", now - 100)
            s.record_reviewer_answer("ana", wb_task(3, audit=True), "approve", "legit", now)
            s.record_reviewer_answer("sam", wb_task(2), "approve", "fraud", now)
            s.record_reviewer_answer("sam", wb_task(3, audit=True), "override", "fraud", now)
            assert s.reviewer_counters("ana", now - 10) == {"answered": 1, "compared_others": 2, "agree_others": 1,
                                                            "compared_audits": 1, "agree_audits": 0}
            assert s.reviewer_counters("ana", now - 1000)["answered"] == 2
        finally:
            s.close()


def test_a_store_from_the_previous_version_is_migrated():
    """A database written before the workbench (no version table, no urgency/reason/audit) is upgraded
    in place; the tasks in it are ordered and filtered like new ones; reopening changes nothing."""
    import psycopg

    from loopline.connectors.review.pg_store import _SCHEMA, SCHEMA_VERSION

    with scratch_postgres() as url:
        old = [wb_task(1, priority=100), wb_task(2, priority=190, audit=True)]
        with psycopg.connect(url, autocommit=True) as db:
            for sql in _SCHEMA:
                db.execute(sql)
            for t in old:
                db.execute("INSERT INTO rs_tasks (task_id, queue, priority, due_by, created_at, model_name, body) "
                           "VALUES (%s, 'analyst', %s, %s, %s, 'fraud', %s)",
                           (t["task_id"], t["priority"], t["due_by"], t["created_at"], json.dumps(t)))
        s = PgReviewStore(url)
        try:
            now = time.time()
            assert s.schema_version() == SCHEMA_VERSION == 3
            assert [t["task_id"] for t in s.waiting("analyst", now)] == ["ev-2:review", "ev-1:review"]
            assert s.count_waiting("analyst", now, QueueFilter(kind="audit", reason="confidence<0.9")) == 1
            assert s.count_waiting("analyst", now, QueueFilter(kind="regular")) == 1
            s.add_task(wb_task(3, priority=150), now)
        finally:
            s.close()
        # no migration runs twice: re-running version 2 with weight 0 would re-rank by due time only
        again = PgReviewStore(url, priority_weight_seconds=0)
        try:
            assert again.schema_version() == 3
            assert [t["task_id"] for t in again.waiting("analyst", now)] == ["ev-2:review", "ev-3:review",
                                                                              "ev-1:review"]
        finally:
            again.close()


def test_store_leases_are_exclusive_and_answers_once(tmp_path):
    with scratch_postgres() as url:
        a = PgReviewStore(url, lease_seconds=60)
        b = PgReviewStore(url, lease_seconds=60)  # a second process's connection
        try:
            assert a.add_tasks([make_task(i) for i in range(3)], now=time.time()) == 3
            assert b.add_tasks([make_task(0)], now=time.time()) == 0  # known task_id
            now = time.time()
            first = a.claim_next("analyst", "ana", now)
            second = b.claim_next("analyst", "bob", now)
            assert first["task_id"] != second["task_id"]
            with pytest.raises(LeaseError, match="another reviewer"):
                b.claim(first["task_id"], "bob", now)
            with pytest.raises(LeaseError):
                b.complete(first["task_id"], "bob", now)
            assert a.complete(first["task_id"], "ana", now)["_lease"]["claimed_at"] == pytest.approx(now)
            with pytest.raises(LeaseError, match="answered already"):
                a.complete(first["task_id"], "ana", now)
            # an expired lease goes back to the queue and can be taken by someone else
            assert b.claim(second["task_id"], "cat", now + 61)["_lease"]["leased_by"] == "cat"
            assert a.counter("lease_expiries") == 1
            add_reviewer(a, "ana", "analyst", False, "pw")
            assert b.reviewer("ana")["role"] == "analyst" and isinstance(b.reviewer("ana")["salt"], bytes)
            rs = ReviewSettings(db_url=url)
            assert isinstance(open_store(rs), PgReviewStore)
        finally:
            a.close()
            b.close()


def test_two_review_servers_serve_1000_tasks_to_10_reviewers(loopline_settings, tmp_path):
    with scratch_postgres() as url:
        s = loopline_settings.model_copy(update={"review_db_url": url})
        store = PgReviewStore(url)
        passwords = {f"r{i}": f"pw-{i}" for i in range(N_REVIEWERS)}
        for name, pw in passwords.items():
            add_reviewer(store, name, "analyst", False, pw)
        tasks = [make_task(i) for i in range(N_TASKS)]
        publish_tasks(s, tasks)
        procs, bases = [], []
        try:
            for i in range(2):
                port = free_port()
                log = open(tmp_path / f"review{i}.log", "wb")  # noqa: SIM115 (closed with the process)
                procs.append((subprocess.Popen([loopline_exe(), "review-server", "--port", str(port)],
                                               env=settings_env(s), stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL), log))
                bases.append(f"http://127.0.0.1:{port}")
            for base in bases:
                wait_for(lambda base=base: _up(base), 60, f"review server {base}")
            wait_for(lambda: store.queue_stats(time.time())["analyst"]["waiting"] >= N_TASKS, 60,
                     f"{N_TASKS} tasks in the shared store")

            answered: dict[str, list[str]] = {}
            statuses: Counter = Counter()
            lock = threading.Lock()
            errors: list[str] = []

            def reviewer(i: int) -> None:
                name = f"r{i}"
                sess = Session(bases[i % 2], name, passwords[name])
                mine = []
                try:
                    while True:
                        st, body = sess.call("GET", "/api/tasks?tier=analyst&limit=20")
                        assert st == 200, body
                        if not body["tasks"]:
                            break
                        for t in body["tasks"]:
                            st, _ = sess.call("POST", f"/api/tasks/{t['task_id']}/claim")
                            with lock:
                                statuses[("claim", st)] += 1
                            if st != 200:
                                continue
                            st, resp = sess.call("POST", f"/api/tasks/{t['task_id']}/submit", body={"action": "approve"})
                            with lock:
                                statuses[("submit", st)] += 1
                            assert st == 200, resp
                            mine.append(t["task_id"])
                except Exception as exc:  # noqa: BLE001 - reported by the main thread
                    errors.append(f"{name}: {exc!r}")
                answered[name] = mine

            threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(N_REVIEWERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(240)
            assert not errors, errors
            done = [tid for ids in answered.values() for tid in ids]
            assert len(done) == N_TASKS and set(done) == {t["task_id"] for t in tasks}  # each answered once
            assert statuses[("claim", 200)] == N_TASKS  # no task leased twice
            assert set(k for k in statuses if k[1] != 200) <= {("claim", 409)}  # the losers were told 409
            assert sum(1 for ids in answered.values() if ids) >= 2
            by_server = [sum(len(answered[f"r{i}"]) for i in range(N_REVIEWERS) if i % 2 == k) for k in (0, 1)]
            assert min(by_server) > 0, by_server  # both servers served answers

            msgs = read_topic(s.kafka_bootstrap, s.topics.corrections, lambda m: len(m) >= N_TASKS, timeout=60,
                              settle=2.0)
            from loopline.processors.wire.catalogue import SchemaCatalogue
            from loopline.processors.wire.serde import AvroSerde

            serde = AvroSerde(SchemaCatalogue.load())
            event_ids = [serde.decode(m.value())[1]["event_id"] for m in msgs]
            assert len(event_ids) == N_TASKS and set(event_ids) == {t["event_id"] for t in tasks}  # none lost
        finally:
            for p, log in procs:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                log.close()
            store.close()


def _up(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as r:  # noqa: S310 (our own child)
            return r.status == 200
    except Exception:  # noqa: BLE001 - not up yet
        return False
