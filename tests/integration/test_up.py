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
        assert first.startswith("Loopline is up. Kafka: 127.0.0.1:") and "(embedded; data kept in " in first
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


class Up:
    """`loopline up` in a child process with its own ports and data folder, and what a user would check."""

    def __init__(self, tmp_path, storage: str) -> None:
        import threading

        from loopline.processors.wire.catalogue import SchemaCatalogue
        from loopline.processors.wire.serde import AvroSerde
        from loopline.streams.settings import Settings

        self.port, self.broker_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
        env.update(LOOPLINE_WEB_PORT=str(self.port), LOOPLINE_DATA_DIR=str(tmp_path / "data"),
                   LOOPLINE_BROKER_PORT=str(self.broker_port), LOOPLINE_BROKER_STORAGE=storage)
        self.proc = subprocess.Popen([loopline_exe(), "up"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()
        self.settings = Settings(kafka_bootstrap=f"127.0.0.1:{self.broker_port}")
        self.serde = AvroSerde(SchemaCatalogue.load())
        self.wait_for("`loopline up` printed its review address", lambda: len(self.lines) >= 4)
        self.review_url = self.lines[3].split()[1]
        self.wait_for("the worker became ready", lambda: _ready(self.port))

    def wait_for(self, what, check, timeout=90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"{what} within {timeout:.0f}s; output:\n" + "".join(self.lines))

    def decisions(self) -> list[dict]:
        """Every decision on the topic (read from the start until silence)."""
        from loopline.processors.routing.router import iter_decisions
        from tests.helpers import read_topic

        msgs = read_topic(self.settings.kafka_bootstrap, self.settings.topics.decisions, lambda m: False, timeout=8)
        return [d for x in msgs for d in iter_decisions(self.serde, x.value())]

    def decide(self, events) -> None:
        from loopline.connectors.producer import PredictionProducer
        from loopline.processors.routing.router import iter_decisions
        from tests.helpers import read_topic

        want = {e["event_id"] for e in events}
        with PredictionProducer(self.settings, batch_size=100) as p:
            p.send_many(events)
        msgs = read_topic(self.settings.kafka_bootstrap, self.settings.topics.decisions,
                          lambda m: want <= {d["event_id"] for x in m for d in iter_decisions(self.serde, x.value())},
                          timeout=90)
        got = {d["event_id"] for x in msgs for d in iter_decisions(self.serde, x.value())}
        assert want <= got, f"{len(want - got)} predictions not decided; output:\n" + "".join(self.lines[-60:])

    def committed_through(self) -> bool:
        """Whether the worker's committed offsets cover every record on the predictions topic."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": self.settings.app_id,
                      "enable.auto.commit": False})
        try:
            tps = [TopicPartition(self.settings.topics.predictions, p) for p in range(self.settings.partitions)]
            committed = c.committed(tps, timeout=10)
            ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        finally:
            c.close()
        return all(end == 0 or t.offset >= end for t, end in zip(committed, ends))

    def queue(self, tier: str = "review") -> float:
        return _metric(self.review_url, "loopline_review_queue_depth", f'{{tier="{tier}"}}')

    def kill_broker(self) -> None:
        brokers = _pids(f"tcp://127.0.0.1:{self.broker_port}")
        assert len(brokers) == 1, brokers
        os.kill(brokers[0], signal.SIGKILL)
        self.wait_for("the broker was started again", lambda: any("starting it again" in x for x in self.lines))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        assert not port_in_use("127.0.0.1", self.broker_port), "the embedded broker outlived `loopline up`"


def test_up_starts_a_stopped_broker_again_and_retires_the_review_tasks_it_took_along(tmp_path):
    """With memory storage (LOOPLINE_BROKER_STORAGE=memory) the broker keeps nothing. When it dies, `loopline
    up` starts it again on the same address, creates the topics and restarts the worker, which decides new
    predictions without a manual restart; the review server retires the tasks of the old broker (counted,
    not answerable)."""
    from loopline.processors.testing import make_events

    up = Up(tmp_path, "memory")
    try:
        up.decide(make_events(500, seed=21))
        up.wait_for("review tasks reached the review server", lambda: up.queue() > 0)
        waiting = up.queue()
        up.kill_broker()
        up.wait_for("the review server retired the old broker's tasks",
                    lambda: _metric(up.review_url, "loopline_review_dropped_tasks_total", '{reason="broker_gone"}') > 0)
        assert _metric(up.review_url, "loopline_review_dropped_tasks_total", '{reason="broker_gone"}') >= waiting
        up.wait_for("the worker became ready again", lambda: _ready(up.port))
        up.decide(make_events(500, seed=22))  # the new broker's predictions are decided: no manual restart
        assert up.proc.poll() is None
    finally:
        up.stop()


def test_up_keeps_the_brokers_data_across_a_broker_kill_and_a_restart_of_up(tmp_path):
    """LOOPLINE_BROKER_STORAGE=disk (the default): the embedded broker's topics, committed offsets and cluster id are on disk.
    After kill -9 of the broker the worker reconnects by itself and decides new predictions, and no review task
    is retired; after `loopline up` is stopped and started on the same data folder, every decision and every
    committed offset is still there, the review server still holds its tasks and the new worker resumes from
    the committed offsets."""
    from loopline.processors.testing import make_events

    first, second, third = make_events(500, seed=31), make_events(500, seed=32), make_events(500, seed=33)
    up = Up(tmp_path, "disk")
    try:
        assert "data kept in" in up.lines[0]
        up.decide(first)
        up.wait_for("review tasks reached the review server", lambda: up.queue() > 0)
        waiting = up.queue()
        up.kill_broker()
        up.decide(second)  # the worker reconnected by itself
        assert _metric(up.review_url, "loopline_review_dropped_tasks_total", '{reason="broker_gone"}') == 0
        assert up.queue() >= waiting
        assert up.proc.poll() is None
        up.wait_for("the decided offsets were committed", lambda: up.committed_through())
    finally:
        up.stop()
    up = Up(tmp_path, "disk")  # the same data folder
    try:
        assert up.committed_through(), "committed offsets were lost"
        assert up.queue() >= waiting
        up.decide(third)  # a worker started onto the kept offsets decides what comes next
        ids = [d["event_id"] for d in up.decisions()]
        assert {e["event_id"] for e in first + second + third} <= set(ids)
        again = len(ids) - len(set(ids))
        print(f"\n[durable broker] {len(set(ids))} predictions decided, {again} decided more than once")
        assert again < 500, "the worker started over instead of resuming from its committed offsets"
        assert _metric(up.review_url, "loopline_review_dropped_tasks_total", '{reason="broker_gone"}') == 0
    finally:
        up.stop()


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
