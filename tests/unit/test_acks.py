"""An interrupted take batch is not acknowledged (streams/acks.py), with Faust's own message type."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.types.tuples import ConsumerMessage

from loopline.streams.acks import acked_on_success


class Consumer:
    """Records what Faust's ``ConsumerMessage.ack`` would hand to the consumer's commit bookkeeping."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message) -> bool:
        self.acked.append(message.offset)
        return True


def batch(n: int) -> list:
    return [SimpleNamespace(message=ConsumerMessage("t", 0, off, 0.0, 0, None, b"k", b"v", None)) for off in range(n)]


def take_finally(events, consumer) -> None:
    """What ``Stream.take_events`` does after the body, in its ``finally``: ack every event."""
    for e in events:
        e.message.ack(consumer)


def test_completed_batch_is_acknowledged():
    events, consumer = batch(3), Consumer()
    with acked_on_success(events):
        pass
    take_finally(events, consumer)
    assert consumer.acked == [0, 1, 2]


@pytest.mark.parametrize("interruption", [asyncio.CancelledError, RuntimeError])
def test_interrupted_batch_is_not_acknowledged(interruption):
    events, consumer = batch(3), Consumer()
    with pytest.raises(interruption), acked_on_success(events):
        raise interruption()
    take_finally(events, consumer)
    assert consumer.acked == []  # the committer stops before offset 0: the next owner reads them again


def test_a_stopping_agent_withholds_what_its_stream_still_buffers():
    """Faust's wait_empty waits for every delivered message: the ones an agent that stopped will never
    process are withheld (not committed), those of other topics and the acknowledged ones are left alone."""
    from loopline.streams.acks import withhold_unacked

    mine = [ConsumerMessage("t.predictions", 0, off, 0.0, 0, None, b"k", b"v", None) for off in (5, 6)]
    other = ConsumerMessage("t.corrections", 0, 9, 0.0, 0, None, b"k", b"v", None)
    done = ConsumerMessage("t.predictions", 1, 3, 0.0, 0, None, b"k", b"v", None)
    done.acked = True
    consumer = SimpleNamespace(_unacked_messages={*mine, other, done})
    assert withhold_unacked(consumer, {"t.predictions"}) == 2
    assert all(m.acked for m in mine) and not other.acked
    ledger = Consumer()
    for m in (*mine, other):  # Faust's own ack: the withheld offsets never reach the commit bookkeeping
        m.ack(ledger)
    assert ledger.acked == [9]
