"""The demo's observer: reads what the worker publishes and plays the reviewers.

Per-event facts are kept in numpy arrays sized by ``--events`` (bounded by the
run), per-second counts in a dict keyed by second (bounded by the duration).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np

from loopline.connectors.simulator import FraudTraffic, SimulatedReviewers
from loopline.processors.routing.router import iter_decisions
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, AvroSerde
from loopline.streams.kafka_security import client_config
from loopline.streams.settings import Settings

TIER_CODE = {"auto": 0, "review": 1, "escalate": 2}


def event_index(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


class Observer(threading.Thread):
    def __init__(self, settings: Settings, traffic: FraudTraffic, reviewers: SimulatedReviewers, n: int,
                 speedup: float = 60.0) -> None:
        super().__init__(name="loopline-demo-observer", daemon=True)
        from confluent_kafka import Consumer, Producer, TopicPartition

        self.settings = settings
        self.traffic = traffic
        self.reviewers = reviewers
        self.speedup = speedup
        self.serde = AvroSerde(SchemaCatalogue.load())
        t = settings.topics
        self.consumer = Consumer(client_config(settings, {"group.id": f"{t.namespace}-demo-observer",
                                                          "enable.auto.commit": False, "fetch.wait.max.ms": 50}))
        parts = range(settings.partitions)
        self.consumer.assign([TopicPartition(topic, p, 0) for topic in
                              (t.decisions, t.review_analyst, t.review_escalation, t.dead_letter) for p in parts])
        self.producer = Producer(client_config(settings, {"partitioner": "murmur2_random", "log_level": 4,
                                                          "enable.idempotence": True, "linger.ms": 20}))
        self.n = n
        self.tier = np.full(n, -1, dtype=np.int8)
        self.confidence = np.zeros(n, dtype=np.float32)
        self.pred_fraud = np.zeros(n, dtype=bool)
        self.served_fraud = np.zeros(n, dtype=bool)  # the label the decision served (a promoted challenger's or the producer's)
        self.by_challenger = np.zeros(n, dtype=bool)
        self.true_fraud = np.zeros(n, dtype=bool)
        self.amount = np.zeros(n, dtype=np.float32)
        self.reviewed = np.full(n, -1, dtype=np.int8)  # -1 none, 0 legit, 1 fraud
        self.per_second: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])  # auto, review, esc, tasks, answered
        self.sent = 0
        self.sending_done = False
        self.decided = 0
        self.answered = 0
        self.dead = 0
        self.tasks = 0
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()
        self.t0 = time.time()
        self.t0_ms = int(self.t0 * 1000)
        self.event_ms = self.t0_ms  # the newest event time decided: the reviewers' clock follows it

    # ------------------------------------------------------------------ input side
    def record_sent(self, events: list[dict]) -> None:
        for e in events:
            i = event_index(e["event_id"])
            self.amount[i] = e["features_numeric"].get("amount", 0.0)
            self.true_fraud[i] = self.traffic.true_label(e["event_id"]) == "fraud"

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        t = self.settings.topics
        while not self._stop_evt.is_set():
            msgs = self.consumer.consume(2000, 0.2)
            with self._lock:
                for m in msgs:
                    if m.error() is not None:
                        continue
                    topic = m.topic()
                    if topic == t.decisions:
                        self._on_decisions(m.value())
                    elif topic == t.dead_letter:
                        self.dead += 1
                    else:
                        self._on_task(m.value())
                self._answer()
            self.producer.poll(0)
        self.producer.flush(10)
        self.consumer.close()

    def _sim_now(self) -> int:
        """The reviewers' clock: ``speedup`` x the event time decided so far (not the wall clock, so a worker
        that falls behind on a loaded machine gives the team no extra time per event)."""
        return self.t0_ms + int(max(self.event_ms - self.t0_ms, 0) * self.speedup)

    def _second(self) -> int:
        return int(time.time() - self.t0)

    def _on_decisions(self, value: bytes) -> None:
        sec = self.per_second[self._second()]
        for d in iter_decisions(self.serde, value):
            i = event_index(d["event_id"])
            code = TIER_CODE[d["tier"]]
            self.tier[i] = code
            self.confidence[i] = d["confidence"]
            self.pred_fraud[i] = d["predicted_label"] == "fraud"
            self.served_fraud[i] = (d.get("served_label") or d["predicted_label"]) == "fraud"
            self.event_ms = max(self.event_ms, int(d["emitted_at"]))
            self.by_challenger[i] = d.get("served_by", "producer") != "producer"
            sec[code] += 1
            self.decided += 1

    def _on_task(self, value: bytes) -> None:
        _, task = self.serde.decode(value)
        truth = self.traffic.true_label(task["event_id"])
        if truth is None:
            return
        self.reviewers.submit(task, truth, now_ms=self._sim_now())
        self.tasks += 1
        self.per_second[self._second()][3] += 1

    def _answer(self) -> None:
        corrections = self.reviewers.advance(self._sim_now())
        if not corrections:
            return
        topic = self.settings.topics.corrections
        now_ms = int(time.time() * 1000)
        for c in corrections:
            c["reviewed_at"] = now_ms  # reviewers work on a fast clock; the answer is published now
            self.producer.produce(topic, key=c["event_id"].encode(), value=self.serde.encode(CORRECTION, c))
            if c["action"] in ("approve", "override") and c["corrected_label"] is not None:
                self.reviewed[event_index(c["event_id"])] = 1 if c["corrected_label"] == "fraud" else 0
        self.answered += len(corrections)
        self.per_second[self._second()][4] += len(corrections)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=15)
        producer, self.producer = self.producer, None  # release librdkafka before the broker goes away
        if producer is not None:
            producer.flush(5)
            del producer

    # ------------------------------------------------------------------ views
    def snapshot(self) -> dict:
        with self._lock:
            counts = np.bincount(self.tier[self.tier >= 0], minlength=3)
            decided_idx = np.flatnonzero(self.tier >= 0)
            recent = decided_idx[-5000:]
            err = float((self.pred_fraud[recent] != self.true_fraud[recent]).mean()) if len(recent) else 0.0
            backlog = self.reviewers.backlog_by_tier()
            return {"sent": self.sent, "decided": self.decided, "answered": self.answered, "dead": self.dead,
                    "tiers": {"auto": int(counts[0]), "review": int(counts[1]), "escalate": int(counts[2])},
                    "queue": {"review": int(backlog.get("review", 0)) + int(backlog.get("auto", 0)),
                              "escalate": int(backlog.get("escalate", 0))},
                    "recent_error": err}

    def summary(self, elapsed: float) -> dict:
        from loopline.connectors.demo.metrics import effectiveness

        with self._lock:
            eff = effectiveness(self)
        eff.update(sent=self.sent, decided=self.decided, answered=self.answered, tasks=self.tasks, dead=self.dead,
                   elapsed=elapsed)
        return eff
