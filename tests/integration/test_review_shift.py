"""A reviewer's working day against the real broker (and a real headless Chromium for the shift):
declared labels, keys only, the next task after each answer, counts and paging, an escalation with
a note that the senior sees first; the terminal reviewer's quit and wrong password; the leased
``ReviewerClient``.

Screenshots (for docs/reviewing.md): docs/review_queue.png, docs/review_task.png,
docs/review_escalation.png.
"""
from __future__ import annotations

import io
import time

import pytest

from tests.integration.test_review_api import (  # noqa: F401 (start_server is a fixture)
    PASSWORDS,
    corrections,
    make_task,
    publish_tasks,
    start_server,
)
from tests.integration.test_review_browser import DOCS, browser  # noqa: F401 (fixture)

POLICY = '''version = "shift-1"
[models.fraud]
labels = ["legit", "fraud", "friendly_fraud"]
positive_label = "fraud"
guidelines = """Fraud: the card holder did not make this payment. Friendly fraud: the card holder made it \
and disputes it anyway. Escalate when the merchant is new and the amount is above $5,000."""
'''


DECLARED = ["legit", "fraud", "friendly_fraud"]


def rich_task(n: int, priority: int = 150, label: str = "legit", tier: str = "review") -> dict:
    t = make_task(n, tier=tier, priority=priority, label=label)
    t["prediction"]["features_numeric"].update(amount=10720.0 + n, support_tickets=0.0, tenure_months=7.0)
    t["prediction"]["risk"] = {"amount": 10720.0 + n, "velocity_1h": 3.0}
    t["reason"] = t["insights"]["rule"] = "confidence<0.8"
    t["insights"].update(override_risk=0.5826, online_prediction="fraud",
                         drift_status="drifting: tenure_months (rank_cusum 14.2, 1.4x threshold)",
                         top_contributions=[{"feature": "support_tickets", "contribution": -2.676},
                                            {"feature": "amount", "contribution": 1.31}])
    return t


def _waiting(client, user: str, queue: str, n: int, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = client.call("GET", "/api/queues", user)
        assert status == 200, body
        if body["queues"][queue]["waiting"] >= n:
            return
        time.sleep(0.3)
    raise AssertionError(f"{n} tasks did not reach the {queue} queue within {timeout}s")


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


def _login(browser, url: str, user: str):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url + "/login")
    assert page.locator(".error").count() == 0  # no error box on a first visit
    page.fill("input[name=name]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button:has-text('Log in')")
    page.wait_for_selector("#stats-analyst")
    return page


def _event(page) -> str:
    return page.locator("h1").inner_text().removeprefix("Task ")


def test_a_shift_in_the_browser(browser, start_server, loopline_settings, policy_file):  # noqa: F811
    tasks = [rich_task(i, priority=100 + (i * 37) % 100, label="fraud" if i % 4 == 0 else "legit") for i in range(32)]
    publish_tasks(loopline_settings, tasks)
    srv, client = start_server(policy_file=policy_file, page_size=10)
    _waiting(client, "ana", "analyst", 32)
    served = []
    page = _login(browser, srv.url, "ana")
    responses = []
    page.on("response", lambda r: responses.append((r.status, r.url)))
    page.goto(srv.url + "/queue/analyst")
    assert page.locator("#count").inner_text() == "1–10 of 32"
    page.click("#next")
    page.wait_for_selector("#prev")
    assert page.locator("#count").inner_text() == "11–20 of 32"
    page.goto(srv.url + "/queue/analyst?event_id=ev-7")
    assert page.locator("#count").inner_text() == "1–1 of 1" and "ev-7" in page.locator("#tasks").inner_text()
    page.goto(srv.url + "/queue/analyst")
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "review_queue.png"), full_page=True)
    page.keyboard.press("n")  # start reviewing, most urgent first
    page.wait_for_selector("#answer")
    # the first task: nothing pre-selected, exactly the declared labels, guidelines shown
    assert page.locator("#label").input_value() == ""
    pred = page.locator("#predicted").inner_text()
    assert page.locator("#label option").all_inner_texts()[1:] == [
        f"{i} · {lb}" + (" (predicted)" if lb == pred else "") for i, lb in enumerate(DECLARED, 1)]
    assert "Friendly fraud" in page.locator("#guidelines").inner_text()
    assert "due" in page.locator("#due").inner_text() and "ago" in page.locator("#age").inner_text()
    assert "Keys:" in page.locator("#keys").inner_text()
    body = page.locator("body").inner_text()
    assert "$10,7" in body and "58.3%" in body and "pushes towards" in body and "1.4 × its threshold" in body
    assert "online_prediction" not in body and "override_risk" not in body
    page.screenshot(path=str(DOCS / "review_task.png"), full_page=True)
    # shortcuts do not fire inside the dropdown (nor in the note)
    first = _event(page)
    page.focus("#label")
    for key in ("a", "u", "e"):
        page.keyboard.press(key)
    page.focus("#note")
    page.keyboard.type("aue")
    page.wait_for_timeout(500)
    assert _event(page) == first and page.locator("#answer").count() == 1
    page.fill("#note", "")
    page.keyboard.press("Escape")
    page.locator("h1").click()
    expected = {}
    for i in range(30):
        ev = _event(page)
        predicted = page.locator("#predicted").inner_text()
        served.append(ev)
        if i % 3 == 2 and predicted == "legit":
            page.keyboard.press("1")  # the predicted label's number: refused on the page, nothing sent
            page.wait_for_timeout(200)
            assert _event(page) == ev and "press a" in page.locator("#hint").inner_text()
        with page.expect_navigation():
            if i == 5:  # an escalation with a note, keys only
                page.keyboard.press("e")
                page.keyboard.type("need senior eyes: new merchant, big amount")
                page.keyboard.press("Enter")
                expected[ev] = ("escalate", None)
            elif i % 3 == 1:  # a correction by number key to a declared label
                target = "friendly_fraud" if predicted != "friendly_fraud" else "legit"
                page.keyboard.press("3" if target == "friendly_fraud" else "1")
                expected[ev] = ("override", target)
            else:
                page.keyboard.press("a")
                expected[ev] = ("approve", predicted)
        page.wait_for_selector("#answer")
        assert "Answered " + ev in page.locator(".flash").inner_text()
    assert len(set(served)) == 30
    page.click("#btn-list")  # back to the list: the open task is given back
    page.wait_for_selector("#count")
    assert page.locator("#count").inner_text() == "1–2 of 2"
    assert "30" in page.locator("#counters").inner_text()
    assert not [r for r in responses if r[0] == 404], responses  # no favicon (or other) 404
    # the senior sees the escalation first, with its note and original reason
    senior = _login(browser, srv.url, "sam")
    senior.goto(srv.url + "/queue/escalation")
    first_row = senior.locator("#tasks tr").nth(1).inner_text()
    assert "escalated by ana" in first_row
    senior.keyboard.press("n")
    senior.wait_for_selector("#escalation")
    esc_ev = served[5]
    assert _event(senior) == esc_ev
    text = senior.locator("#escalation").inner_text()
    assert "need senior eyes" in text and "confidence<0.8" in text and "ana" in text
    assert senior.locator("#thread").count() == 1
    senior.screenshot(path=str(DOCS / "review_escalation.png"), full_page=True)
    senior.keyboard.press("2")  # fraud
    senior.wait_for_selector(".flash")
    got = corrections(loopline_settings, 31)
    by = {}
    for _, rec in got:
        by.setdefault(rec["event_id"], []).append(rec)
    assert len(got) == 31
    for ev, (action, label) in expected.items():
        rec = by[ev][0]
        assert (rec["action"], rec["corrected_label"] if action == "override" else None) == (
            action, label if action == "override" else None), rec
    esc = sorted(by[esc_ev], key=lambda r: r["reviewer_id"])
    assert [(r["reviewer_id"], r["action"]) for r in esc] == [("ana", "escalate"), ("sam", "override")]
    assert esc[0]["note"].startswith("need senior eyes") and esc[1]["corrected_label"] == "fraud"


def test_terminal_quit_releases_and_wrong_password_says_so(start_server, loopline_settings, policy_file, capsys):  # noqa: F811
    from loopline.connectors.review.cli import ApiClient, review_loop

    publish_tasks(loopline_settings, [rich_task(0)])
    srv, client = start_server(policy_file=policy_file)
    _waiting(client, "ana", "analyst", 1)
    out = io.StringIO()
    assert review_loop(ApiClient(srv.url, "ana", PASSWORDS["ana"]), "analyst", io.StringIO("q\n"), out) == 0
    text = out.getvalue()
    assert "went back to the queue" in text and "58.3%" in text and "Friendly fraud" in text
    assert "override_risk=" not in text and "pushes towards legit" in text
    status, body = client.call("GET", "/api/queues", "ana")
    assert body["queues"]["analyst"]["waiting"] == 1  # released at once, not after the lease
    capsys.readouterr()
    assert review_loop(ApiClient(srv.url, "ana", "wrong"), "analyst", io.StringIO(""), io.StringIO()) == 1
    assert "wrong password" in capsys.readouterr().err
    status, body = client.call("POST", "/api/tasks/ev-0:review/claim", "ana")
    assert status == 200
    status, body = client.call("POST", "/api/tasks/ev-0:review/submit", "ana",
                               body={"action": "correct", "corrected_label": "legit"})
    assert status == 400 and "approve it instead" in body["error"]


def test_reviewer_client_leases_what_it_polls(start_server, loopline_settings, policy_file):  # noqa: F811
    from loopline.connectors.review.client import ReviewerClient

    publish_tasks(loopline_settings, [rich_task(0), rich_task(1)])
    srv, client = start_server(policy_file=policy_file)
    _waiting(client, "ana", "analyst", 2)
    with ReviewerClient(loopline_settings, reviewer_id="pia", server=srv.url, password=PASSWORDS["pia"]) as rc:
        tasks = []
        deadline = time.monotonic() + 45
        while len(tasks) < 2 and time.monotonic() < deadline:
            tasks += rc.poll(timeout=2)
        assert sorted(t["task_id"] for t in tasks) == ["ev-0:review", "ev-1:review"]
        status, body = client.call("GET", "/api/queues", "ana")
        assert body["queues"]["analyst"] == {**body["queues"]["analyst"], "waiting": 0, "leased": 2}
        status, _ = client.call("POST", "/api/tasks/ev-0:review/claim", "ana")
        assert status == 409  # nobody else can take a task the client polled
        c = rc.submit(tasks[0], "correct", corrected_label="fraud" if tasks[0]["prediction"]["predicted_label"] != "fraud"
                      else "legit", note="bridged")
        rc.commit()
    # close() gave the unanswered one back
    status, body = client.call("GET", "/api/queues", "ana")
    assert body["queues"]["analyst"]["waiting"] == 1 and body["queues"]["analyst"]["leased"] == 0
    recs = [r for _, r in corrections(loopline_settings, 1)]
    assert len(recs) == 1 and recs[0]["correction_id"] == c["correction_id"] and recs[0]["reviewer_id"] == "pia"
    assert recs[0]["source"] == "client"
