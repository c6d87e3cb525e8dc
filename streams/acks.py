"""Acknowledge a ``take_events`` batch only when its handler finished.

Faust's ``Stream.take_events`` acknowledges every event of a batch in a
``finally`` block after the ``yield``: when the agent body is cancelled
(SIGTERM, agent restart) or raises, the batch is acknowledged anyway, and the
next commit (Faust commits when it stops and on every rebalance) moves the
group's offset past records whose outputs were never published — a silent loss.

:func:`acked_on_success` closes that hole: if the body does not complete, it
marks the batch's messages as already acknowledged *without* recording their
offsets, so Faust's ``finally`` acknowledges nothing, the committer stops at
the first of them (it commits only up to a gap), and whoever owns the partition
next reads them again. At-least-once: outputs of the interrupted batch that
did reach the broker are published again.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def withhold_acks(events: Sequence[Any]) -> None:
    """Make Faust's pending ack of ``events`` a no-op (their offsets are never committed by this owner)."""
    for event in events:
        event.message.acked = True


@contextmanager
def acked_on_success(events: Sequence[Any]) -> Iterator[None]:
    """Run the body; unless it completes, withhold the acks of ``events`` and re-raise."""
    try:
        yield
    except BaseException:
        withhold_acks(events)
        raise


def withhold_unacked(consumer: Any, topics: set[str]) -> int:
    """Withhold the acks of every message of ``topics`` the consumer delivered and nobody acknowledged.

    For an agent that stops for good (the worker is stopping and it could not publish): the
    messages still buffered in its stream will never be processed here, and Faust's
    ``wait_empty`` would wait for their acks until it is killed (60 s under backlog in the
    fault benchmark). Withheld, they are not committed (the strict commit rule stops at the
    first of them: streams/offset_guard.py) and the next owner reads them again. Returns how many.
    """
    pending = [m for m in list(getattr(consumer, "_unacked_messages", ())) if m.tp.topic in topics and not m.acked]
    for m in pending:
        m.acked = True
    return len(pending)
