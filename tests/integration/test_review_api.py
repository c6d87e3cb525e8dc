"""The review server against the real broker: every access and lease rule of the JSON API and HTML.

Each test gets fresh topics (``loopline_settings``) and its own server on a free port.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import pytest

from loopline.connectors.broker import free_port
from loopline.connectors.review.app import ReviewServer
from loopline.connectors.review.service import MASK, add_reviewer
from loopline.connectors.review.settings import ReviewSettings
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, REVIEW_TASK, AvroSerde
from tests.helpers import read_topic

PASSWORDS = {"ana": "ana-pw", "sam": "sam-pw", "pia": "pia-pw"}


def make_task(n: int, tier: str = "review", priority: int = 5, label: str = "legit") -> dict:
    ev = make_events(n + 1, seed=11)[n]
    other = "fraud" if label == "legit" else "legit"
    ev.update(event_id=f"ev-{n}", predicted_label=label,
              class_probabilities={label: ev["confidence"], other: 1 - ev["confidence"]},
              features_numeric={**ev["features_numeric"], "account_age_days": 42.0})
    now = int(time.time() * 1000)
    return {
        "task_id": f"ev-{n}:{tier}", "event_id": ev["event_id"], "model_name": ev["model_name"],
        "model_version": ev["model_version"], "tier": tier, "priority": priority, "reason": "low_confidence",
        "policy_version": "threshold-v1", "audit": False, "sampling_propensity": 1.0, "created_at": now,
        "due_by": now + 3_600_000, "prediction": ev,
        "insights": {"confidence": ev["confidence"], "rule": "low_confidence", "override_risk": 0.31,
                     "drift_status": "stable", "online_prediction": "fraud",
                     "top_contributions": [{"feature": "f01", "contribution": 0.4}]},
    }


def publish_tasks(settings, tasks: list[dict]) -> None:
    from confluent_kafka import Producer

    serde = AvroSerde(SchemaCatalogue.load())
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    for t in tasks:
        topic = settings.topics.review_escalation if t["tier"] == "escalate" else settings.topics.review_analyst
        p.produce(topic, key=t["event_id"].encode(), value=serde.encode(REVIEW_TASK, t))
    assert p.flush(15) == 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class Client:
    """Tiny HTTP client: Basic auth per call, or a cookie jar after ``login``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookie: str | None = None

    def call(self, method: str, path: str, user: str | None = None, body=None, raw: bytes | None = None,
             form: dict | None = None):
        headers = {}
        data = raw
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if form is not None:
            from urllib.parse import urlencode

            data, headers["Content-Type"] = urlencode(form).encode(), "application/x-www-form-urlencoded"
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
        if self.cookie:
            headers["Cookie"] = self.cookie
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(req, timeout=30) as resp:
                status, text, hdrs = resp.status, resp.read().decode(), resp.headers
        except urllib.error.HTTPError as exc:
            status, text, hdrs = exc.code, exc.read().decode(), exc.headers
        if hdrs.get("Set-Cookie"):
            self.cookie = hdrs["Set-Cookie"].split(";")[0]
        if status == 303:  # follow with the cookie jar, as a browser does
            return self.call("GET", hdrs["Location"], user)
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


def wait_for(client: Client, user: str, queue: str, n: int, timeout: float = 45.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = client.call("GET", f"/api/tasks?tier={queue}", user)
        assert status == 200, body
        if len(body["tasks"]) >= n:
            return body["tasks"]
        time.sleep(0.3)
    raise AssertionError(f"{n} tasks did not reach the {queue} queue within {timeout}s")


def corrections(settings, n: int, settle: float = 3.0) -> list[tuple[bytes, dict]]:
    serde = AvroSerde(SchemaCatalogue.load())
    msgs = read_topic(settings.kafka_bootstrap, settings.topics.corrections, lambda r: len(r) >= n,
                      timeout=30, settle=settle)
    out = []
    for m in msgs:
        name, rec = serde.decode(m.value())
        assert name == CORRECTION
        out.append((m.key(), rec))
    return out


@pytest.fixture
def start_server(loopline_settings, tmp_path):
    servers = []

    def start(**overrides) -> tuple[ReviewServer, Client]:
        rs = ReviewSettings.from_settings(loopline_settings, port=free_port(), **overrides)
        srv = ReviewServer(rs)
        for name, role, pii in (("ana", "analyst", False), ("sam", "senior", True), ("pia", "analyst", True)):
            add_reviewer(srv.service.store, name, role, pii, PASSWORDS[name])
        srv.start()
        servers.append(srv)
        return srv, Client(srv.url)

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def server(start_server, loopline_settings):
    publish_tasks(loopline_settings, [make_task(0), make_task(1, priority=9), make_task(2, tier="escalate")])
    srv, client = start_server()
    wait_for(client, "ana", "analyst", 2)
    wait_for(client, "sam", "escalation", 1)
    return srv, client


def test_queues_order_and_401_without_login(server):
    srv, client = server
    status, body = client.call("GET", "/api/queues")
    assert status == 401 and "Log in" in body["error"]
    assert client.call("GET", "/")[0] == 401
    status, body = client.call("GET", "/api/tasks?tier=analyst", "ana")
    assert [t["task_id"] for t in body["tasks"]] == ["ev-1:review", "ev-0:review"]  # priority desc
    status, body = client.call("GET", "/api/queues", "sam")
    assert body["queues"]["analyst"]["waiting"] == 2 and body["queues"]["escalation"]["waiting"] == 1
    assert client.call("GET", "/api/queues", None)[0] == 401
    bad = Client(srv.url)
    bad.cookie = "loopline_review=forged|1|x"
    assert bad.call("GET", "/api/queues")[0] == 401


def test_analyst_on_escalation_is_403(server):
    _, client = server
    status, body = client.call("GET", "/api/tasks?tier=escalation", "ana")
    assert status == 403 and body["error"]
    status, body = client.call("POST", "/api/tasks/ev-2:escalate/claim", "ana")
    assert status == 403
    status, body = client.call("POST", "/api/tasks/ev-2:escalate/submit", "ana", {"action": "approve"})
    assert status == 403


def test_claim_hides_task_from_others_and_second_claim_is_409(server):
    _, client = server
    status, body = client.call("POST", "/api/tasks/ev-1:review/claim", "ana")
    assert status == 200 and body["task"]["task_id"] == "ev-1:review" and "legit" in body["labels"]
    status, body = client.call("GET", "/api/tasks?tier=analyst", "pia")
    assert [t["task_id"] for t in body["tasks"]] == ["ev-0:review"]
    status, body = client.call("POST", "/api/tasks/ev-1:review/claim", "pia")
    assert status == 409 and "another reviewer" in body["error"]


def test_lease_expiry_returns_task_and_late_submit_is_409(start_server, loopline_settings):
    publish_tasks(loopline_settings, [make_task(0)])
    srv, client = start_server(lease_seconds=1.0)
    wait_for(client, "ana", "analyst", 1)
    assert client.call("POST", "/api/tasks/ev-0:review/claim", "ana")[0] == 200
    assert client.call("GET", "/api/tasks?tier=analyst", "pia")[1]["tasks"] == []
    time.sleep(1.5)
    assert [t["task_id"] for t in client.call("GET", "/api/tasks?tier=analyst", "pia")[1]["tasks"]] == ["ev-0:review"]
    status, body = client.call("POST", "/api/tasks/ev-0:review/submit", "ana", {"action": "approve"})
    assert status == 409 and "Nothing was published" in body["error"]
    _, metrics = client.call("GET", "/metrics")
    assert "loopline_review_lease_expiries_total 1.0" in metrics
    assert corrections(loopline_settings, 1, settle=0) == []


def test_submit_publishes_one_correction_then_double_submit_is_409(server, loopline_settings):
    srv, client = server
    client.call("POST", "/api/tasks/ev-0:review/claim", "pia")
    status, body = client.call("POST", "/api/tasks/ev-0:review/submit", "pia",
                               {"action": "correct", "corrected_label": "fraud", "note": "card testing",
                                "reviewer_id": "mallory"})
    assert status == 200, body
    status, again = client.call("POST", "/api/tasks/ev-0:review/submit", "pia", {"action": "approve"})
    assert status == 409 and again["error"]
    got = corrections(loopline_settings, 1)
    assert len(got) == 1
    key, rec = got[0]
    assert key == b"ev-0"
    assert rec["reviewer_id"] == "pia"  # from the session, never from the body
    assert rec["action"] == "override" and rec["corrected_label"] == "fraud" and rec["note"] == "card testing"
    assert rec["tier"] == "review" and rec["model_version"] == "v1" and rec["source"] == "web"
    assert rec["review_seconds"] >= 0 and len(rec["correction_id"]) == 32
    assert rec["correction_id"] == body["correction"]["correction_id"]
    _, metrics = client.call("GET", "/metrics")
    assert 'loopline_review_reviews_total{action="override",tier="review"} 1.0' in metrics
    assert 'loopline_review_queue_depth{tier="review"} 1.0' in metrics


def test_bad_input_is_refused_and_publishes_nothing(server, loopline_settings):
    _, client = server
    status, body = client.call("POST", "/api/tasks/nope/claim", "ana")
    assert status == 404 and body["error"]
    assert client.call("POST", "/api/tasks/nope/submit", "ana", {"action": "approve"})[0] == 404
    client.call("POST", "/api/tasks/ev-0:review/claim", "ana")
    status, body = client.call("POST", "/api/tasks/ev-0:review/submit", "ana", raw=b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = client.call("POST", "/api/tasks/ev-0:review/submit", "ana", {"action": "delete"})
    assert status == 400 and "action must be" in body["error"]
    status, body = client.call("POST", "/api/tasks/ev-0:review/submit", "ana",
                               {"action": "correct", "corrected_label": "dunno"})
    assert status == 400 and "corrected_label must be one of" in body["error"]
    status, body = client.call("GET", "/api/tasks?tier=bogus", "ana")
    assert status == 400
    status, body = client.call("POST", "/api/tasks/ev-1:review/submit", "ana", {"action": "approve"})
    assert status == 409  # never claimed
    assert corrections(loopline_settings, 1, settle=0) == []
    # the task is still answerable after the refusals
    assert client.call("POST", "/api/tasks/ev-0:review/submit", "ana", {"action": "unsure"})[0] == 200


def test_escalate_publishes_and_moves_task_to_escalation_queue(server, loopline_settings):
    _, client = server
    client.call("POST", "/api/tasks/ev-0:review/claim", "ana")
    status, body = client.call("POST", "/api/tasks/ev-0:review/submit", "ana", {"action": "escalate"})
    assert status == 200 and body["correction"]["action"] == "escalate"
    ids = [t["task_id"] for t in client.call("GET", "/api/tasks?tier=escalation", "sam")[1]["tasks"]]
    assert "ev-0:escalate" in ids
    client.call("POST", "/api/tasks/ev-0:escalate/claim", "sam")
    status, body = client.call("POST", "/api/tasks/ev-0:escalate/submit", "sam", {"action": "escalate"})
    assert status == 400
    status, body = client.call("POST", "/api/tasks/ev-0:escalate/submit", "sam", {"action": "approve"})
    assert status == 200 and body["correction"]["tier"] == "escalate"
    recs = [r for _, r in corrections(loopline_settings, 2)]
    assert sorted((r["action"], r["tier"], r["reviewer_id"]) for r in recs) == [
        ("approve", "escalate", "sam"), ("escalate", "review", "ana")]


def test_personal_features_masked_without_clearance(server):
    srv, client = server
    masked = client.call("GET", "/api/tasks?tier=analyst", "ana")[1]["tasks"][0]["prediction"]
    clear = client.call("GET", "/api/tasks?tier=analyst", "pia")[1]["tasks"][0]["prediction"]
    assert masked["features_categorical"]["country"] == MASK and masked["context"]["country"] == MASK
    assert masked["features_numeric"]["account_age_days"] == MASK
    assert clear["features_categorical"]["country"] != MASK and clear["features_numeric"]["account_age_days"] == 42.0
    # HTML, through the login form and the session cookie
    web = Client(srv.url)
    status, _ = web.call("POST", "/login", form={"name": "ana", "password": "ana-pw"})
    assert status == 200 and web.cookie.startswith("loopline_review=")
    status, page = web.call("POST", "/tasks/ev-0:review/claim", form={})
    assert status == 200 and "Task ev-0" in page
    assert MASK in page and ">42<" not in page and "Chance a reviewer overrides" in page and "F01" in page
    cleared = Client(srv.url)
    cleared.call("POST", "/login", form={"name": "pia", "password": "pia-pw"})
    status, page = cleared.call("POST", "/tasks/ev-1:review/claim", form={})
    assert status == 200 and MASK not in page and ">42<" in page
    # the HTML form publishes with the session's reviewer and opens the next task (here: none left)
    status, page = cleared.call("POST", "/tasks/ev-1:review/submit", form={"action": "approve"})
    assert status == 200 and "Answered ev-1: approve legit" in page


def test_wrong_password_and_cookie_attributes(server):
    srv, _ = server
    web = Client(srv.url)
    status, page = web.call("POST", "/login", form={"name": "ana", "password": "nope"})
    assert status == 401 and "wrong password" in page
    req = urllib.request.Request(srv.url + "/login", data=b"name=ana&password=ana-pw", method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})

    try:
        _OPENER.open(req, timeout=10)
    except urllib.error.HTTPError as exc:
        cookie = exc.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_terminal_reviewer_answers_with_one_key(server, loopline_settings):
    import io

    from loopline.connectors.review.cli import ApiClient, review_loop

    srv, _ = server
    out = io.StringIO()
    # first task (ev-1): an unknown key, a note, then correct to label 1 ("fraud"); second (ev-0): approve;
    # then the queue is empty
    code = review_loop(ApiClient(srv.url, "ana", PASSWORDS["ana"]), "analyst",
                       io.StringIO("x\nn\nfrom the terminal\nc\n1\na\n"), out)
    assert code == 0, out.getvalue()
    assert "published override fraud for ev-1" in out.getvalue() and "Nothing waiting" in out.getvalue()
    recs = sorted((r["event_id"], r["action"], r["reviewer_id"], r["source"], r["note"])
                  for _, r in corrections(loopline_settings, 2))
    assert recs == [("ev-0", "approve", "ana", "cli", None), ("ev-1", "override", "ana", "cli", "from the terminal")]
    bad = review_loop(ApiClient(srv.url, "ana", "wrong"), "analyst", io.StringIO(""), io.StringIO())
    assert bad == 1


def test_reviewer_client_bridges_kafka(loopline_settings):
    from loopline.connectors.review.client import ReviewerClient

    publish_tasks(loopline_settings, [make_task(5), make_task(6, tier="escalate")])
    with ReviewerClient(loopline_settings, reviewer_id="bridge") as rc:
        tasks = []
        deadline = time.monotonic() + 45
        while not tasks and time.monotonic() < deadline:
            tasks = rc.poll(timeout=2)
        assert [t["task_id"] for t in tasks] == ["ev-5:review"]
        c = rc.submit(tasks[0], "correct", corrected_label="fraud", note="bridged")
        rc.commit()
    key, rec = corrections(loopline_settings, 1)[0]
    assert key == b"ev-5" and rec == c and rec["source"] == "client" and rec["reviewer_id"] == "bridge"
