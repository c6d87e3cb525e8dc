"""Two review-server processes on one PostgreSQL task store (the real one at 127.0.0.1:5432) serve
1,000 tasks to 10 concurrent reviewers: no task is leased twice, no answer is lost."""
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
from loopline.connectors.review.store import LeaseError
from tests.helpers import read_topic
from tests.integration.audit_support import scratch_postgres, wait_for
from tests.integration.test_review_api import make_task, publish_tasks

N_TASKS, N_REVIEWERS = 1000, 10


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
