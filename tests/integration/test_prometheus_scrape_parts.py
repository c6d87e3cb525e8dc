"""A real Prometheus (Debian's binary) scraping every Loopline part: a route worker, the
learner (a worker with LOOPLINE_AGENTS=learn) and the review server, each a real child
process on the test broker.

Checks the Prometheus conventions of issue #22 end to end: ``process_resident_memory_bytes``
(and ``python_gc_collections_total``) for each of the three jobs, no ``*_created`` series in
the whole TSDB, ``loopline_expected_workers`` from the worker's setting; then stops the
learner and sees ``LooplineLearnerDown`` (time constants of the shipped rules divided by
``FACTOR``) go firing.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from loopline.connectors.broker import free_port
from loopline.connectors.processes import WorkerProcess, loopline_exe, settings_env
from tests.integration.test_prometheus_alerts import FACTOR, INTERVAL, MIN_WINDOW, Prometheus, wait_until
from tests.unit.test_alert_rules import load_rules, scale_rules

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus (Debian package prometheus) is not installed")]

JOBS = ("loopline-worker", "loopline-learner", "loopline-review")


@dataclasses.dataclass
class ReviewServer:
    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_review_server(settings, log_path) -> ReviewServer:
    port = free_port()
    env = settings_env(settings.model_copy(update={"review_port": port, "data_dir": log_path.parent / "review"}))
    log = open(log_path, "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([loopline_exe(), "review-server"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)

    def healthy() -> bool:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:  # noqa: S310
                return r.status == 200
        except Exception:
            return False

    wait_until(healthy, 60, what="review server /healthz")
    return ReviewServer(proc, port)


def test_prometheus_scrapes_every_part(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"expected_workers": 2})
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    learner_settings = s.model_copy(update={"agents": "learn", "app_id": f"{s.topic_namespace}-learner",
                                            "web_port": free_port(), "data_dir": tmp_path / "learner"})
    learner = WorkerProcess(learner_settings, tmp_path / "learner.log").start()
    review = start_review_server(s, tmp_path / "review.log")
    rules = scale_rules(load_rules(), FACTOR, min_seconds=MIN_WINDOW)
    prom = Prometheus(tmp_path, rules, targets=[])
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text(encoding="utf-8"))
    config["scrape_configs"] = [
        {"job_name": "loopline-worker", "static_configs": [{"targets": [f"127.0.0.1:{s.web_port}"]}]},
        {"job_name": "loopline-learner", "static_configs": [{"targets": [f"127.0.0.1:{learner_settings.web_port}"]}]},
        {"job_name": "loopline-review", "static_configs": [{"targets": [f"127.0.0.1:{review.port}"]}]},
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    prom.start()
    try:
        wait_until(lambda: len(prom.query("up == 1")) == 3, 30, what="three targets up")
        wait_until(lambda: len(prom.query("process_resident_memory_bytes")) == 3, 15, what="RSS of each part")
        rss = {r["metric"]["job"]: float(r["value"][1]) for r in prom.query("process_resident_memory_bytes")}
        print("\nRSS per part (MB):", {job: round(v / 1e6, 1) for job, v in sorted(rss.items())})
        assert set(rss) == set(JOBS) and all(v > 10e6 for v in rss.values()), rss
        gc = {r["metric"]["job"] for r in prom.query("python_gc_collections_total")}
        assert gc == set(JOBS)
        created = prom.query('count by (job) ({__name__=~".+_created"})')
        assert created == [], created
        assert prom.scalar('max(loopline_expected_workers{job="loopline-worker"})') == 2
        # some counters exist at all (so "no _created" is not "nothing scraped")
        assert prom.query('count by (job) ({__name__=~"loopline_.+_total"})')
        # an evaluation before the first scrape may leave LooplineLearnerAbsent pending: it must clear
        wait_until(lambda: not [a for a in prom.alerts() if a["labels"]["alertname"].startswith("LooplineLearner")],
                   10, what="no learner alert while it runs")

        stopped = time.monotonic()  # stop() waits for the process to leave the group and exit
        learner.stop()
        print(f"learner stopped in {time.monotonic() - stopped:.1f} s")
        wait_until(lambda: any(a["labels"]["alertname"] == "LooplineLearnerDown" and a["state"] == "firing"
                               for a in prom.alerts()), 60, step=INTERVAL / 2, what="LooplineLearnerDown firing")
        print(f"LooplineLearnerDown firing {time.monotonic() - stopped:.1f} s after the learner was asked to stop "
              f"(for: 1m / {FACTOR} = {60 / FACTOR:g} s)")
    finally:
        prom.stop()
        review.stop()
        learner.stop()
        worker.stop()
