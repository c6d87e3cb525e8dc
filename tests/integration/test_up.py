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


def _metric(url: str, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + labels + " "):
                return float(line.split()[-1])
    return 0.0


def test_up_starts_a_stopped_broker_again_and_retires_the_review_tasks_it_took_along(tmp_path):
    """The embedded broker keeps everything in memory. When it dies, `loopline up` starts it again on the
    same address, creates the topics and restarts the worker, which decides new predictions without a
    manual restart; the review server retires the tasks of the old broker (counted, not answerable)."""
    import threading

    from loopline.connectors.producer import PredictionProducer
    from loopline.processors.routing.router import iter_decisions
    from loopline.processors.testing import make_events
    from loopline.processors.wire.catalogue import SchemaCatalogue
    from loopline.processors.wire.serde import AvroSerde
    from loopline.streams.settings import Settings
    from tests.helpers import read_topic

    port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(LOOPLINE_WEB_PORT=str(port), LOOPLINE_DATA_DIR=str(tmp_path / "data"),
               LOOPLINE_BROKER_PORT=str(broker_port))
    proc = subprocess.Popen([loopline_exe(), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{broker_port}")
    serde = AvroSerde(SchemaCatalogue.load())

    def wait_for(what, check, timeout=90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"{what} within {timeout:.0f}s; output:\n" + "".join(lines))

    def decided(events) -> None:
        want = {e["event_id"] for e in events}
        with PredictionProducer(settings, batch_size=100) as p:
            p.send_many(events)
        msgs = read_topic(settings.kafka_bootstrap, settings.topics.decisions,
                          lambda m: want <= {d["event_id"] for x in m for d in iter_decisions(serde, x.value())},
                          timeout=90)
        got = {d["event_id"] for x in msgs for d in iter_decisions(serde, x.value())}
        assert want <= got, f"{len(want - got)} predictions not decided"

    try:
        wait_for("`loopline up` printed its review address", lambda: len(lines) >= 4)
        review_url = lines[3].split()[1]
        wait_for("the worker became ready", lambda: _ready(port))
        decided(make_events(500, seed=21))
        wait_for("review tasks reached the review server",
                 lambda: _metric(review_url, "loopline_review_queue_depth", '{tier="review"}') > 0)
        waiting = _metric(review_url, "loopline_review_queue_depth", '{tier="review"}')
        brokers = _pids(f"tcp://127.0.0.1:{broker_port}")
        assert len(brokers) == 1, brokers
        os.kill(brokers[0], signal.SIGKILL)
        wait_for("the broker was started again", lambda: any("starting it again" in x for x in lines))
        wait_for("the review server retired the old broker's tasks",
                 lambda: _metric(review_url, "loopline_review_dropped_tasks_total", '{reason="broker_gone"}') > 0)
        assert _metric(review_url, "loopline_review_dropped_tasks_total", '{reason="broker_gone"}') >= waiting
        wait_for("the worker became ready again", lambda: _ready(port))
        decided(make_events(500, seed=22))  # the new broker's predictions are decided: no manual restart
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not port_in_use("127.0.0.1", broker_port), "the embedded broker outlived `loopline up`"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return json.loads(r.read()).get("ready") is True
    except Exception:
        return False


def _pids(needle: str) -> list[int]:
    """Processes whose command line contains ``needle``."""
    found = []
    for d in os.scandir("/proc"):
        if d.name.isdigit():
            try:
                with open(f"/proc/{d.name}/cmdline", "rb") as f:
                    if needle.encode() in f.read().replace(b"\0", b" "):
                        found.append(int(d.name))
            except OSError:
                continue
    return found
