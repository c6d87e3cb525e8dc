"""Fault injection for tests/integration/test_faults.py and benchmarks/faults.py.

A :class:`Cluster` of ``loopline worker`` processes in one consumer group, a
:class:`Traffic` thread producing predictions at a steady rate, a
:class:`Reviewers` thread answering every review task through the public
``ReviewerClient``, and :func:`tally`, which counts outcomes from the topics
themselves, read from offset 0 until silence (never from the broker's high
watermark).
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopline.connectors.broker import free_port
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.routing.router import iter_decisions
from loopline.processors.stats.tier_stats import TierStats
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaRegistry
from loopline.processors.wire.serde import AvroSerde
from tests.helpers import headers_dict, read_topic

SERDE = AvroSerde(SchemaRegistry.load())


class Cluster:
    """Workers ``w1..wn`` of one group, each with its own port, data dir and log (appended across restarts)."""

    #: the one sentence of a worker that gives up on a partition that stopped delivering (streams/stall_guard.py)
    STALL_EXIT = "stopped delivering records after a rebalance"

    def __init__(self, settings, tmp: Path, static_membership: bool = False) -> None:
        self.settings = settings
        self.tmp = tmp
        self.static_membership = static_membership  # each worker name is its group.instance.id
        self.workers: dict[str, WorkerProcess] = {}
        self.events: list[str] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()

    def supervise(self) -> None:
        """Restart a worker that exits 3 *because a partition stopped delivering*, as a supervisor does.

        That exit is the designed way out of that fault (streams/stall_guard.py); any other exit of
        a worker stays a failure of the test (``crashed``).
        """
        def loop() -> None:
            while not self._stop.wait(0.5):
                with self._lock:
                    for name, w in list(self.workers.items()):
                        if w.proc is None or w.proc.poll() != 3 or w._log is None:
                            continue
                        log = (self.tmp / f"{name}.log").read_text(errors="replace")
                        if self.STALL_EXIT in log.rsplit("control plane", 1)[-1]:
                            w.stop()
                            self.events.append(f"{name} exited 3 (a partition stopped delivering) and was "
                                               f"restarted, as its supervisor would")
                            self.start(name)

        threading.Thread(target=loop, name="supervisor", daemon=True).start()

    def start(self, name: str) -> WorkerProcess:
        w = self.workers.get(name)
        if w is None:
            update = {"web_port": free_port(), "data_dir": self.tmp / name}
            if self.static_membership:
                update["group_instance_id"] = f"{self.settings.app_id}-{name}"
            s = self.settings.model_copy(update=update)
            trace = os.environ.get("LOOPLINE_TEST_WORKER_TRACE")  # a script run instead of `loopline worker`
            argv = [sys.executable, trace] if trace else None
            w = self.workers[name] = WorkerProcess(s, self.tmp / f"{name}.log", append_log=True, argv=argv)
        started = time.monotonic()
        w.start(timeout=90)
        self.events.append(f"{name} ready in {time.monotonic() - started:.1f}s")
        return w

    def kill(self, name: str) -> None:
        w = self.workers[name]
        os.kill(w.pid, signal.SIGKILL)
        w.proc.wait(10)
        w.stop()  # closes the log handle
        self.events.append(f"{name} killed -9")

    def terminate(self, name: str) -> float:
        """SIGTERM and wait; returns the seconds the worker took to exit."""
        w = self.workers[name]
        started = time.monotonic()
        w.stop(timeout=60)
        took = time.monotonic() - started
        self.events.append(f"{name} SIGTERM exit in {took:.1f}s (code {w.proc.returncode})")
        return took

    def crashed(self) -> dict[str, int]:
        """Workers that exited on their own: name -> exit code (a worker we stopped is not counted)."""
        return {n: w.proc.returncode for n, w in self.workers.items()
                if w.proc is not None and w.proc.poll() is not None and w._log is not None}

    def counted(self) -> tuple[int, int]:
        """(predictions, answers) in the running workers' per-tier statistics, merged as `loopline stats` does."""
        parts = []
        for w in self.workers.values():
            if w.proc is not None and w.proc.poll() is None:
                state = json.loads(w.get("/stats?format=state"))["tier_stats_state"]
                if state:
                    parts.append(TierStats.from_state(state))
        models = TierStats.merged(parts).snapshot()["all_time"].values() if parts else []
        events = sum(m["events"] for m in models)
        answers = sum(t["outcomes"]["answered"] + t["outcomes"]["unlabelled"] for m in models for t in m["tiers"].values())
        return events, answers

    def stop_all(self) -> None:
        self._stop.set()
        for w in self.workers.values():
            w.stop()


class Traffic(threading.Thread):
    """Sends ``n`` predictions at ``rate`` per second (``emitted_at`` = send time) and records when each left."""

    def __init__(self, settings, n: int, rate: float, seed: int = 16, batch_size: int = 10) -> None:
        super().__init__(name="traffic", daemon=True)
        self.settings = settings
        self.events = make_events(n, seed=seed)
        self.rate = rate
        self.batch_size = batch_size
        self.sent_at: dict[str, float] = {}
        self.undelivered = 0
        self.error: BaseException | None = None

    @property
    def ids(self) -> set[str]:
        return {e["event_id"] for e in self.events}

    def run(self) -> None:
        try:
            with PredictionProducer(self.settings, batch_size=self.batch_size, linger_ms=20) as p:
                started = time.monotonic()
                for i, e in enumerate(self.events):
                    due = started + i / self.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    now = time.time()
                    e["emitted_at"] = int(now * 1000)
                    self.sent_at[e["event_id"]] = now
                    p.send(e)
                p.flush(60)
                self.undelivered = p.failed_events
        except BaseException as exc:  # reported by the test
            self.error = exc


class Reviewers(threading.Thread):
    """Answers every review task (both queues) once, with the public ReviewerClient, until stopped."""

    def __init__(self, settings) -> None:
        super().__init__(name="reviewers", daemon=True)
        self.settings = settings
        self.answered: dict[str, str] = {}  # correction_id -> event_id
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)

    def run(self) -> None:
        from loopline.connectors.review.client import ReviewerClient

        try:
            clients = [ReviewerClient(self.settings, reviewer_id=f"fault-{q}", queue=q)
                       for q in ("analyst", "escalation")]
            seen: set[str] = set()
            while not self._stop_event.is_set():
                for rc in clients:
                    for task in rc.poll(timeout=0.2, max_tasks=200):
                        if task["task_id"] in seen:
                            continue
                        seen.add(task["task_id"])
                        c = rc.submit(task, "approve")
                        self.answered[c["correction_id"]] = c["event_id"]
                    rc.commit()
            for rc in clients:
                rc.close()
        except BaseException as exc:
            self.error = exc


def locate(settings, event_ids: set[str]) -> list[tuple[int, int, int]]:
    """(partition, offset, events of the record) of the prediction records holding ``event_ids`` (diagnostics)."""
    found = []
    for m in read_topic(settings.kafka_bootstrap, settings.topics.predictions, lambda m: False, timeout=5):
        name, obj = SERDE.decode(m.value())
        ids = set(obj["event_ids"]) if "event_ids" in obj else {obj["event_id"]}
        if ids & event_ids:
            found.append((m.partition(), m.offset(), len(ids & event_ids)))
    return sorted(found)


@dataclass
class Tally:
    events_in: int
    decided: int
    lost: int
    duplicated: int
    dead_letters: dict[str, int]
    orphans: int
    answers: int = 0
    examples_distinct: int = 0
    examples_duplicated: int = 0
    examples_missing: int = 0
    max_latency_s: float = 0.0
    median_latency_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"events in {self.events_in}, lost {self.lost}, duplicated decisions {self.duplicated}, "
                f"dead letters {self.dead_letters or 0}, orphaned answers {self.orphans}, answers {self.answers}, "
                f"training examples distinct {self.examples_distinct} (copies {self.examples_duplicated}, "
                f"missing {self.examples_missing}), worst decision latency {self.max_latency_s:.1f}s "
                f"(median {self.median_latency_s:.2f}s)"
                + "".join(f"; {n}" for n in self.notes))


def tally(settings, traffic: Traffic, reviewers: Reviewers | None = None, timeout: float = 90) -> Tally:
    """Count outcomes from the topics (read from offset 0 until the expected set is there, then 3 s of silence)."""
    want = traffic.ids
    decided: dict[str, int] = {}
    total = 0
    first_latency: dict[str, float] = {}

    def enough(msgs) -> bool:
        nonlocal total
        for m in msgs[enough.seen:]:
            ts = m.timestamp()[1] / 1000.0
            for d in iter_decisions(SERDE, m.value()):
                total += 1
                decided[d["event_id"]] = decided.get(d["event_id"], 0) + 1
                sent = traffic.sent_at.get(d["event_id"])
                if sent is not None and d["event_id"] not in first_latency:
                    first_latency[d["event_id"]] = ts - sent
        enough.seen = len(msgs)
        return want <= decided.keys()

    enough.seen = 0
    enough(read_topic(settings.kafka_bootstrap, settings.topics.decisions, enough, timeout=timeout, settle=3.0))
    dls = read_topic(settings.kafka_bootstrap, settings.topics.dead_letter, lambda m: False, timeout=4)
    classes: dict[str, int] = {}
    for m in dls:
        c = headers_dict(m).get("loopline.error.class", "?")
        classes[c] = classes.get(c, 0) + 1
    lost = want - decided.keys()
    notes = [f"lost records (partition, offset, lost events): {locate(settings, lost)}"] if lost else []
    out = Tally(events_in=len(want), decided=len(want & decided.keys()), lost=len(want - decided.keys()),
                duplicated=total - len(decided), dead_letters=classes, orphans=classes.get("orphan", 0),
                max_latency_s=max(first_latency.values(), default=0.0),
                median_latency_s=statistics.median(first_latency.values()) if first_latency else 0.0, notes=notes)
    if reviewers is not None:
        expected = set(reviewers.answered)
        got: dict[str, int] = {}

        def all_examples(msgs) -> bool:
            for m in msgs[all_examples.seen:]:
                _, ex = SERDE.decode(m.value())
                got[ex["correction_id"]] = got.get(ex["correction_id"], 0) + 1
            all_examples.seen = len(msgs)
            return expected <= got.keys()

        all_examples.seen = 0
        all_examples(read_topic(settings.kafka_bootstrap, settings.topics.training, all_examples, timeout=timeout,
                                settle=3.0))
        out.answers = len(expected)
        out.examples_distinct = len(expected & got.keys())
        out.examples_missing = len(expected - got.keys())
        out.examples_duplicated = sum(got.values()) - len(got)
    return out
