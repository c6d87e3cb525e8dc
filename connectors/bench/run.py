"""``loopline bench``: throughput of Loopline's worker next to its baselines, on the same events.

Backlog rows: two topics of the embedded broker are pre-filled with the same N
predictions — as single ``PredictionEvent`` records and as columnar
``PredictionBatch`` records — and each consumer drains them in its own process:
the raw aiokafka and confluent-kafka decode ceilings, Faust ``take`` + decode,
Quix Streams (if ``.venv-quix`` exists), a naive per-event Faust agent, and
Loopline's route worker on batched and on single-event records.

Paced rows (``deployment.py``): the highest rate a deployment keeps up with over
``--trial-seconds`` of paced traffic — the default deployment (route, feedback
and drift agents in one worker, a learn worker, reviewers answering a share of
the tasks), and the route agent alone with one and two workers. Then p50/p99
produce→decision and feedback→model latency at 50% of the default deployment's
rate, and the RSS of a route worker and of a default worker after 100k and 1M
predictions. Prints a table (or ``--json`` rows) and writes ``out/bench/bench.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from loopline.connectors.bench.deployment import DEFAULT_AGENTS, Deployment, bench_events, sustained, trial
from loopline.connectors.broker import EmbeddedBroker, create_topics, free_port
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.wire.catalogue import SchemaCatalogue, schema_dir
from loopline.processors.wire.serde import DECISION_BATCH, AvroSerde
from loopline.streams.kafka_security import client_config
from loopline.streams.settings import Settings

HERE = Path(__file__).resolve().parent
QUIX_VENV = Path(os.environ.get("LOOPLINE_QUIX_VENV", ".venv-quix"))  # a separate venv: quixstreams pins other client versions


def _events(n: int, seed: int = 7) -> list[dict]:
    return bench_events(n, seed, start_ms=int(time.time() * 1000) - 60_000)


def _settings(bootstrap: str, ns: str, partitions: int, tmp: Path, agents: str = "route") -> Settings:
    """Bench workers run the route agent only (the hot path); one row adds the feedback agent."""
    return Settings(kafka_bootstrap=bootstrap, topic_namespace=ns, app_id=f"{ns}-w", web_port=free_port(),
                    data_dir=tmp / ns, partitions=partitions, agents=agents)


def _prefill(s: Settings, events: list[dict], batch_size: int) -> None:
    create_topics(s.kafka_bootstrap, s.topics.all(), s.partitions, compacted=s.topics.compacted())
    with PredictionProducer(s, batch_size=batch_size, validate_events=False, linger_ms=200) as p:
        p.send_many(events)
    if p.failed_events:
        raise RuntimeError(f"prefill lost {p.failed_events} events")


def _child(args: list[str], python: str = sys.executable, timeout: float = 300) -> dict | None:
    try:
        r = subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in reversed(r.stdout.splitlines()):
        if "{" in line:  # Faust may print terminal control codes before it
            return json.loads(line[line.index("{"):])
    return {"error": (r.stderr or r.stdout)[-400:]}


class ProcCPU(threading.Thread):
    """Samples a process's CPU seconds and RSS from /proc every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (unix time, cpu s, rss bytes)
        self._stop = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.05):
            try:
                stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(stat[11]) + int(stat[12])) / tick
                rss = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * page
            except (FileNotFoundError, ProcessLookupError, IndexError):
                return
            self.samples.append((time.time(), cpu, rss))

    def cpu_between(self, t0: float, t1: float) -> float:
        ts = np.array([s[0] for s in self.samples])
        cs = np.array([s[1] for s in self.samples])
        return float(np.interp(t1, ts, cs) - np.interp(t0, ts, cs))

    def stop(self) -> None:
        self._stop.set()


def _read_decisions(s: Settings, serde: AvroSerde, want: int, timeout: float, on_batch=None) -> tuple[int, int, int]:
    """Consume the decisions topic until ``want`` decisions; returns (count, first decided_at, last decided_at)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(client_config(s, {"group.id": f"bench-read-{time.time_ns()}", "enable.auto.commit": False,
                                   "fetch.wait.max.ms": 20}))
    c.assign([TopicPartition(s.topics.decisions, p, 0) for p in range(s.partitions)])
    n, lo, hi = 0, None, None
    deadline = time.monotonic() + timeout
    while n < want and time.monotonic() < deadline:
        for m in c.consume(1000, 0.2):
            if m.error():
                continue
            name, obj = serde.decode(m.value())
            k = len(obj["event_ids"]) if name == DECISION_BATCH else 1
            n += k
            lo = obj["decided_at"] if lo is None else min(lo, obj["decided_at"])
            hi = obj["decided_at"] if hi is None else max(hi, obj["decided_at"])
            if on_batch:
                on_batch(obj, time.time())
    c.close()
    return n, lo or 0, hi or 0


def _worker_row(s: Settings, serde: AvroSerde, n: int, tmp: Path, workers: int = 1,
                events: list[dict] | None = None) -> dict:
    """Throughput of ``workers`` worker processes, from their first to their last decision.

    With ``events`` the topic starts empty: all workers join the group first and
    the events are produced after (a worker joining a running group would add a
    rebalance pause to the measurement).
    """
    procs = [WorkerProcess(s.model_copy(update={"web_port": free_port()}), tmp / f"{s.topic_namespace}-w{i}.log")
             for i in range(workers)]
    samplers = []
    try:
        for p in procs:
            p.start()
            sampler = ProcCPU(p.pid)
            sampler.start()
            samplers.append(sampler)
        if events is not None:
            time.sleep(2 * s.session_timeout_seconds)  # let the group settle with every member
            threading.Thread(target=lambda: _send_all(s, events), daemon=True).start()
        got, lo, hi = _read_decisions(s, serde, n, timeout=300)
    finally:
        for sm in samplers:
            sm.stop()
        for p in procs:
            p.stop()
    if got < n or hi <= lo:
        return {"error": f"only {got} of {n} decisions"}
    span = (hi - lo) / 1000
    cpu = sum(sm.cpu_between(lo / 1000, hi / 1000) for sm in samplers)
    return {"rate": got / span, "cpu_us": cpu / got * 1e6, "records": got}


def _send_all(s: Settings, events: list[dict]) -> None:
    with PredictionProducer(s, batch_size=500, validate_events=False, linger_ms=200) as p:
        p.send_many(events)


def _rss(s: Settings, serde: AvroSerde, n: int, tmp: Path) -> dict:
    create_topics(s.kafka_bootstrap, s.topics.all(), s.partitions, compacted=s.topics.compacted())
    worker = WorkerProcess(s, tmp / "rss-worker.log").start()
    sampler = ProcCPU(worker.pid)
    sampler.start()
    marks: dict[int, int] = {}
    counted = {"n": 0}

    def on_batch(obj, t):
        counted["n"] += len(obj["event_ids"])
        for mark in (100_000, n):
            if mark not in marks and counted["n"] >= mark and sampler.samples:
                marks[mark] = sampler.samples[-1][2]

    def send():
        with PredictionProducer(s, validate_events=False) as p:
            for i in range(0, n, 50_000):
                p.send_many(_events(min(50_000, n - i), seed=100 + i))

    th = threading.Thread(target=send, daemon=True)
    th.start()
    try:
        _read_decisions(s, serde, n, timeout=600, on_batch=on_batch)
    finally:
        th.join(timeout=60)
        sampler.stop()
        worker.stop()
    return {f"rss_mb_at_{k}": v / 2**20 for k, v in sorted(marks.items())}


def run_bench(args) -> int:
    def say(line: str) -> None:  # progress; with --json it goes to stderr so stdout is the rows alone
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    n = 50_000 if args.quick else args.events
    parts = args.partitions
    out = Path("out/bench")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    serde = AvroSerde(SchemaCatalogue.load())
    rows: dict[str, dict] = {}
    with EmbeddedBroker(port=args.broker_port, log_path=out / "broker.log") as broker:
        b = broker.bootstrap
        say(f"[bench] embedded broker {b}; preparing {n:,} events ...")
        events = _events(n)
        single = _settings(b, "single", parts, tmp)
        batched = _settings(b, "batched", parts, tmp)
        _prefill(single, events, batch_size=1)
        _prefill(batched, events, batch_size=500)
        batched_rf = _settings(b, "batchedrf", parts, tmp, agents="route,feedback")
        _prefill(batched_rf, events, batch_size=500)  # every row reads and writes its own topics
        plan = [
            ("aiokafka getmany(5000) + decode [ceiling]", lambda: _child(["-m", "loopline.connectors.bench.peers", "aiokafka", b, single.topics.predictions, str(n), str(parts)])),
            ("confluent-kafka consume(5000) + decode", lambda: _child(["-m", "loopline.connectors.bench.peers", "confluent", b, single.topics.predictions, str(n), str(parts)])),
            ("Faust take(2000, 0.2) + decode", lambda: _child(["-m", "loopline.connectors.bench.peers", "faust-take", b, single.topics.predictions, str(n), str(parts)])),
            (PEER, lambda: _quix(b, single.topics.predictions, n)),
            ("naive Faust agent, per event, full work", lambda: _child(["-m", "loopline.connectors.bench.peers", "faust-naive", b, single.topics.predictions, str(min(n, 20_000)), str(parts)])),
            (ROUTE_ONLY, lambda: _worker_row(batched, serde, n, tmp)),
            ("Loopline full path, single-event records", lambda: _worker_row(single, serde, n, tmp)),
            ("Loopline batched, route + feedback agents in one process",
             lambda: _worker_row(batched_rf, serde, n, tmp)),
        ]
        if not args.quick:
            live1, live2 = _settings(b, "live1", parts, tmp), _settings(b, "live2", parts, tmp)
            for st in (live1, live2):
                create_topics(b, st.topics.all(), parts, compacted=st.topics.compacted())
            plan.append(("Loopline, batched, produced live, 1 worker",
                         lambda: _worker_row(live1, serde, n, tmp, workers=1, events=events)))
            plan.append(("Loopline, batched, produced live, 2 workers",
                         lambda: _worker_row(live2, serde, n, tmp, workers=2, events=events)))
        for name, fn in plan:
            say(f"[bench] {name} ...")
            rows[name] = fn() or {"error": "no result"}
            r = rows[name]
            say(f"        {r.get('rate', 0):,.0f}/s" if "rate" in r else f"        {r['error']}")
        full = rows[ROUTE_ONLY].get("rate")
        extra: dict = {}
        seconds = 15.0 if args.quick else args.trial_seconds
        paced = [  # (row, deployment, first rate tried)
            (DEFAULT_ROW, Deployment("default", DEFAULT_AGENTS, learner=True, answer_share=args.answer_share), 4000.0),
            (PACED_ROUTE_ONLY, Deployment("route1"), (full or 20_000) * 0.6),
            ("route only, 2 workers, paced (sustained)", Deployment("route2", workers=2), (full or 20_000) * 0.8),
        ]
        for name, dep, first in paced:
            say(f"[bench] {name}: paced {seconds:.0f} s trials ...")
            rows[name] = sustained(dep, b, first, seconds, tmp, serde, parts, max_trials=3 if args.quick else 6,
                                   progress=say)
        default_rate = rows[DEFAULT_ROW].get("rate")
        if default_rate:
            say("[bench] latency at 50% of the default deployment's sustained rate ...")
            extra["latency"] = trial(paced[0][1], b, default_rate * 0.5, seconds, tmp, serde, parts)
        if not args.quick:
            for agents in ("route", DEFAULT_AGENTS):
                say(f"[bench] RSS of a worker running {agents} after 100k and 1M predictions ...")
                extra.setdefault("rss", {})[agents] = _rss(_settings(b, f"rss{len(agents)}", parts, tmp, agents),
                                                           serde, 1_000_000, tmp)
    if args.json:
        for row in json_rows(rows, extra):
            print(json.dumps(row), flush=True)
    else:
        _print(rows, extra, n)
    (out / "bench.json").write_text(json.dumps({"events": n, "rows": rows, **extra}, indent=2))
    return 0


ROUTE_ONLY = "Loopline full path, batched records"
PEER = "Quix Streams sdf.update + decode [peer]"
DEFAULT_ROW = "default deployment, paced (sustained): route+feedback+drift worker, learn worker, reviewers answering"
PACED_ROUTE_ONLY = "route only, 1 worker, paced (sustained)"


def json_rows(rows: dict, extra: dict) -> list[dict]:
    """``loopline bench --json``: one object per row with the same keys (``None`` where a row does not measure it).

    ``ratio_to_route_only`` divides by the route-only worker's rate measured the same way: paced rows
    by the paced route-only worker's sustained rate, the others by the route-only worker draining a
    backlog of batched records; ``ratio_to_peer`` by Quix Streams' on the same records in the same run.

    >>> rows = {ROUTE_ONLY: {"rate": 50_000.0, "cpu_us": 12.0}, PEER: {"rate": 25_000.0, "cpu_us": 20.0},
    ...         PACED_ROUTE_ONLY: {"rate": 20_000.0, "cpu_us": 20.0, "p50_ms": 90.0, "p99_ms": 400.0, "rss_mib": 190.0,
    ...                            "trials": []},
    ...         DEFAULT_ROW: {"rate": 10_000.0, "cpu_us": 60.0, "p50_ms": 100.0, "p99_ms": 500.0, "rss_mib": 250.0,
    ...                       "trials": []},
    ...         "broken": {"error": "no result"}}
    >>> out = json_rows(rows, {"latency": {"rate": 5_000.0, "p50_ms": 80.0, "p99_ms": 300.0, "feedback_p99_s": 1.5},
    ...                        "rss": {"route": {"rss_mb_at_100000": 99.0}}})
    >>> [(r["name"][:20], r["ratio_to_route_only"], r["ratio_to_peer"]) for r in out][:4]
    [('Loopline full path, ', 1.0, 2.0), ('Quix Streams sdf.upd', 0.5, 1.0), ('route only, 1 worker', 1.0, 0.8), ('default deployment, ', 0.5, 0.4)]
    >>> out[4]["error"], out[5]["p99_ms"], out[5]["feedback_p99_s"], out[6]["rss_mib"]
    ('no result', 300.0, 1.5, 99.0)
    """
    base = rows.get(ROUTE_ONLY, {}).get("rate")
    base_paced = rows.get(PACED_ROUTE_ONLY, {}).get("rate")
    peer = rows.get(PEER, {}).get("rate")

    def row(name: str, rate: float | None = None, cpu: float | None = None, paced: bool = False, **more) -> dict:
        b = base_paced if paced else base
        return {"name": name, "predictions_per_s": rate, "cpu_us_per_prediction": cpu,
                "ratio_to_route_only": round(rate / b, 3) if rate and b else None,
                "ratio_to_peer": round(rate / peer, 3) if rate and peer else None,
                "p50_ms": None, "p99_ms": None, "rss_mib": None, **more}

    out = []
    for name, r in rows.items():
        if not r.get("rate"):
            out.append(row(name, error=r.get("error", "no result")))
        elif "trials" in r:  # a paced search: the figures of the fastest trial that kept up
            out.append(row(name, r["rate"], r["cpu_us"], paced=True, p50_ms=r["p50_ms"], p99_ms=r["p99_ms"],
                           rss_mib=r["rss_mib"], feedback_p50_s=r.get("feedback_p50_s"),
                           feedback_p99_s=r.get("feedback_p99_s")))
        else:
            out.append(row(name, r["rate"], r.get("cpu_us")))
    if "latency" in extra:
        lat = extra["latency"]
        out.append(row(f"produce-to-decision latency at {lat['rate']:,.0f}/s (50% of the default deployment)",
                       lat["rate"], lat.get("cpu_us"), paced=True, p50_ms=lat["p50_ms"], p99_ms=lat["p99_ms"],
                       feedback_p50_s=lat.get("feedback_p50_s"), feedback_p99_s=lat.get("feedback_p99_s")))
    for agents, marks in (extra.get("rss") or {}).items():
        for key, mib in marks.items():
            out.append(row(f"worker ({agents}) RSS after {int(key.rsplit('_', 1)[1]):,} predictions", rss_mib=mib))
    return out


def _quix(bootstrap: str, topic: str, n: int) -> dict:
    py = QUIX_VENV / "bin" / "python"
    if not py.exists():
        return {"error": "skipped: create it with `python3 -m venv .venv-quix && .venv-quix/bin/pip install quixstreams fastavro`"}
    return _child([str(HERE / "quix_decode.py"), bootstrap, topic, str(n),
                   str(schema_dir() / "prediction_event.avsc")], python=str(py))


def _print(rows: dict, extra: dict, n: int) -> None:
    """The rows of :func:`json_rows` as a Markdown table, then the paced trials and the RSS growth."""
    def f(v, fmt: str = "{:,.0f}") -> str:
        return "" if v is None else fmt.format(v)

    print(f"\n{n:,} predictions pre-filled for the backlog rows; paced rows: the highest rate kept up, "
          f"embedded broker, 4 partitions\n")
    print("| row | predictions/s | CPU µs/prediction | × route-only | × Quix Streams | p50 ms | p99 ms | "
          "feedback→model p99 s | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in json_rows(rows, extra):
        if r.get("error"):
            print(f"| {r['name']} | {r['error']} | | | | | | | |")
            continue
        print(f"| {r['name']} | {f(r['predictions_per_s'])} | {f(r['cpu_us_per_prediction'], '{:.1f}')} | "
              f"{f(r['ratio_to_route_only'], '{:.2f}×')} | {f(r['ratio_to_peer'], '{:.2f}×')} | {f(r['p50_ms'])} | "
              f"{f(r['p99_ms'])} | {f(r.get('feedback_p99_s'), '{:.2f}')} | {f(r['rss_mib'])} |")
    for name, r in rows.items():
        for t in r.get("trials", []):
            print(f"  {name[:40]}: {t['rate']:,.0f}/s {'kept up' if t['kept_up'] else 'fell behind'}, "
                  f"backlog {t['max_backlog_2nd_half']:,}, {t['cpu_us']:.0f} µs/prediction")
    for agents, marks in (extra.get("rss") or {}).items():
        vals = list(marks.values())
        if len(vals) == 2:
            print(f"worker ({agents}) RSS: {vals[0]:.0f} → {vals[1]:.0f} MiB ({vals[1] / vals[0]:.2f}×)")
