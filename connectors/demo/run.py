"""``loopline demo``: the whole loop on the embedded broker, with simulated traffic and reviewers.

1. starts the embedded broker, creates every topic, starts a worker (child process);
2. a seeded fraud-like stream (:mod:`loopline.connectors.simulator`) scored by a static
   producer model, with a feature shift and a concept drift at known points, is
   sent through :class:`~loopline.connectors.producer.PredictionProducer` at a paced rate;
3. an observer reads decisions, review tasks and dead letters; simulated
   reviewers (capacity, latency, label noise, one adversary) answer review tasks
   on a clock running ``--reviewer-speedup`` times faster than the event time decided so far and
   publish ``CorrectionEvent`` s to ``loopline.corrections`` as real tools do;
4. live progress every second, then a report (Markdown + PNG plots) in ``--out``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

from loopline.connectors.broker import EmbeddedBroker, create_topics, port_or_free
from loopline.connectors.demo.observer import Observer
from loopline.connectors.demo.timeline import Timeline, live_loop_line, loop_figures
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.connectors.simulator import FraudTraffic, SimulatedReviewers, default_reviewers
from loopline.processors.errors import BrokerError
from loopline.streams.kafka_security import kafka_security
from loopline.streams.settings import Settings

SHIFT_AT, DRIFT_AT = 0.4, 0.7
DEMO_POLICY = Path(str(resources.files("loopline.policies") / "demo.toml"))


def run_demo(args) -> int:
    from loopline.connectors.demo.report import write_report

    base = Settings()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = args.events
    duration = args.duration or max(20.0, n / 4000.0)
    broker = None
    if base.kafka_bootstrap:
        bootstrap = base.kafka_bootstrap
    else:
        try:
            broker = EmbeddedBroker(port=port_or_free(base.broker_port), log_path=out / "broker.log").start()
        except BrokerError as exc:
            print(f"loopline demo: {exc}", file=sys.stderr)
            return 2
        bootstrap = broker.bootstrap
    ns = base.topic_namespace if base.kafka_bootstrap is None else f"{base.topic_namespace}-demo-{int(time.time())}"
    settings = base.model_copy(update={
        "kafka_bootstrap": bootstrap, "topic_namespace": ns, "app_id": f"{ns}-worker",
        "web_port": port_or_free(base.web_port),
        "data_dir": Path(tempfile.mkdtemp(prefix="loopline-demo-")),
        "agents": "route,feedback,drift,learn",
        "policy_file": base.policy_file or DEMO_POLICY,
        # short buckets and a short reference: the demo compresses hours of traffic into minutes
        "drift_bucket_ms": 2000, "drift_reference_events": 4000, "drift_reference_outcomes": 300,
        "learn_positive_label": "fraud",
    })
    worker = None
    review = None
    try:
        create_topics(bootstrap, settings.topics.all(), settings.partitions, compacted=settings.topics.compacted(),
                      security=kafka_security(settings).librdkafka())
        print(f"[demo] broker {bootstrap}{' (embedded)' if broker else ''}; starting worker ...", flush=True)
        worker = WorkerProcess(settings, out / "worker.log").start()
        print(f"[demo] worker ready: {worker.base_url}/metrics", flush=True)
        from loopline.connectors.review.embedded import start_review_server

        review, password = start_review_server(settings, demo_login=True)
        print(f"[demo] review queue: {review.url}  (login: demo / {password})", flush=True)
        traffic = FraudTraffic(seed=args.seed, n_events=n, feature_shift_at=SHIFT_AT, concept_drift_at=DRIFT_AT,
                               events_per_second=n / duration, start_ms=int(time.time() * 1000))
        reviewers = SimulatedReviewers(seed=args.seed, reviewers=default_reviewers(adversarial=True))
        observer = Observer(settings, traffic, reviewers, n, speedup=args.reviewer_speedup)
        observer.start()
        sender = threading.Thread(target=_send, args=(settings, traffic, duration, observer), daemon=True)
        started = time.monotonic()
        sender.start()
        timeline = Timeline()
        _progress(observer, sender, started, n, timeout=duration + 120, worker=worker, timeline=timeline)
        _wait_for_joins(worker, observer, timeout=15)
        observer.stop()
        summary = observer.summary(time.monotonic() - started)
        summary.update(events=n, seed=args.seed, duration=duration, shift_at=int(n * SHIFT_AT),
                       drift_at=int(n * DRIFT_AT), joined=_metric(worker, 'loopline_corrections_total{outcome="joined"}'))
        try:
            stats = json.loads(worker.get("/stats"))
        except Exception as exc:  # the report says what is missing; the run still ends with its report
            stats = {"error": str(exc)}
        summary["loop"] = loop = loop_figures(timeline, summary, stats)
        summary["table_lines"] = [next((row for key, row in loop["rows"].items() if line.startswith(key)), line)
                                  for line in summary["table_lines"]]
        report = write_report(out, observer, summary, timeline=timeline, stats=stats)
        from loopline.connectors.demo.report_json import write_report_json  # issue #17: figures per event

        profiles = default_reviewers(adversarial=True)
        write_report_json(out, observer, summary, team={
            "reviewers": len(profiles), "reviewer_speedup": args.reviewer_speedup,
            "answers_per_simulated_hour": sum(p.capacity_per_minute for p in profiles) * 60})
        print(f"[demo] report: {report}", flush=True)
        for line in summary["table_lines"]:
            print(line)
        if args.keep_running:
            print(f"[demo] still running (Ctrl-C to stop): review queue {review.url} (login demo / {password}); "
                  f"LOOPLINE_KAFKA_BOOTSTRAP={bootstrap} LOOPLINE_TOPIC_NAMESPACE={ns}; "
                  f"metrics {worker.base_url}/metrics", flush=True)
            try:
                while worker.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        return 0 if summary["decided"] == summary["sent"] else 1
    finally:
        if review:
            review.stop()
        if worker:
            worker.stop()
        if broker:
            broker.stop()


def _metric(worker: WorkerProcess, series: str) -> float:
    for line in worker.get("/metrics").decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def _wait_for_joins(worker: WorkerProcess, observer: Observer, timeout: float) -> None:
    """Give the feedback agent a moment to join the last corrections (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _metric(worker, 'loopline_corrections_total{outcome="joined"}') >= observer.answered:
            return
        time.sleep(0.5)


def _send(settings: Settings, traffic: FraudTraffic, duration: float, observer: Observer) -> None:
    """Send the traffic at an even pace over ``duration`` seconds, stamping emitted_at with the wall clock."""
    rate = traffic.n_events / duration
    t0 = time.monotonic()
    sent = 0
    with PredictionProducer(settings, validate_events=False) as producer:
        for chunk in traffic.iter_chunks(chunk_size=2000):
            now_ms = int(time.time() * 1000)
            for e in chunk.events:
                e["emitted_at"] = now_ms
            observer.record_sent(chunk.events)
            producer.send_many(chunk.events)
            sent += len(chunk.events)
            observer.sent = sent
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    observer.sent = producer.delivered_events
    observer.sending_done = True


def _progress(observer: Observer, sender: threading.Thread, started: float, n: int, timeout: float,
              worker: WorkerProcess | None = None, timeline: Timeline | None = None) -> None:
    last_t, last_sent = started, 0
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        s = observer.snapshot()
        loop = ""
        if worker is not None and timeline is not None:
            try:
                timeline.scrape(worker.get("/metrics").decode(), s["sent"])
                loop = "  " + live_loop_line(timeline)
            except Exception:  # noqa: S110 (the next second's scrape retries)
                pass
        rate = (s["sent"] - last_sent) / (now - last_t)
        last_t, last_sent = now, s["sent"]
        tiers = s["tiers"]
        total = max(sum(tiers.values()), 1)
        print(f"[{now - started:5.0f}s] sent {s['sent']:>8,} ({rate:>7,.0f}/s)  decided {s['decided']:>8,}  "
              f"auto {tiers['auto'] / total:5.1%} review {tiers['review'] / total:5.1%} "
              f"escalate {tiers['escalate'] / total:5.1%}  queue analyst {s['queue']['review']:>5,} "
              f"escalation {s['queue']['escalate']:>4,}  answered {s['answered']:>6,}  "
              f"dead {s['dead']:>3}  model error {s['recent_error']:5.1%}{loop}", flush=True)
        if observer.sending_done and s["decided"] >= observer.sent:
            return
        if now - started > timeout:
            print("[demo] timed out waiting for decisions", flush=True)
            return

