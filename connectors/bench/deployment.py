"""Paced trials of a deployment as users run it: what rate does it sustain, at what latency and CPU?

A *trial* starts the deployment's worker processes on fresh topics, produces
batched predictions at a fixed rate for ``seconds`` (``emitted_at`` stamped at
send), lets a simulated team answer a share of the review tasks as they appear
(corrections keyed by ``event_id``, like the review server's), and reads the
decisions back. It *kept up* when the backlog (predictions sent but not yet
decided) stayed under two seconds' worth of traffic through the second half of
the trial and every prediction was decided within ten seconds of the last send.

:func:`sustained` searches the highest rate that keeps up (doubling, then
bisecting geometrically), so the figure is a rate the deployment holds, not a
burst it drains from a backlog.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loopline.connectors.broker import create_topics, free_port
from loopline.connectors.demo.timeline import Timeline
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.connectors.review.feed import correction_for, producer_config
from loopline.processors.testing import make_events
from loopline.processors.wire.names import CORRECTION, DECISION_BATCH, REVIEW_TASK
from loopline.processors.wire.serde import AvroSerde
from loopline.streams.kafka_security import client_config
from loopline.streams.settings import Settings

#: the default deployment: route, feedback and drift agents in one worker, the learner in its own
DEFAULT_AGENTS = "route,feedback,drift"


@dataclass(frozen=True)
class Deployment:
    name: str
    agents: str = "route"
    workers: int = 1
    learner: bool = False  # a separate ``learn`` worker, as the deployment guide runs it
    answer_share: float = 0.0  # share of review tasks the simulated team answers


def bench_events(n: int, seed: int, start_ms: int | None = None) -> list[dict]:
    """The bench's predictions: ``make_events`` with ~85% of confidences in the auto tier."""
    evs = make_events(n, seed=seed, start_ms=start_ms)
    rnd = np.random.default_rng(seed)
    conf = np.where(rnd.random(n) < 0.85, 0.9 + 0.1 * rnd.random(n), 0.5 + 0.4 * rnd.random(n))
    for e, c in zip(evs, conf.tolist()):  # ~85% auto-approved, like the demo's traffic
        e["confidence"] = c
    return evs


def _answers(share: float, event_id: str) -> bool:
    """The same tasks are answered in every run (a hash of the event id, not a random draw)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=4).digest(), "big") < share * 2**32


class _Reviewers(threading.Thread):
    """Answers ``share`` of the review tasks as they arrive (70% approve, 30% override)."""

    def __init__(self, s: Settings, serde: AvroSerde, share: float) -> None:
        super().__init__(daemon=True)
        self.s, self.serde, self.share = s, serde, share
        self.tasks = self.answered = 0
        self._halt = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        c = Consumer(client_config(self.s, {"group.id": f"bench-reviewers-{time.time_ns()}",
                                            "enable.auto.commit": False, "fetch.wait.max.ms": 20}))
        c.assign([TopicPartition(t, p, 0) for t in (self.s.topics.review_analyst, self.s.topics.review_escalation)
                  for p in range(self.s.partitions)])
        prod = Producer(producer_config(str(self.s.kafka_bootstrap)))
        while not self._halt.is_set():
            for m in c.consume(500, 0.1):
                if m.error():
                    continue
                name, task = self.serde.decode(m.value())
                if name != REVIEW_TASK:
                    continue
                self.tasks += 1
                if not _answers(self.share, task["event_id"]):
                    continue
                label = task["prediction"]["predicted_label"]
                flip = _answers(0.3, "o" + task["event_id"])
                corr = correction_for(task, "bench-reviewer", "override" if flip else "approve",
                                      ("legit" if label == "fraud" else "fraud") if flip else label,
                                      None, 5.0, "bench", time.time())
                prod.produce(self.s.topics.corrections, self.serde.encode(CORRECTION, corr),
                             key=task["event_id"].encode())
                self.answered += 1
            prod.poll(0)
        prod.flush(10)
        c.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(20)


def _cpu_seconds(pid: int | None) -> float:
    import os

    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int | None) -> float:
    import os

    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trial(d: Deployment, bootstrap: str, rate: float, seconds: float, tmp: Path, serde: AvroSerde,
          partitions: int = 4, seed: int = 21) -> dict:
    """One paced trial of ``d`` at ``rate`` predictions/s; see the module doc for *kept up*."""
    from confluent_kafka import Consumer, TopicPartition

    ns = f"{d.name}-{int(rate)}-{time.time_ns() % 10**8}"
    base = Settings(kafka_bootstrap=bootstrap, topic_namespace=ns, app_id=f"{ns}-w", partitions=partitions,
                    agents=d.agents, data_dir=tmp / ns)
    create_topics(bootstrap, base.topics.all(), partitions, compacted=base.topics.compacted())
    procs = [WorkerProcess(base.model_copy(update={"web_port": free_port(), "data_dir": tmp / ns / f"w{i}"}),
                           tmp / f"{ns}-w{i}.log") for i in range(d.workers)]
    if d.learner:
        procs.append(WorkerProcess(base.model_copy(update={"web_port": free_port(), "agents": "learn",
                                                           "app_id": f"{ns}-learn", "data_dir": tmp / ns / "learn"}),
                                   tmp / f"{ns}-learn.log"))
    for p in procs:
        p.settings.data_dir.mkdir(parents=True, exist_ok=True)
    n = int(rate * seconds)
    events = bench_events(n, seed)
    reviewers = _Reviewers(base, serde, d.answer_share) if d.answer_share > 0 else None
    sent = [0]
    decided: list[tuple[float, int]] = []  # (monotonic time, decisions so far)
    lat: list[np.ndarray] = []
    try:
        for p in procs:
            p.start()
        time.sleep(2 * base.session_timeout_seconds if d.workers > 1 else 1.0)  # every member in the group
        cpu0 = [_cpu_seconds(p.pid) for p in procs]
        if reviewers:
            reviewers.start()
        c = Consumer(client_config(base, {"group.id": f"bench-read-{time.time_ns()}", "enable.auto.commit": False,
                                          "fetch.wait.max.ms": 20}))
        c.assign([TopicPartition(base.topics.decisions, p, 0) for p in range(partitions)])
        t0 = time.monotonic()
        sender = threading.Thread(target=_send_paced, args=(base, events, rate, t0, sent), daemon=True)
        sender.start()
        got, samples = 0, []  # samples: (seconds since start, backlog)
        deadline = t0 + seconds + 10
        while got < n and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                if m.error():
                    continue
                name, obj = serde.decode(m.value())
                if name == DECISION_BATCH:
                    em = np.frombuffer(obj["emitted_at"], dtype="<i8")
                    got += len(em)
                    lat.append(time.time() * 1000 - em)
                else:
                    got += 1
            now = time.monotonic()
            if now - t0 <= seconds:
                samples.append((now - t0, sent[0] - got))
            decided.append((now, got))
        t_end = time.monotonic()
        cpu_each = [_cpu_seconds(p.pid) - c0 for p, c0 in zip(procs, cpu0)]
        cpu = sum(cpu_each)
        rss = [_rss_mib(p.pid) for p in procs[:d.workers]]
        timelines = []
        for p in procs[:d.workers]:  # the route workers: feedback-to-model stage=in_use
            timelines.append(Timeline())
            timelines[-1].scrape(p.get("/metrics").decode(), got)
        c.close()
        sender.join(5)
    finally:
        if reviewers and reviewers.is_alive():
            reviewers.stop()
        for p in procs:
            p.stop()
    backlog_2nd_half = max((b for t, b in samples if t >= seconds / 2), default=0)
    kept_up = got >= n and backlog_2nd_half <= 2 * rate
    all_lat = np.concatenate(lat) if lat else np.array([np.nan])
    fb = _feedback_quantiles(timelines)
    return {"deployment": d.name, "rate": rate, "seconds": seconds, "sent": sent[0], "decided": got,
            "kept_up": bool(kept_up), "max_backlog_2nd_half": int(backlog_2nd_half),
            "drain_s": round(t_end - t0 - seconds, 2),
            "cpu_us": cpu / max(got, 1) * 1e6,
            "cpu_us_by_process": [round(c / max(got, 1) * 1e6, 1) for c in cpu_each],  # workers, then the learner
            "p50_ms": float(np.percentile(all_lat, 50)),
            "p99_ms": float(np.percentile(all_lat, 99)), "rss_mib": max(rss) if rss else None,
            "tasks": reviewers.tasks if reviewers else 0, "answers": reviewers.answered if reviewers else 0, **fb}


def _feedback_quantiles(timelines: list[Timeline]) -> dict:
    """Feedback-to-model p50/p99 (correction reviewed_at -> in use by a route worker; the worst worker), from
    each route worker's /metrics."""
    out = {}
    for q in (0.5, 0.99):
        vals = [v for tl in timelines
                if (v := tl.histogram_quantile("loopline_feedback_to_model_seconds", q, stage="in_use")) is not None]
        out[f"feedback_p{int(q * 100)}_s"] = max(vals) if vals else None
    return out


def _send_paced(s: Settings, events: list[dict], rate: float, t0: float, sent: list[int]) -> None:
    step = max(50, int(rate / 50))  # 50 sends a second
    with PredictionProducer(s, batch_size=500, validate_events=False, linger_ms=20) as p:
        for i in range(0, len(events), step):
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
            chunk = events[i:i + step]
            now = int(time.time() * 1000)
            for e in chunk:
                e["emitted_at"] = now
            p.send_many(chunk)
            sent[0] = i + len(chunk)


def sustained(d: Deployment, bootstrap: str, start: float, seconds: float, tmp: Path, serde: AvroSerde,
              partitions: int = 4, max_trials: int = 6, progress=print) -> dict:
    """The highest paced rate ``d`` keeps up with (within 25%), with that trial's figures and every trial."""
    lo: dict | None = None
    hi: float | None = None
    rate, trials = start, []
    for _ in range(max_trials):
        r = trial(d, bootstrap, rate, seconds, tmp, serde, partitions)
        trials.append(r)
        progress(f"        {d.name} at {rate:,.0f}/s: {'kept up' if r['kept_up'] else 'fell behind'} "
                 f"(backlog {r['max_backlog_2nd_half']:,}, {r['cpu_us']:.0f} µs/prediction, p99 {r['p99_ms']:.0f} ms)")
        if r["kept_up"]:
            lo = r
        else:
            hi = rate
        if lo is not None and hi is not None and hi / lo["rate"] < 1.25:
            break
        rate = (lo["rate"] * 2 if hi is None else math.sqrt(lo["rate"] * hi)) if lo else \
            (hi / 2 if hi else rate)
    best = lo or {"rate": 0.0, "error": f"did not keep up at {min(t['rate'] for t in trials):,.0f}/s"}
    return {**best, "trials": trials}

