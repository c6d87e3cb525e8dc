"""The review server's view of which keys the policy in force marks personal.

Workers publish a PolicyEvent on every policy change (``loopline policy apply``,
``POST /policy``, the file watch, overlays), carrying the ``personal_data`` of
the policy in force after the change (schema v2). :class:`PolicyMarksFeed`
tails the policy-events topic from its beginning with a group-less consumer and
keeps the newest event's marks, so a policy applied any way reaches the
review server's masking within about a second (poll interval 0.2 s).

Events written before the marks were stated carry none (they decode with empty
defaults and ``personal_data_known = false``) and are ignored, so they never
unmask anything. A current event states the marks in full, so a policy that
stops marking a key unmasks it (empty marks with ``personal_data_known``).
"""
from __future__ import annotations

import logging
import threading
import time

from loopline.processors.errors import LooplineError
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import POLICY_EVENT, AvroSerde

log = logging.getLogger("loopline.review")


class PolicyMarks:
    """The newest marks seen (thread-safe): ``for_model(name)`` -> frozenset of keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -1
        self._models: dict[str, frozenset] = {}
        self._default: frozenset = frozenset()
        self.events_seen = 0

    def update(self, event: dict) -> bool:
        """Take ``event``'s marks if it is newer than the marks held and carries any; True if taken."""
        models, default = event.get("personal_data") or {}, event.get("personal_data_default") or []
        if not event.get("personal_data_known") and not models and not default:
            return False  # an event from before the marks were stated: it says nothing about them
        with self._lock:
            self.events_seen += 1
            if event["changed_at"] < self._at:
                return False
            self._at = event["changed_at"]
            self._models = {m: frozenset(keys) for m, keys in models.items()}
            self._default = frozenset(default)
            return True

    def for_model(self, model: str) -> frozenset:
        with self._lock:
            return self._models.get(model, self._default)


class PolicyMarksFeed(threading.Thread):
    """Background thread: policy-events topic (every partition, from the start) -> :class:`PolicyMarks`."""

    def __init__(self, bootstrap: str, topic: str, marks: PolicyMarks, serde: AvroSerde | None = None,
                 security: dict | None = None) -> None:
        super().__init__(name="review-policy-marks", daemon=True)
        self.bootstrap = bootstrap
        self.security = dict(security or {})  # librdkafka SASL/TLS entries (streams.kafka_security)
        self.topic = topic
        self.marks = marks
        self.serde = serde or AvroSerde(SchemaCatalogue.load())
        self._stop_event = threading.Event()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        self.join(timeout)

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        while not self._stop_event.is_set():
            consumer = None
            try:
                consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "loopline-review-policy-marks",
                                     "enable.auto.commit": False, "fetch.wait.max.ms": 100, **self.security})
                md = consumer.list_topics(self.topic, timeout=10)
                parts = md.topics[self.topic].partitions if self.topic in md.topics else {}
                if not parts:
                    raise LooplineError(f"topic {self.topic} has no partitions yet")
                consumer.assign([TopicPartition(self.topic, p, 0) for p in parts])
                while not self._stop_event.is_set():
                    for m in consumer.consume(500, 0.2):
                        if m.error() is None and m.value() is not None:
                            self._take(m)
            except Exception as exc:  # the marks held stay in force; retry
                log.warning("review server: policy events unreadable (%s); retrying in 2 s", type(exc).__name__)
                time.sleep(2)
            finally:
                if consumer is not None:
                    consumer.close()

    def _take(self, m) -> None:
        try:
            name, event = self.serde.decode(m.value())
        except LooplineError as exc:
            log.warning("review server: skipped policy event %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(),
                        exc.error_class)
            return
        if name == POLICY_EVENT:
            self.marks.update(event)
