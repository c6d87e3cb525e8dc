"""Every alert of ops/prometheus/alerts.yml on a real Prometheus, fed by a synthetic exporter.

tests/integration/test_prometheus_alerts.py proves three alerts (dead-letter share, drift,
worker down) against a real worker. The other seven need inputs a short test cannot get
from a real pipeline (an hour-long SLA burn, a stuck agent, a slow learner, a day of
override history), so here Debian's Prometheus scrapes a small exporter the test controls:
one ``CollectorRegistry`` served on a free loopback port, holding the metrics Loopline
exports with their real names, labels and types (the real ``WorkerMetrics`` and learning
metrics, the other families re-declared and checked against the source). Same Prometheus
set-up, 1 s scrape/evaluation interval and rules scaled by ``FACTOR`` as the real-worker test.

The seven scenarios run concurrently on independent series (a tier, a topic, a stage or a
model each): healthy first (nothing may be pending), then the cause; each alert must go
pending within its detection window and fire ``for:`` later, then resolve within its
clearing window once the cause is removed. The measured delays are printed as a table
(``pytest -s``). The override-rate rule compares with the previous "day" (``[1d] offset
1h``, 72 min scaled): that history is written into Prometheus's data folder before it
starts (``promtool tsdb create-blocks-from openmetrics``), as a backfilled healthy day.
"""
from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from loopline.connectors.broker import free_port
from tests.integration.test_prometheus_alerts import (
    FACTOR,
    INTERVAL,
    JOB,
    MIN_WINDOW,
    AlertWatch,
    Prometheus,
    assert_no_alerts,
    wait_until,
)
from tests.unit.test_alert_rules import (
    alert_rules,
    duration_seconds,
    load_rules,
    run_promtool,
    scale_rules,
    without_parts,
)
from tests.unit.test_dashboard import instantiated_families, source_families

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                                 reason="prometheus/promtool (Debian package prometheus) are not installed")]

# the alerts driven by a real worker in test_prometheus_alerts.py
REAL_WORKER_ALERTS = ("LooplineDeadLetterShareHigh", "LooplineDriftActive", "LooplineWorkerDown")
# the "part going missing" group (up == 0 / absent() per job, workers below expected): this
# exporter is one target of one job, so they are left out here; promtool cases cover each
# (ops/prometheus/tests/parts.yml) and test_prometheus_scrape_parts.py stops a real learner
PREDICTIONS, TRAINING, CORRECTIONS = "loopline.predictions", "loopline.training", "loopline.corrections"
TICK = 0.2  # exporter update period, seconds


def scaled(text: str) -> float:
    """A production duration of the rules ('5m') in test seconds."""
    return max(MIN_WINDOW, duration_seconds(text) / FACTOR)


# ------------------------------------------------------------------ the exporter
class Exporter:
    """A worker's and a review server's metrics on one registry; a ticker thread plays the traffic.

    The scenarios only flip the attributes below; each tick (``TICK``) turns them into
    metric updates the way the real code paths do (counters grow, gauges are set)."""

    def __init__(self) -> None:
        from loopline.streams.learning.metrics import LearningMetrics
        from loopline.streams.metrics import WorkerMetrics

        r = self.registry = CollectorRegistry()
        self.worker = WorkerMetrics(r)
        self.latency = LearningMetrics.create(r).latency
        self.lag = Gauge("loopline_consumer_lag", "lag", ["topic", "partition"], registry=r)
        self.committed = Gauge("loopline_committed_offset", "committed", ["topic", "partition"], registry=r)
        self.depth = Gauge("loopline_review_queue_depth", "waiting", ["tier"], registry=r)
        self.past_due = Gauge("loopline_review_tasks_past_due", "past due", ["tier"], registry=r)
        self.override = Gauge("loopline_tier_override_rate", "override rate", ["model", "tier"], registry=r)
        self.outcomes = Counter("loopline_tier_outcomes", "outcomes", ["model", "tier", "outcome"], registry=r)
        self.auto_error = Gauge("loopline_auto_error_rate_estimate", "auto error", ["model"], registry=r)
        self.auto_budget = Gauge("loopline_auto_error_budget", "budget", ["model"], registry=r)
        self.drift_active = Gauge("loopline_drift_active", "drift", ["model", "signal"], registry=r)
        # driven by the scenarios
        self.stuck: set[str] = set()                                   # topics whose consumer is stuck
        self.queues = {"review": (10, 0), "escalate": (10, 0)}      # tier -> (waiting, past due)
        self.learn_seconds = 1.0                                       # correction -> learned
        self.orphans_per_tick = 0                                      # orphaned corrections
        self.override_rate = {("fraud", "review"): 0.10, ("fraud", "auto"): 0.04}
        self.auto_error_rate = 0.01
        self.publish_failing_since: float | None = None                # a worker retrying one batch
        self._offsets = {PREDICTIONS: 0, TRAINING: 0, CORRECTIONS: 1000}
        self._lag = {PREDICTIONS: 20, TRAINING: 2, CORRECTIONS: 0}
        self._ticks = 0
        self._stop = threading.Event()
        self.port = free_port()

    def tick(self) -> None:
        self._ticks += 1
        w = self.worker
        w.predictions.labels("fraud").inc(40)                        # 200 predictions/s ...
        dead = w.dead_letters.labels(PREDICTIONS, "bad_magic")
        dead.inc(1 if self._ticks % 25 == 0 else 0)                  # ... and 0.1% dead letters
        for topic, per_tick in ((PREDICTIONS, 40), (TRAINING, 4), (CORRECTIONS, 0)):
            if topic in self.stuck:
                self._lag[topic] += per_tick                         # records arrive, nothing commits
            else:
                self._offsets[topic] += per_tick
            self.lag.labels(topic, "0").set(self._lag[topic])
            self.committed.labels(topic, "0").set(self._offsets[topic])
        if PREDICTIONS not in self.stuck:
            w.last_batch_ts.set(time.time())
        for tier, (waiting, late) in self.queues.items():
            self.depth.labels(tier).set(waiting)
            self.past_due.labels(tier).set(late)
        w.corrections.labels("joined").inc(4)                       # 20 corrections/s joined
        w.corrections.labels("orphan").inc(self.orphans_per_tick)
        self.latency.labels("fraud", "learned").observe(self.learn_seconds)
        self.latency.labels("fraud", "in_use").observe(2.0)
        for (model, tier), rate in self.override_rate.items():
            self.override.labels(model, tier).set(rate)
            self.outcomes.labels(model, tier, "agree").inc(1)
            self.outcomes.labels(model, tier, "override").inc(1 if self._ticks % 5 == 0 else 0)
        self.auto_error.labels("fraud").set(self.auto_error_rate)
        self.auto_budget.labels("fraud").set(0.02)
        self.drift_active.labels("fraud", "features").set(0)
        since = self.publish_failing_since
        w.publish_stalled.set(0.0 if since is None else time.monotonic() - since + 0.001)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_at += TICK
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> Exporter:
        self.tick()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.thread = threading.Thread(target=self._run, daemon=True, name="exporter")
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if not hasattr(self, "server"):
            return
        self.thread.join(5)
        self.server.shutdown()
        self.server.server_close()


def backfill_override_history(prom: Prometheus, instance: str, rates: dict, seconds: float, step: int = 10) -> None:
    """Write ``seconds`` of healthy override-rate history (one sample per ``step``) ending now
    into ``prom``'s data folder, as series of the exporter's target (same job and instance)."""
    now = int(time.time()) - 1
    lines = ["# HELP loopline_tier_override_rate override rate", "# TYPE loopline_tier_override_rate gauge"]
    for (model, tier), rate in rates.items():
        labels = f'instance="{instance}",job="{JOB}",model="{model}",tier="{tier}"'
        lines += [f"loopline_tier_override_rate{{{labels}}} {rate} {t}" for t in range(now - int(seconds), now, step)]
    source = prom.workdir / "history.om"
    source.write_text("\n".join(lines + ["# EOF"]) + "\n", encoding="utf-8")
    result = run_promtool("tsdb", "create-blocks-from", "openmetrics", str(source), str(prom.workdir / "data"))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ scenarios
@dataclass
class Scenario:
    """One alert's cause. ``detect_s``: the scaled window the rule needs to see the cause;
    ``clear_s``: the one it needs to forget it; ``holds_off``: the rule cannot see it sooner."""

    alert: str
    labels: dict[str, str]
    start: Callable[[], None]
    stop: Callable[[], None]
    detect_s: float
    clear_s: float
    holds_off: bool = False
    watch: AlertWatch | None = field(default=None, repr=False)
    resolved_s: float | None = None

    def run(self, prom: Prometheus, rules: dict) -> Scenario:
        self.watch = AlertWatch(prom, self.alert, rules, labels=self.labels)
        self.start()
        self.watch.follow_to_firing(timeout=self.detect_s + self.watch.for_s + 10 * INTERVAL)
        self.stop()
        self.resolved_s = self.watch.follow_to_resolved(timeout=self.clear_s + 10 * INTERVAL)
        return self

    def check(self) -> None:
        w = self.watch
        pending = w.pending_at - w.cause_at
        assert pending <= self.detect_s + 4 * INTERVAL, f"{self.alert} pending after {pending:.1f}s"
        if self.holds_off:
            assert pending >= self.detect_s - 2 * INTERVAL, f"{self.alert} pending after {pending:.1f}s"
        assert w.for_s - INTERVAL / 2 <= w.firing_at - w.active_at <= w.for_s + 3 * INTERVAL, self.alert
        assert self.resolved_s <= self.clear_s + 4 * INTERVAL, f"{self.alert} resolved after {self.resolved_s:.1f}s"


def scenarios(exp: Exporter) -> list[Scenario]:
    def setter(obj, key, value):
        """A callable putting ``value`` at ``obj[key]`` (a dict) or ``obj.key`` (the exporter)."""
        if isinstance(obj, dict):
            return lambda: obj.__setitem__(key, value)
        return lambda: setattr(obj, key, value)

    return [
        # a routed-volume surge on a tier: the queue grows 10x; 20% (fast) / 9% (slow) of it past due;
        # removing the cause: the late tasks get answered while the queue stays large
        Scenario("LooplineReviewSLABurnFast", {"tier": "review"}, setter(exp.queues, "review", (100, 20)),
                 setter(exp.queues, "review", (100, 0)), detect_s=scaled("5m"), clear_s=scaled("5m")),
        Scenario("LooplineReviewSLABurnSlow", {"tier": "escalate"}, setter(exp.queues, "escalate", (100, 9)),
                 setter(exp.queues, "escalate", (100, 0)), detect_s=scaled("30m"), clear_s=scaled("30m")),
        # the route agent stops finishing batches (and committing) while predictions keep arriving
        Scenario("LooplineNoEventsProcessed", {}, lambda: exp.stuck.add(PREDICTIONS),
                 lambda: exp.stuck.discard(PREDICTIONS), detect_s=scaled("5m"), clear_s=MIN_WINDOW, holds_off=True),
        # a worker's producer keeps failing: the stalled-seconds gauge never falls back to 0
        Scenario("LooplinePublishStalled", {}, lambda: setattr(exp, "publish_failing_since", time.monotonic()),
                 setter(exp, "publish_failing_since", None), detect_s=scaled("5m"), clear_s=scaled("5m"),
                 holds_off=True),
        # the learner's partition stops committing while training records keep arriving
        Scenario("LooplinePartitionStalled", {"topic": TRAINING, "partition": "0"}, lambda: exp.stuck.add(TRAINING),
                 lambda: exp.stuck.discard(TRAINING), detect_s=scaled("10m"), clear_s=MIN_WINDOW, holds_off=True),
        # every correction takes 40 s (objective: p95 30 s) to be learned
        Scenario("LooplineFeedbackToModelSlow", {"model": "fraud", "stage": "learned"},
                 setter(exp, "learn_seconds", 40.0), setter(exp, "learn_seconds", 1.0),
                 detect_s=scaled("10m"), clear_s=scaled("10m")),
        # the review tier's override rate triples against the backfilled previous day
        Scenario("LooplineOverrideRateJump", {"model": "fraud", "tier": "review"},
                 setter(exp.override_rate, ("fraud", "review"), 0.30),
                 setter(exp.override_rate, ("fraud", "review"), 0.10), detect_s=MIN_WINDOW, clear_s=MIN_WINDOW),
        # the audit-based auto-tier error estimate goes to 5% (budget 2%)
        Scenario("LooplineAutoErrorAboveBudget", {"model": "fraud"}, setter(exp, "auto_error_rate", 0.05),
                 setter(exp, "auto_error_rate", 0.01), detect_s=MIN_WINDOW, clear_s=MIN_WINDOW),
        # a reviewer tool answers ids Loopline never routed: a third of the corrections are orphans
        Scenario("LooplineCorrectionsDeadLetterShareHigh", {}, setter(exp, "orphans_per_tick", 2),
                 setter(exp, "orphans_per_tick", 0), detect_s=scaled("5m"), clear_s=scaled("5m")),
    ]


def table(rows: list[Scenario], rules: dict) -> str:
    out = ["| Alert | `for:` (scaled) | pending after | firing after | resolved after |",
           "|---|---|---|---|---|"]
    measured = {s.alert: s for s in rows if s.resolved_s is not None}
    for rule in alert_rules(rules):
        name, for_s = rule["alert"], duration_seconds(rule.get("for", "0s"))
        s = measured.get(name)
        if s is None:
            out.append(f"| {name} | {for_s:g} s | (test_prometheus_alerts.py) | | |")
        else:
            w = s.watch
            out.append(f"| {name} | {for_s:g} s | {w.pending_at - w.cause_at:.1f} s | {w.firing_at - w.cause_at:.1f} s "
                       f"| {s.resolved_s:.1f} s |")
    return "\n".join(out)


# ------------------------------------------------------------------ the test
def test_exporter_families_are_loopline_metrics():
    """The exporter stands in for Loopline: every family it serves is one Loopline declares, same type."""
    def base(name: str) -> str:
        return name[:-len("_total")] if name.endswith("_total") else name

    real = {base(n): t for n, t in {**source_families(), **instantiated_families()}.items()}
    served = {f.name: f.type for f in Exporter().registry.collect()}
    assert {n: t for n, t in served.items() if real.get(base(n)) != t} == {}


def test_every_alert_fires_and_resolves_on_a_real_prometheus(tmp_path):
    rules = scale_rules(without_parts(load_rules()), FACTOR, min_seconds=MIN_WINDOW)
    exp = Exporter()
    plays = scenarios(exp)
    assert {r["alert"] for r in alert_rules(rules)} == {s.alert for s in plays} | set(REAL_WORKER_ALERTS)
    instance = f"127.0.0.1:{exp.port}"
    prom = Prometheus(tmp_path, rules, [instance])
    # the override rule's reference: a healthy "previous day" ([1d] offset 1h, scaled) of the same series
    backfill_override_history(prom, instance, exp.override_rate, scaled("1d") + scaled("1h") + 60)
    try:
        exp.start()
        prom.start()
        wait_until(lambda: prom.query(f'up{{job="{JOB}"}} == 1'), 30, what="the exporter scraped")
        history = prom.scalar(f'count_over_time(loopline_tier_override_rate{{tier="review"}}[{scaled("1d"):g}s] '
                              f'offset {scaled("1h"):g}s)')
        assert history and history > 100, f"backfilled history not in Prometheus: {history}"
        # healthy: once the (scaled) windows of a few minutes hold traffic, nothing may even be pending
        # (before that, changes() over a single sample is 0: LooplineNoEventsProcessed would be pending)
        time.sleep(scaled("5m"))
        assert_no_alerts(prom, 10)
        with ThreadPoolExecutor(len(plays)) as pool:
            done = [f.result() for f in [pool.submit(s.run, prom, rules) for s in plays]]
        for s in done:
            s.check()
        assert [a["labels"] for a in prom.alerts() if a["state"] == "firing"] == []
    finally:
        print(f"\nevery alert (scrape/evaluation every {INTERVAL:g}s, rule time constants / {FACTOR}; delays "
              "from the cause):\n" + table(plays, rules))
        prom.stop()
        exp.stop()
