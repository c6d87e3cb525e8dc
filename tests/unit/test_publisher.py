"""Publisher guarantees (issue #19 item 7) against a scripted sender.

The sender stands in for the Faust/aiokafka producer so transient failures can
be injected deterministically (the real-broker path is
tests/integration/test_poison_record.py). It raises aiokafka's own error types.
"""
from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, NotLeaderForPartitionError

from loopline.processors.routing.router import InputRecord, OutputRecord
from loopline.streams.publish import PublishAbandoned, Publisher, bounded_dead_letter, classify


class ScriptedBroker:
    """Acknowledges what it accepts; ``fail(out, attempt)`` returns an exception to fail with."""

    def __init__(self, fail, max_bytes: int = 1_000_000) -> None:
        self.fail = fail
        self.max_bytes = max_bytes
        self.acked: list[OutputRecord] = []
        self.attempts: dict[bytes, int] = {}

    async def send(self, out: OutputRecord):
        if len(out.value or b"") > self.max_bytes:
            raise MessageSizeTooLargeError("The message is larger than max_request_size")
        n = self.attempts[out.key] = self.attempts.get(out.key, 0) + 1
        fut = asyncio.get_running_loop().create_future()
        exc = self.fail(out, n)
        if exc is None:
            self.acked.append(out)
            fut.set_result(None)
        else:
            fut.set_exception(exc)
        return fut


def outs(n: int) -> list[OutputRecord]:
    return [OutputRecord("decisions", f"k{i}".encode(), b"v", 0) for i in range(n)]


def test_retry_resends_only_unacknowledged_outputs():
    broker = ScriptedBroker(lambda o, n: NotLeaderForPartitionError() if o.key == b"k3" and n < 3 else None)
    retries = []
    pub = Publisher(broker.send, lambda: False, poll_seconds=0.01, on_retry=lambda: retries.append(1))
    asyncio.run(pub.publish(outs(10)))
    keys = [o.key for o in broker.acked]
    assert sorted(keys) == sorted(o.key for o in outs(10))  # each acknowledged exactly once
    assert broker.attempts[b"k3"] == 3 and broker.attempts[b"k0"] == 1
    assert len(retries) == 2
    assert pub.waiting_seconds() == 0.0 and not pub.stalled


def test_too_large_output_becomes_bounded_dead_letter_and_the_rest_go_through():
    broker = ScriptedBroker(lambda o, n: None, max_bytes=100_000)
    big = OutputRecord("dead_letter", b"poison", b"x" * 1_048_000, 2,
                       [("loopline.source.topic", b"preds"), ("loopline.source.partition", b"2"),
                        ("loopline.source.offset", b"7")])
    seen = []
    pub = Publisher(broker.send, lambda: False, max_dead_letter_bytes=4096, on_dead_letter=seen.append)
    asyncio.run(pub.publish([big, *outs(5)]))
    assert seen == ["too_large"]
    dl = [o for o in broker.acked if o.key == b"poison"]
    assert len(dl) == 1 and len(dl[0].value) == 4096
    h = dict(dl[0].headers)
    assert h["loopline.error.class"] == b"too_large"
    assert h["loopline.source.offset"] == b"7" and h["loopline.original.size"] == b"1048000"
    assert len([o for o in broker.acked if o.role == "decisions"]) == 5


def test_decision_output_too_large_names_the_batch_range():
    big = OutputRecord("review_analyst", b"k", b"y" * 50, 0)
    src = [InputRecord(b"", "preds", 0, 5), InputRecord(b"", "preds", 0, 9), InputRecord(b"", "preds", 1, 3)]
    from loopline.streams.publish import source_range

    dl = bounded_dead_letter(big, MessageSizeTooLargeError("too big"), "too_large", 10, source_range(src))
    h = dict(dl.headers)
    assert h["loopline.source.offsets"] == b"preds:0:5-9,preds:1:3-3"
    assert h["loopline.output.role"] == b"review_analyst" and dl.value == b"y" * 10
    assert b"object at 0x" not in h["loopline.error.message"]


def test_transient_errors_stall_readiness_and_stop_is_bounded():
    broker = ScriptedBroker(lambda o, n: KafkaConnectionError("broker down"))
    stop = {"now": False}
    pub = Publisher(broker.send, lambda: stop["now"], stall_seconds=0.3, poll_seconds=0.05,
                    max_backoff_seconds=0.1)

    async def scenario():
        task = asyncio.create_task(pub.publish(outs(3)))
        await asyncio.sleep(0.6)
        stalled = pub.stalled
        stop["now"] = True
        t0 = time.monotonic()
        with pytest.raises(PublishAbandoned):
            await task
        return stalled, time.monotonic() - t0

    stalled, stop_seconds = asyncio.run(scenario())
    assert stalled
    assert stop_seconds < 0.5
    assert broker.acked == []


def test_classification():
    assert classify(MessageSizeTooLargeError()) == "too_large"
    assert classify(TypeError("bytes expected")) == "unpublishable"
    assert classify(KafkaConnectionError()) is None
    assert classify(NotLeaderForPartitionError()) is None


def test_faust_wrapped_errors_are_classified_by_their_cause():
    from faust.exceptions import ProducerSendError

    try:
        try:
            raise MessageSizeTooLargeError("1048708 bytes")
        except MessageSizeTooLargeError as inner:
            raise ProducerSendError(f"Error while sending: {inner!r}") from inner
    except ProducerSendError as wrapped:
        assert classify(wrapped) == "too_large"
        dl = bounded_dead_letter(OutputRecord("dead_letter", b"k", b"x", 0), wrapped, "too_large", 1)
        assert dict(dl.headers)["loopline.error.type"] == b"MessageSizeTooLargeError"
