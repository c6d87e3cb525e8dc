"""Review workbench latency with 10,000 waiting tasks: queue page (count, facets, paging), a filtered
page, the next-task flow (claim + task page), submit — against ``/healthz`` (the HTTP round trip)
measured in the same run as the baseline.

The Kafka publisher is an in-memory list here (the broker acknowledgement is not part of these
figures); the store is a real SQLite file. Run::

    .venv/bin/python -m benchmarks.bench_review_workbench
"""
from __future__ import annotations

import base64
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

N_TASKS, REPEAT = 10_000, 20


class _ListPublisher:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def publish(self, correction: dict) -> None:
        self.sent.append(correction)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main() -> None:
    from loopline.connectors.broker import free_port
    from loopline.connectors.review.app import ReviewServer
    from loopline.connectors.review.service import add_reviewer
    from loopline.connectors.review.settings import ReviewSettings
    from loopline.processors.testing import make_events

    tmp = Path(tempfile.mkdtemp())
    policy = tmp / "policy.toml"
    policy.write_text('version = "b"\n[models.fraud]\nlabels = ["legit", "fraud"]\nguidelines = "g"\n')
    rs = ReviewSettings(db_path=tmp / "review.sqlite3", port=free_port(), policy_file=policy)
    srv = ReviewServer(rs, publisher=_ListPublisher(), start_feed=False)
    add_reviewer(srv.service.store, "ana", "analyst", True, "pw")
    now = int(time.time() * 1000)
    tasks = []
    for i, ev in enumerate(make_events(N_TASKS, seed=5, start_ms=now - 1000)):
        tasks.append({"task_id": f"{ev['event_id']}:review", "event_id": ev["event_id"], "model_name": "fraud",
                      "model_version": "1", "tier": "review", "priority": 100 + i % 100,
                      "reason": f"confidence<0.{8 + i % 2}", "policy_version": "b", "audit": i % 20 == 0,
                      "sampling_propensity": 1.0, "created_at": now, "due_by": now + 3_600_000 + i,
                      "prediction": ev, "insights": {"confidence": ev["confidence"], "rule": "r", "override_risk": 0.3,
                                                     "drift_status": "stable", "online_prediction": "fraud",
                                                     "top_contributions": [{"feature": "f01", "contribution": 0.4}]}})
    srv.service.store.add_tasks(tasks, time.time())
    auth = "Basic " + base64.b64encode(b"ana:pw").decode()
    opener = urllib.request.build_opener(_NoRedirect)

    def call(method: str, path: str, data: bytes | None = None) -> tuple[int, str]:
        req = urllib.request.Request(srv.url + path, data=data, method=method,  # noqa: S310 (the local server)
                                     headers={"Authorization": auth})
        try:
            with opener.open(req, timeout=30) as r:
                return r.status, r.headers.get("Location", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", "")

    def median_ms(fn) -> float:
        times = []
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    with srv:
        base = median_ms(lambda: call("GET", "/healthz"))
        figures = {
            "queue page (count, facets, 50 rows)": median_ms(lambda: call("GET", "/queue/analyst")),
            "queue page, page 100": median_ms(lambda: call("GET", "/queue/analyst?page=100")),
            "queue page, filtered (audit, one reason)": median_ms(
                lambda: call("GET", "/queue/analyst?kind=audit&reason=confidence%3C0.8")),
            "search by event id": median_ms(lambda: call("GET", f"/queue/analyst?event_id={tasks[5000]['event_id']}")),
        }
        opened: list[str] = []

        def next_and_page() -> None:
            status, loc = call("GET", "/queue/analyst/next")
            assert status == 303 and loc.startswith("/tasks/"), (status, loc)
            call("GET", loc)
            opened.append(loc.split("?")[0])

        figures["next task (claim + task page)"] = median_ms(next_and_page)

        def submit() -> None:
            path = opened.pop()
            status, _ = call("POST", path + "/submit", b"action=approve")
            assert status == 303, status

        figures["submit (answer, then redirect to the next)"] = median_ms(submit)
    print(f"review workbench, {N_TASKS:,} waiting tasks, median of {REPEAT} (ms; ratio to /healthz)")
    print(f"  {'/healthz (baseline)':45s} {base:7.2f}  1.0x")
    for name, ms in figures.items():
        print(f"  {name:45s} {ms:7.2f}  {ms / base:.1f}x")


if __name__ == "__main__":
    main()
