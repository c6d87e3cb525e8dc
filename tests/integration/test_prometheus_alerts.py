"""A real Prometheus (Debian's ``prometheus`` binary) scraping a real worker fed by the simulator.

Prometheus runs on loopback with a 1 s scrape and evaluation interval and a copy of
ops/prometheus/alerts.yml whose time constants are divided by ``FACTOR``
(:func:`tests.unit.test_alert_rules.scale_rules`: ``for: 5m`` -> ``15s``, ``rate(x[2m])``
-> ``rate(x[6s])``; thresholds are untouched). Through its HTTP API
(``/api/v1/alerts``) the test checks, for each scenario, that the alert goes pending
then firing within the expected number of evaluation intervals, and resolves after the
cause ends; nothing fires while the pipeline is healthy. The measured delays are printed
(``pytest -s``) and listed in docs/operations.md.

Scenarios: dead-letter share (a feeder mixes undecodable records into the simulator's
predictions), worker down (the worker is stopped, then started again), and the
consumer-lag gauges (committed offsets equal the broker's high watermarks once the
input pauses).
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from loopline.connectors.broker import free_port
from loopline.connectors.processes import WorkerProcess
from tests.unit.test_alert_rules import alert_rules, duration_seconds, load_rules, scale_rules, without_parts

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus (Debian package prometheus) is not installed")]

REPO = Path(__file__).resolve().parents[2]
FACTOR = 20          # production minutes -> test seconds
MIN_WINDOW = 3.0     # no scaled window below 3 scrape intervals
INTERVAL = 1.0       # scrape and evaluation interval, seconds
RATE = 200           # simulated predictions per second
JOB = "loopline-worker"
# drift agent knobs (read from the environment until Settings declares them): 1 s event-time
# buckets, a reference of 2,000 events (10 s of traffic), summaries every 0.5 s
DRIFT_ENV = {"LOOPLINE_DRIFT_BUCKET_MS": "1000", "LOOPLINE_DRIFT_REFERENCE_EVENTS": "2000",
             "LOOPLINE_DRIFT_PUBLISH_INTERVAL_SECONDS": "0.5"}


# ------------------------------------------------------------------ worker with the lag gauges
def run_worker_with_lag() -> None:
    """Child-process entry: ``loopline worker`` plus :func:`loopline.streams.lag.register_lag_metrics`
    (until streams/app.py registers it itself; then the second registration is refused)."""
    from faust.worker import Worker as FaustWorker

    from loopline.streams.app import create_worker
    from loopline.streams.lag import register_lag_metrics
    from loopline.streams.settings import Settings

    settings = Settings()
    worker = create_worker(settings)
    try:
        register_lag_metrics(worker, worker.app)
    except ValueError:  # already registered by the app
        pass
    FaustWorker(worker.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False).execute_from_commandline()


def LagWorker(settings, log_path) -> WorkerProcess:  # noqa: N802 - reads like the class it replaces
    """A worker child running :func:`run_worker_with_lag`, with ``DRIFT_ENV`` in its environment."""
    code = "from tests.integration.test_prometheus_alerts import run_worker_with_lag; run_worker_with_lag()"
    return WorkerProcess(settings, log_path, extra_env=DRIFT_ENV, argv=[sys.executable, "-c", code], cwd=REPO,
                         append_log=True)


# ------------------------------------------------------------------ simulator feed
class Feeder(threading.Thread):
    """Sends the simulator's predictions at ``RATE`` per second; ``bad_share`` of the records
    it adds are undecodable (dead-letter class bad_magic); ``paused`` stops everything."""

    def __init__(self, settings) -> None:
        super().__init__(daemon=True, name="feeder")
        from confluent_kafka import Producer

        from loopline.connectors.producer import PredictionProducer
        from loopline.connectors.simulator.traffic import FraudTraffic

        self.settings = settings
        self.base = FraudTraffic(seed=5, n_events=10, n_train=5_000)
        self.phase = 0
        self.chunks = self._chunks(shifted=False)
        self.producer = PredictionProducer(settings, batch_size=50, linger_ms=20)
        self.raw = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
        self.bad_share = 0.0
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.sent = 0
        self.bad_sent = 0
        self.error: BaseException | None = None

    def _chunks(self, shifted: bool):
        """A fresh stream whose event time starts now (a drift detector buckets by event time)."""
        from loopline.connectors.simulator.traffic import FraudTraffic

        self.phase += 1
        traffic = FraudTraffic(seed=5 + self.phase, n_events=10_000_000, feature_shift_at=0 if shifted else None,
                               start_ms=int(time.time() * 1000), events_per_second=RATE, model=self.base.model,
                               id_prefix=f"p{self.phase}", truth_capacity=10_000)
        return traffic.iter_chunks(chunk_size=RATE // 10)

    def switch(self, shifted: bool) -> None:
        """From the next tick on: covariate-shifted traffic (``shifted``) or the usual traffic."""
        self.chunks = self._chunks(shifted)

    def run(self) -> None:
        try:
            tick = time.monotonic()
            while not self.stopped.is_set():
                tick += 0.1
                time.sleep(max(0.0, tick - time.monotonic()))
                if self.paused.is_set():
                    continue
                events = next(self.chunks).events
                self.producer.send_many(events)
                self.sent += len(events)
                n_bad = round(len(events) * self.bad_share / (1 - self.bad_share)) if self.bad_share else 0
                for i in range(n_bad):
                    self.raw.produce(self.settings.topics.predictions, value=b"\x7bnot avro " + str(i).encode(),
                                     key=f"bad-{self.bad_sent + i}".encode())
                self.bad_sent += n_bad
                self.raw.poll(0)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def settle(self) -> None:
        self.producer.flush(30)
        self.raw.flush(30)

    def close(self) -> None:
        self.stopped.set()
        self.join(10)
        self.producer.close(30)
        self.raw.flush(30)


# ------------------------------------------------------------------ Prometheus
class Prometheus:
    """Debian's prometheus on 127.0.0.1:<free port>, with ``rules`` and static worker targets."""

    def __init__(self, workdir: Path, rules: dict, targets: list[str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        config = {
            "global": {"scrape_interval": f"{INTERVAL:g}s", "scrape_timeout": f"{INTERVAL:g}s",
                       "evaluation_interval": f"{INTERVAL:g}s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        self._log = open(self.workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.workdir / "prometheus.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready")

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def wait_until(condition, timeout: float, step: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def rfc3339(text: str) -> float:
    """Prometheus's activeAt ('2026-01-01T10:00:00.123456789Z') as epoch seconds."""
    from datetime import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=__import__("datetime").timezone.utc)
    return base.timestamp() + (float("0." + frac) if frac else 0.0)


class AlertWatch:
    """Follows one alert through pending -> firing -> resolved, timing each step from ``cause_at``."""

    def __init__(self, prom: Prometheus, name: str, rules: dict, labels: dict[str, str] | None = None) -> None:
        self.prom = prom
        self.name = name
        self.labels = labels or {}  # only the alerts with these label values (concurrent scenarios)
        rule = next(r for r in alert_rules(rules) if r["alert"] == name)
        self.for_s = duration_seconds(rule.get("for", "0s"))
        self.cause_at = time.time()
        self.pending_at = self.firing_at = self.active_at = None

    def state(self) -> str | None:
        states = [a for a in self.prom.alerts() if a["labels"]["alertname"] == self.name
                  and all(a["labels"].get(k) == v for k, v in self.labels.items())]
        if not states:
            return None
        self.active_at = min(rfc3339(a["activeAt"]) for a in states)  # when Prometheus made it pending
        return "firing" if any(a["state"] == "firing" for a in states) else states[0]["state"]

    def follow_to_firing(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            now = time.time()
            if state == "pending" and self.pending_at is None:
                self.pending_at = now
            if state == "firing":
                self.firing_at = now
                self.pending_at = min(self.pending_at or now, self.active_at)
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not fire within {timeout:.0f}s (pending at {self.pending_at})")

    def follow_to_resolved(self, timeout: float) -> float:
        ended = time.time()
        wait_until(lambda: self.state() is None, timeout, step=0.1, what=f"{self.name} to resolve")
        return time.time() - ended

    def report(self, resolved_s: float) -> str:
        return (f"{self.name}: pending (activeAt) after {self.pending_at - self.cause_at:.1f}s, firing after "
                f"{self.firing_at - self.cause_at:.1f}s (for: {self.for_s:g}s = "
                f"{math.ceil(self.for_s / INTERVAL)} evaluations; pending->firing "
                f"{self.firing_at - self.pending_at:.1f}s), resolved {resolved_s:.1f}s after the cause ended")


def assert_no_alerts(prom: Prometheus, seconds: float) -> None:
    """Nothing pending or firing during ``seconds`` of healthy traffic."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        active = [(a["labels"]["alertname"], a["state"], a["activeAt"]) for a in prom.alerts()]
        if active:
            parts = {q: prom.query(q) for q in (
                'loopline_consumer_lag', f'changes(loopline_last_batch_timestamp_seconds[{5 * 60 / FACTOR:g}s])',
                f'loopline_last_batch_timestamp_seconds[{5 * 60 / FACTOR:g}s]')}
            raise AssertionError(f"alerts while the pipeline is healthy: {active}; {parts}")
        time.sleep(0.5)


def broker_high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{time.time_ns()}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


# ------------------------------------------------------------------ the test
def test_alerts_fire_and_resolve_on_a_real_prometheus(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"agents": "route,drift"})
    rules = scale_rules(without_parts(load_rules()), FACTOR, min_seconds=MIN_WINDOW)
    worker = LagWorker(s, tmp_path / "worker.log").start()
    feeder = Feeder(s)
    prom = Prometheus(tmp_path, rules, [f"{s.web_host}:{s.web_port}"])
    delays: list[str] = []
    try:
        prom.start()
        feeder.start()
        # healthy: predictions flow, the lag gauges exist for the predictions partitions, nothing alerts
        wait_until(lambda: (prom.scalar(f'sum(rate(loopline_predictions_total[{MIN_WINDOW:g}s]))') or 0) > RATE / 2,
                   60, what="predictions in Prometheus")
        wait_until(lambda: len(prom.query(f'loopline_committed_offset{{topic="{s.topics.predictions}"}}')) == s.partitions,
                   30, what="a committed-offset series per predictions partition")
        # every window of the (scaled) rules holds data from here on: nothing may even be pending
        time.sleep(max(duration_seconds(w) for w in ("5m", "2m")) / FACTOR)
        assert_no_alerts(prom, 15)

        # consumer lag: pause the input; once committed, offsets equal the broker's high watermarks
        feeder.paused.set()
        feeder.settle()
        high = broker_high_watermarks(s.kafka_bootstrap, s.topics.predictions)
        topic = s.topics.predictions

        def caught_up():
            committed = {int(r["metric"]["partition"]): int(float(r["value"][1]))
                         for r in prom.query(f'loopline_committed_offset{{topic="{topic}"}}')}
            lag = prom.scalar(f'sum(loopline_consumer_lag{{topic="{topic}"}})')
            return committed == high and lag == 0
        wait_until(caught_up, 30, what=f"committed offsets == high watermarks {high}")
        assert sum(high.values()) > 0
        feeder.switch(shifted=False)
        feeder.paused.clear()

        # dead-letter share: 10% undecodable records for a while, then clean again
        watch = AlertWatch(prom, "LooplineDeadLetterShareHigh", rules)
        feeder.bad_share = 0.10
        watch.follow_to_firing(timeout=watch.for_s + 30)
        feeder.bad_share = 0.0
        resolved = watch.follow_to_resolved(timeout=60)
        window = duration_seconds("2m") / FACTOR
        assert watch.pending_at - watch.cause_at <= window + 4 * INTERVAL
        assert watch.for_s - INTERVAL / 2 <= watch.firing_at - watch.active_at <= watch.for_s + 3 * INTERVAL
        assert resolved <= window + 4 * INTERVAL
        delays.append(watch.report(resolved))
        assert feeder.error is None, feeder.error

        # drift: covariate-shifted traffic (amount +1 sd, a new country) until the alert fires, then normal again
        watch = AlertWatch(prom, "LooplineDriftActive", rules)
        feeder.switch(shifted=True)
        watch.follow_to_firing(timeout=watch.for_s + 90)
        feeder.switch(shifted=False)
        resolved = watch.follow_to_resolved(timeout=120)
        assert watch.pending_at - watch.cause_at <= 30  # detection: a few 1 s buckets of shifted traffic
        assert watch.for_s - INTERVAL / 2 <= watch.firing_at - watch.active_at <= watch.for_s + 3 * INTERVAL
        delays.append(watch.report(resolved))
        assert feeder.error is None, feeder.error

        # worker down: stop it while predictions keep arriving, then start it again
        watch = AlertWatch(prom, "LooplineWorkerDown", rules)
        worker.stop()
        watch.cause_at = time.time()  # the worker is down from here (its SIGTERM stop takes 1.5-3 s)
        watch.follow_to_firing(timeout=watch.for_s + 30)
        assert watch.for_s - INTERVAL / 2 <= watch.firing_at - watch.active_at <= watch.for_s + 3 * INTERVAL
        assert watch.pending_at - watch.cause_at <= 2 * INTERVAL + 1.0  # the next scrape fails at once
        restart = threading.Thread(target=worker.start, daemon=True)
        restart.start()

        def metrics_answer():
            try:
                return worker.get("/metrics") is not None
            except Exception:
                return False
        wait_until(metrics_answer, 90, step=0.05, what="the restarted worker's /metrics")
        resolved = watch.follow_to_resolved(timeout=30)
        assert resolved <= 3 * INTERVAL + 1.0
        delays.append(watch.report(resolved))
        restart.join(90)
        assert [a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"] == []
    finally:
        print("\nmeasured alert delays (scrape and evaluation every "
              f"{INTERVAL:g}s, rule time constants / {FACTOR}):\n  " + "\n  ".join(delays))
        feeder.close()
        prom.stop()
        worker.stop()
    assert feeder.error is None, feeder.error
