"""Kafka edges of the review server: a consumer thread filling the store, a correction publisher.

The consumer (group ``<namespace>-review-server``) stores each ReviewTask before storing its
offset, so a restart never loses a task (redeliveries are deduplicated by task_id). Every
``CLUSTER_CHECK_SECONDS`` it checks the Kafka cluster id: the embedded broker gets a new id at
each start (memory storage: a restart loses everything), and the tasks of the old one are
retired (``ReviewStore.broker_cluster``). Records
that do not decode as ReviewTasks are counted and skipped: the route agent's dead-letter
topic is where bad predictions go; a bad task here is a bug upstream, not reviewer work.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from loopline.connectors.review.settings import QUEUE_OF_TIER, QUEUES, ReviewSettings
from loopline.connectors.review.store import ReviewStore
from loopline.processors.errors import LooplineError
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, REVIEW_TASK, AvroSerde

log = logging.getLogger(__name__)
#: How often the feed compares the Kafka cluster id with the one its stored tasks came from.
CLUSTER_CHECK_SECONDS = 5.0


def producer_config(bootstrap: str, security: dict | None = None) -> dict:
    """The correction publisher's librdkafka configuration; ``security`` from ``KafkaSecurity.librdkafka()``."""
    return {"bootstrap.servers": bootstrap, "enable.idempotence": True, "partitioner": "murmur2_random",
            "linger.ms": 5, **(security or {})}


def feed_consumer_config(settings: ReviewSettings) -> dict:
    """The task feed's librdkafka configuration (group ``<namespace>-review-server``, manual offset store)."""
    return {
        "bootstrap.servers": settings.bootstrap, "group.id": settings.group_id,
        "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
        "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
        "fetch.wait.max.ms": 100, **settings.kafka_security,
    }


def correction_for(task: dict, reviewer_id: str, action: str, corrected_label: str | None, note: str | None,
                   review_seconds: float, source: str, now: float, correction_id: str | None = None) -> dict:
    """The CorrectionEvent answering ``task`` (``action`` is the wire enum: approve|override|unsure|escalate).

    ``correction_id`` defaults to a random id; the review server passes :func:`stable_correction_id`.
    """
    return {
        "correction_id": correction_id or uuid.uuid4().hex, "event_id": task["event_id"], "model_name": task["model_name"],
        "model_version": task["model_version"], "reviewer_id": reviewer_id, "action": action,
        "corrected_label": corrected_label, "tier": task["tier"], "reviewed_at": int(now * 1000),
        "review_seconds": float(max(0.0, review_seconds)), "note": note or None, "source": source,
    }


def stable_correction_id(task_id: str, reviewer_id: str, claimed_at: float | None) -> str:
    """The same id for every submit of one reviewer under one lease (32 hex characters).

    A resubmit after a crash between publishing and recording the answer
    publishes the same ``correction_id`` again, which the feedback join drops as
    a duplicate: one answer counts once.
    """
    import hashlib

    return hashlib.sha256(f"{task_id}\x00{reviewer_id}\x00{claimed_at!r}".encode()).hexdigest()[:32]


class CorrectionPublisher:
    """Publishes CorrectionEvents keyed by event_id (murmur2, idempotent) and waits for the broker."""

    def __init__(self, bootstrap: str, topic: str, serde: AvroSerde | None = None,
                 security: dict | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.serde = serde or AvroSerde(SchemaCatalogue.load())
        self._producer = Producer(producer_config(bootstrap, security))
        self._lock = threading.Lock()

    def publish(self, correction: dict, timeout: float = 15.0) -> None:
        """Encode, send and wait for the acknowledgement; raises ``LooplineError`` when not delivered."""
        value = self.serde.encode(CORRECTION, correction)
        errors: list = []
        with self._lock:
            if self._producer is None:
                raise LooplineError("the correction publisher is closed")
            self._producer.produce(self.topic, key=correction["event_id"].encode(), value=value,
                                   on_delivery=lambda err, msg: errors.append(err) if err else None)
            remaining = self._producer.flush(timeout)
        if remaining or errors:
            raise LooplineError(f"correction {correction['correction_id']} was not delivered: "
                                f"{errors[0] if errors else 'broker did not acknowledge in time'}")

    def close(self) -> None:
        """Flush and release the client (a dropped librdkafka handle would keep reconnecting)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(5)
            del producer


class TaskFeed(threading.Thread):
    """Background thread: review topics -> store. ``stop()`` ends it and closes the consumer."""

    def __init__(self, settings: ReviewSettings, store: ReviewStore, serde: AvroSerde | None = None,
                 on_bad_record: Callable[[], None] | None = None) -> None:
        super().__init__(name="review-task-feed", daemon=True)
        self.settings = settings
        self.store = store
        self.serde = serde or AvroSerde(SchemaCatalogue.load())
        self.on_bad_record = on_bad_record
        self.assigned = threading.Event()
        self._stop_event = threading.Event()
        self.error: Exception | None = None

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        self.join(timeout)

    def run(self) -> None:
        from confluent_kafka import Consumer

        try:
            consumer = Consumer(feed_consumer_config(self.settings))
            consumer.subscribe([self.settings.topic_of_queue(q) for q in QUEUES],
                               on_assign=lambda c, parts: self.assigned.set())
        except Exception as exc:  # reported through /readyz and the log
            self.error = exc
            log.exception("review task feed could not start")
            return
        next_check = 0.0
        try:
            while not self._stop_event.is_set():
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + CLUSTER_CHECK_SECONDS
                    self.check_cluster(consumer)
                try:
                    msgs = consumer.consume(500, 0.2)
                except Exception as exc:
                    log.warning("review task feed: consume failed (%s); retrying", exc)
                    time.sleep(1)
                    continue
                good = [m for m in msgs if m.error() is None]
                for m in msgs:
                    if m.error() is not None:
                        log.warning("review task feed: %s", m.error())
                if good:
                    try:
                        self.store.add_tasks(self._decode(good), now=time.time())
                    except Exception as exc:  # offsets not stored: a restart reads these tasks again
                        self.error = exc
                        log.exception("review task feed: storing tasks failed; the feed stops")
                        return
                    for m in good:
                        consumer.store_offsets(m)  # after the tasks are in SQLite
        finally:
            consumer.close()

    def check_cluster(self, consumer) -> int:  # noqa: ANN001
        """Retire the open tasks of a Kafka cluster that was replaced (see ``ReviewStore.broker_cluster``)."""
        try:
            cluster_id = consumer.list_topics(timeout=5).cluster_id
        except Exception as exc:  # broker unreachable: checked again later
            log.debug("review task feed: cluster id unknown (%s)", exc)
            return 0
        if not cluster_id:
            return 0
        retired = self.store.broker_cluster(cluster_id)
        if retired:
            log.warning("the Kafka cluster was replaced (its id is now %s): %d waiting tasks came from the old one, "
                        "whose predictions and join state are gone, so they were retired rather than take answers "
                        "that could only become orphans", cluster_id, retired)
        return retired

    def _decode(self, msgs: list) -> list[dict]:
        tasks = []
        for msg in msgs:
            try:
                name, task = self.serde.decode(msg.value())
                if name != REVIEW_TASK:
                    raise LooplineError(f"expected a ReviewTask, got {name}")
                if task["tier"] not in QUEUE_OF_TIER:
                    raise LooplineError(f"task {task['task_id']} has tier {task['tier']}, not a review tier")
                tasks.append(task)
            except LooplineError as exc:
                log.warning("review task feed: skipped %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
                if self.on_bad_record:
                    self.on_bad_record()
        return tasks
