"""Issue #19 items 1-2: a policy applied at run time, any of three ways, reaches the review server's masking.

A worker runs with a watched policy file; the review server has *no* policy
file, so what it masks beyond its settings list can only come from the policy
events the worker publishes. Each way of applying a policy (``POST /policy``,
``loopline policy apply``, an edit of the watched file) marks one more
personal field; an uncleared analyst must see it masked within seconds in the
JSON API and the HTML task page, while a cleared reviewer still sees it.
"""
from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from pydantic import SecretStr

from loopline.connectors.broker import free_port
from loopline.connectors.processes import WorkerProcess, loopline_exe, settings_env
from loopline.connectors.review.app import ReviewServer
from loopline.connectors.review.service import MASK, add_reviewer
from loopline.connectors.review.settings import ReviewSettings
from tests.integration.test_review_api import PASSWORDS, Client, make_task, publish_tasks, wait_for

pytestmark = pytest.mark.integration

CANARY = {"email": "canary-email-7f3a@example.org", "phone": "canary-phone-+4915112345", "postcode": "canary-pc-X9Z"}
WITHIN_SECONDS = 10.0


def policy(version: str, personal: list[str]) -> str:
    marks = ", ".join(f'"{k}"' for k in personal)
    return f'version = "{version}"\n[defaults]\npersonal_data = [{marks}]\n'


def masked_after(client: Client, field: str, deadline_s: float) -> float:
    """Seconds until the analyst's JSON view masks ``field`` (AssertionError after ``deadline_s``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        status, body = client.call("GET", "/api/tasks?tier=analyst", "ana")
        assert status == 200, body
        if body["tasks"][0]["prediction"]["features_categorical"][field] == MASK:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"{field} not masked {deadline_s}s after the policy was applied")


def test_three_ways_of_applying_a_policy_each_mask_a_new_field(loopline_settings, tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(policy("p0", []))
    token = "masking-test-token-0123456789"  # the control plane (#24): POST /policy needs a bearer token
    s = loopline_settings.model_copy(update={"policy_file": path, "policy_watch_seconds": 0.5,
                                             "control_tokens": SecretStr(f"masking-test:{token}"),
                                             "control_token": SecretStr(token)})
    task = make_task(0)
    task["prediction"]["features_categorical"] = dict(CANARY)
    publish_tasks(s, [task])
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    rs = ReviewSettings.from_settings(s, port=free_port(), policy_file=None, masked_features=())
    srv = ReviewServer(rs)
    for name, role, pii in (("ana", "analyst", False), ("pia", "analyst", True)):
        add_reviewer(srv.service.store, name, role, pii, PASSWORDS[name])
    srv.start()
    timings = {}
    try:
        client = Client(srv.url)
        first = wait_for(client, "ana", "analyst", 1)[0]
        assert first["prediction"]["features_categorical"] == CANARY  # nothing marked yet

        # 1. POST /policy on the worker
        req = urllib.request.Request(w.base_url + "/policy", data=policy("p1", ["email"]).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (our own child's http URL)
            assert resp.status == 200
        timings["POST /policy"] = masked_after(client, "email", WITHIN_SECONDS)

        # 2. loopline policy apply
        f2 = tmp_path / "p2.toml"
        f2.write_text(policy("p2", ["email", "phone"]))
        out = subprocess.run([loopline_exe(), "policy", "apply", str(f2), "--worker", w.base_url],
                             env=settings_env(s), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        timings["loopline policy apply"] = masked_after(client, "phone", WITHIN_SECONDS)

        # 3. the watched policy file
        path.write_text(policy("p3", ["email", "phone", "postcode"]))
        timings["file watch"] = masked_after(client, "postcode", WITHIN_SECONDS)

        status, body = client.call("GET", "/api/tasks?tier=analyst", "ana")
        view = body["tasks"][0]
        assert view["prediction"]["features_categorical"] == {k: MASK for k in CANARY}
        status, body = client.call("GET", "/api/tasks?tier=analyst", "pia")
        assert body["tasks"][0]["prediction"]["features_categorical"] == CANARY  # cleared: unmasked
        status, body = client.call("POST", f"/api/tasks/{view['task_id']}/claim", "ana")
        assert status == 200
        status, page = client.call("GET", f"/tasks/{view['task_id']}", "ana")
        assert status == 200 and isinstance(page, str)
        for value in CANARY.values():
            assert value not in page
    finally:
        srv.stop()
        w.stop()
    print("\nseconds from apply to masked in the review server: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
