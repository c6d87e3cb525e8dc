"""A real Prometheus expands each alert's runbook_url from the external label ``runbook_base``.

Debian's promtool (2.42) cannot set external labels in rule unit tests, so this test
runs Debian's ``prometheus`` on loopback with the real alerts.yml (time constants
divided by 20, :func:`tests.unit.test_alert_rules.scale_rules`) and a worker target
that does not answer: ``LooplineWorkerDown`` fires within seconds, and its
``runbook_url`` must be ``<runbook_base>/runbooks.md#runbook-looplineworkerdown``.
No broker is needed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from loopline.connectors.broker import free_port
from tests.unit.test_alert_rules import load_rules, scale_rules

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus (Debian package prometheus) is not installed")]

BASE = "https://docs.example.org/loopline/v0.2"


def _alerts(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=2) as r:
        return json.loads(r.read())["data"]["alerts"]


def test_runbook_url_is_built_from_the_external_label(tmp_path):
    port, dead = free_port(), free_port()  # nothing listens on `dead`: up == 0
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(scale_rules(load_rules(), 20, min_seconds=1)), encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s",
                   "external_labels": {"runbook_base": BASE}},
        "rule_files": ["rules.yml"],
        "scrape_configs": [{"job_name": "loopline-worker", "static_configs": [{"targets": [f"127.0.0.1:{dead}"]}]}],
    }), encoding="utf-8")
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            firing: list[dict] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not firing:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                time.sleep(0.5)
                try:
                    firing = [a for a in _alerts(port)
                              if a["labels"]["alertname"] == "LooplineWorkerDown" and a["state"] == "firing"]
                except OSError:
                    continue  # not listening yet
            assert firing, "LooplineWorkerDown did not fire within 60 s"
            assert firing[0]["annotations"]["runbook_url"] == f"{BASE}/runbooks.md#runbook-looplineworkerdown"
        finally:
            proc.terminate()
            proc.wait(30)
