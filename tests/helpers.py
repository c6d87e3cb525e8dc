"""Bounded topic readers for tests."""
from __future__ import annotations

import time
from collections.abc import Callable


def read_topic(bootstrap: str, topic: str, done: Callable[[list], bool], timeout: float = 60.0,
               settle: float = 0.0) -> list:
    """Read every record of ``topic`` from the start until ``done(records)`` or ``timeout``.

    With ``settle`` > 0 keeps reading that many more seconds after ``done`` to catch duplicates.
    Returns confluent_kafka ``Message`` objects.
    """
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out: list = []
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            for m in c.consume(2000, 0.3):
                if m.error() is None:
                    out.append(m)
            if settle_until is None and done(out):
                if settle <= 0:
                    break
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        c.close()
    return out


def headers_dict(msg) -> dict[str, str]:
    return {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
