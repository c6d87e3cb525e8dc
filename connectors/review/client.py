"""``ReviewerClient``: review tasks straight from Kafka, answers straight to Kafka.

For bridging an annotation tool (Label Studio, a spreadsheet, a script). Two modes:

* **Leased** (``server=`` and ``password=`` given — use this whenever a review server also
  serves the queue): every task :meth:`~ReviewerClient.poll` returns is first claimed on the
  review server under ``reviewer_id`` (the web queue shows it as in review, nobody else can
  answer it); tasks someone else holds or answered are skipped; :meth:`~ReviewerClient.submit`
  answers through the server, which checks the lease and publishes. A task the server has
  not stored yet is retried on later polls for ``claim_wait_seconds``, then delivered unleased.
* **Direct** (no server): tasks straight from Kafka, answers straight to Kafka, no leases —
  then this client must be the queue's only consumer: do not serve that queue from the web
  server too, or a case may be answered twice (downstream the feedback join deduplicates by
  ``correction_id`` only, and the latest answer of a tier wins).
"""
from __future__ import annotations

import time

from loopline.connectors.client_config import ClientConfig, client_config
from loopline.connectors.review.feed import CorrectionPublisher, correction_for
from loopline.connectors.review.service import ACTIONS
from loopline.connectors.review.settings import ANALYST, QUEUES, ReviewSettings
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import REVIEW_TASK, AvroSerde
from loopline.streams.settings import Settings


class ReviewerClient:
    """Consume the ReviewTasks of one queue and publish CorrectionEvents for them.

    Parameters
    ----------
    config
        A :class:`~loopline.connectors.client_config.ClientConfig` (brokers, topic namespace,
        extra client properties); the worker's ``Settings`` is accepted too.
    reviewer_id
        Who answers; written into every CorrectionEvent.
    queue
        ``"analyst"`` (tier review) or ``"escalation"`` (tier escalate).
    group_id
        Consumer group; default ``<namespace>-reviewer-client-<queue>``. Offsets are committed
        by :meth:`commit` only, so unanswered tasks are read again after a restart.

    Examples
    --------
    ::

        from loopline.connectors.client_config import ClientConfig
        from loopline.connectors.review.client import ReviewerClient

        with ReviewerClient(ClientConfig("kafka:9092"), reviewer_id="labelstudio-bridge") as rc:
            for task in rc.poll(timeout=5):
                answer = my_tool.ask(task["prediction"])          # your annotation tool
                if answer == task["prediction"]["predicted_label"]:
                    rc.submit(task, "approve")
                else:
                    rc.submit(task, "correct", corrected_label=answer, note="via label studio")
            rc.commit()                                            # these tasks are done
    """

    def __init__(self, config: ClientConfig | Settings, reviewer_id: str, queue: str = ANALYST, group_id: str | None = None,
                 source: str = "client", server: str | None = None, password: str | None = None,
                 claim_wait_seconds: float = 30.0) -> None:
        from confluent_kafka import Consumer

        if queue not in QUEUES:
            raise ValueError(f"queue must be analyst or escalation, not {queue!r}")
        cfg = self.config = client_config(config)
        self.reviewer_id = reviewer_id
        self.queue = queue
        self.source = source
        rs = ReviewSettings(bootstrap=cfg.bootstrap_servers, namespace=cfg.topic_namespace)
        self.group_id = group_id or f"{rs.namespace}-reviewer-client-{queue}"
        self._serde = AvroSerde(SchemaCatalogue.load())
        self._publisher = CorrectionPublisher(cfg.bootstrap_servers, rs.corrections_topic, self._serde,
                                              security=dict(cfg.kafka))
        self._consumer = Consumer(cfg.kafka_config(**{
            "group.id": self.group_id, "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": int(cfg.session_timeout_seconds * 1000)}))
        self._consumer.subscribe([rs.topic_of_queue(queue)])
        self._received: dict[str, float] = {}
        self.leases = None
        if server is not None:
            from loopline.connectors.review.leases import ServerLeases

            if not password:
                raise ValueError("a leased ReviewerClient needs the reviewer's password for the review server")
            self.leases = ServerLeases(server, reviewer_id, password, claim_wait_seconds)

    def poll(self, timeout: float = 1.0, max_tasks: int = 100) -> list[dict]:
        """Up to ``max_tasks`` decoded ReviewTasks (waits at most ``timeout`` seconds); skips bad records."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < max_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for msg in self._consumer.consume(max_tasks - len(out), remaining):
                if msg.error() is not None:
                    continue
                try:
                    name, task = self._serde.decode(msg.value())
                except Exception:  # noqa: S112 (records that are not review tasks are skipped)
                    continue
                if name == REVIEW_TASK:
                    if self.leases is not None:
                        self.leases.offer(task)
                        continue
                    self._received[task["task_id"]] = time.time()
                    out.append(task)
            if self.leases is not None:
                for task in self.leases.claimable(max_tasks - len(out)):
                    self._received[task["task_id"]] = time.time()
                    out.append(task)
            if out:
                break
        return out

    def submit(self, task: dict, action: str, corrected_label: str | None = None, note: str | None = None) -> dict:
        """Publish the answer (waits for the broker); returns the CorrectionEvent.

        ``action``: approve | correct | unsure | escalate. ``review_seconds`` is measured from
        when :meth:`poll` returned the task.
        """
        if action not in ACTIONS:
            raise ValueError("action must be one of approve, correct, unsure, escalate")
        wire = ACTIONS[action]
        if wire == "override" and not corrected_label:
            raise ValueError("a correction needs corrected_label")
        label = task["prediction"]["predicted_label"] if wire == "approve" else (
            corrected_label if wire == "override" else None)
        now = time.time()
        if self.leases is not None and self.leases.holds(task["task_id"]):
            self._received.pop(task["task_id"], None)
            return self.leases.submit(task["task_id"], action, corrected_label, note, self.source)
        correction = correction_for(task, self.reviewer_id, wire, label, note,
                                    now - self._received.pop(task["task_id"], now), self.source, now)
        self._publisher.publish(correction)
        return correction

    def commit(self) -> None:
        """Commit the consumer position: tasks returned by :meth:`poll` so far will not come back."""
        from confluent_kafka import KafkaError, KafkaException

        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing read yet: nothing to commit
                raise

    def close(self) -> None:
        if self.leases is not None:
            self.leases.release_all()
        self._publisher.close()
        self._consumer.close()

    def __enter__(self) -> ReviewerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
