"""Plain confluent-kafka reads the learning extensions need outside Faust's consumer group.

* :func:`read_to_end` — every record of some partitions from given offsets up
  to the high watermark at call time (learner catch-up after a restart, the CLI);
* :class:`UpdateTail` — a group-less consumer of *all* partitions of the
  model-updates topic: every route worker must see every snapshot, which a
  shared consumer group would split between workers.
"""
from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def reader_config(bootstrap: str, security: dict | None = None) -> dict:
    """A group-less reader's librdkafka configuration; ``security`` from ``KafkaSecurity.librdkafka()``."""
    return {"bootstrap.servers": bootstrap, "group.id": f"loopline-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False, "enable.partition.eof": False, **(security or {})}


def _consumer(bootstrap: str, security: dict | None = None) -> Consumer:
    return Consumer(reader_config(bootstrap, security))


def read_to_end(bootstrap: str, topic: str, starts: dict[int, int] | None = None, timeout: float = 30.0,
                grace: float = 1.0, security: dict | None = None) -> list:
    """Messages of ``topic`` from ``starts`` (partition -> offset; default: all partitions from the start)
    to the end, in partition order, then offset order.

    "The end" is the high watermark at call time *and* a 0.3 s poll that returns
    nothing (or ``grace`` seconds past the watermarks, on a topic that keeps
    growing): the embedded broker reports the watermark of a partition whose
    last produce request carried several records as the last batch's base
    offset + 1, so the watermark alone misses records. ``security``: the librdkafka
    security entries (``kafka_security(settings).librdkafka()``).
    """
    c = _consumer(bootstrap, security)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        starts = {p: 0 for p in parts} if starts is None else starts
        todo, assign = {}, []
        for p, first in starts.items():
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            first = max(first, lo)
            if first < hi:
                todo[p] = hi
            assign.append(TopicPartition(topic, p, first))  # also "at the end": the watermark may be short
        out: dict[int, list] = {p: [] for p in starts}
        c.assign(assign)
        started = time.monotonic()
        deadline = started + timeout
        reached = started if not todo else None
        while time.monotonic() < deadline:
            if reached is not None and time.monotonic() - max(reached, started + 1.5) > grace:
                break
            batch = c.consume(2000, 0.3)
            for m in batch:
                if m.error() is not None or m.partition() not in out:
                    continue
                out[m.partition()].append(m)
                if m.partition() in todo and m.offset() + 1 >= todo[m.partition()]:
                    del todo[m.partition()]
                    if not todo:
                        reached = time.monotonic()
            if not todo and not batch and time.monotonic() - started > 1.5:  # (the first fetch may be slow)
                break
        if todo:
            raise TimeoutError(f"reading {topic} timed out with partitions {sorted(todo)} unfinished")
        return [m for p in sorted(out) for m in out[p]]
    finally:
        c.close()


class UpdateTail:
    """Tails every partition of a topic from the beginning, without a consumer group's split."""

    def __init__(self, bootstrap: str, topic: str, security: dict | None = None) -> None:
        self.topic = topic
        self.consumer = _consumer(bootstrap, security)
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])

    def poll(self, max_records: int = 500, timeout: float = 0.05) -> list:
        return [m for m in self.consumer.consume(max_records, timeout) if m.error() is None]

    def close(self) -> None:
        self.consumer.close()
