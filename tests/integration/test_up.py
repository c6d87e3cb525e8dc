"""`loopline up`: embedded broker + topics + worker in one command, stopped cleanly by SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from loopline.connectors.broker import free_port, port_in_use
from loopline.connectors.processes import loopline_exe

pytestmark = pytest.mark.integration


def test_up_serves_health_and_metrics_then_stops(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(LOOPLINE_WEB_PORT=str(port), LOOPLINE_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen([loopline_exe(), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("Loopline is up. Kafka: 127.0.0.1:") and "(embedded)" in first
        lines = [proc.stdout.readline() for _ in range(3)]
        review_url = lines[2].split()[1]
        assert lines[2].strip().startswith("review") and review_url.startswith("http://127.0.0.1:")
        broker_port = int(first.split("127.0.0.1:")[1].split()[0])
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    ready = json.loads(r.read())
                    break
            except Exception:
                time.sleep(0.3)
        assert ready and ready["ready"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            assert json.loads(r.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            assert "text/plain" in r.headers["Content-Type"]
            assert "# TYPE loopline_input_records_total counter" in r.read().decode()
        try:  # the review server answers, and refuses an anonymous API call
            urllib.request.urlopen(review_url + "/api/queues", timeout=5)
            raise AssertionError("anonymous API call was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not port_in_use("127.0.0.1", broker_port), "the embedded broker outlived `loopline up`"
