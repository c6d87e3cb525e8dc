"""Publishing a batch's outputs so that nothing blocks a partition and nothing is sent twice.

Guarantees of :meth:`Publisher.publish`:

- **Per-output acknowledgement.** Each output has its own delivery future; a retry
  re-sends only the outputs the broker has not acknowledged, never one it has.
- **Unpublishable outputs become bounded dead letters.** An output the broker or
  the producer can never accept (too large, invalid record, unserialisable) is
  replaced by a dead letter of class ``too_large`` or ``unpublishable``: error
  headers, the source topic/partition/offset (or the batch's offset range), and
  a copy of the original bytes truncated to ``max_dead_letter_bytes`` (well below
  the producer's request size). If even that cannot be published, a header-only
  dead letter is sent. The partition then moves on.
- **Transient errors are retried** with capped backoff, for ever (returning
  early would acknowledge input whose outputs are not on the broker), but after
  ``stall_seconds`` the publisher reports itself *stalled* (``/readyz`` answers
  503, ``loopline_publish_stalled_seconds`` rises for an alert).
- **Shutdown is bounded.** While waiting or retrying, ``should_stop()`` is
  checked every ``poll_seconds``; when it turns true the publisher raises
  :class:`PublishAbandoned` so the caller can release its batch *without*
  committing it (the next owner of the partition reads it again).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from loopline.processors.errors import LooplineError
from loopline.processors.routing.router import InputRecord, OutputRecord

log = logging.getLogger("loopline.worker")

Sender = Callable[[OutputRecord], Awaitable["asyncio.Future"]]

#: The error classes of dead letters made from outputs that could not be published.
TOO_LARGE = "too_large"
UNPUBLISHABLE = "unpublishable"


class PublishAbandoned(LooplineError):
    """The worker is stopping while a batch's outputs are still unacknowledged: do not commit the batch."""

    error_class = "internal"


def _error_names(names: Sequence[str]) -> tuple[type, ...]:
    try:
        from aiokafka import errors
    except ImportError:  # pragma: no cover - aiokafka comes with faust
        return ()
    return tuple(getattr(errors, n) for n in names if hasattr(errors, n))


#: Errors that say "this record can never be accepted": re-sending it cannot succeed.
_TOO_LARGE = _error_names(("MessageSizeTooLargeError", "RecordListTooLargeError", "RecordBatchTooLargeError"))
_INVALID = _error_names(("CorruptRecordException", "InvalidRecordError", "UnsupportedForMessageFormatError",
                         "InvalidTimestampError", "UnsupportedVersionError"))


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause (Faust wraps aiokafka's errors in ``ProducerSendError ... from exc``)."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def classify(exc: BaseException) -> str | None:
    """``too_large`` / ``unpublishable`` for an error no retry can fix, ``None`` for a transient one."""
    exc = root_cause(exc)
    if _TOO_LARGE and isinstance(exc, _TOO_LARGE):
        return TOO_LARGE
    if _INVALID and isinstance(exc, _INVALID):
        return UNPUBLISHABLE
    if isinstance(exc, (TypeError, ValueError, AssertionError)):  # the producer could not serialise the record
        return UNPUBLISHABLE
    return None


def describe(exc: BaseException) -> str:
    """A one-line message for a header or log: the root cause's type and text, never an object repr."""
    exc = root_cause(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def source_range(records: Sequence[InputRecord]) -> str:
    """``topic:partition:first-last`` for each partition of a batch (for outputs without their own source)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for r in records:
        span = spans.setdefault((r.topic, r.partition), [r.offset, r.offset])
        span[0] = min(span[0], r.offset)
        span[1] = max(span[1], r.offset)
    return ",".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(spans.items()))[:500]


def bounded_dead_letter(out: OutputRecord, exc: BaseException, error_class: str, max_bytes: int,
                        source: str = "", worker: str = "") -> OutputRecord:
    """The dead letter standing for an output that cannot be published, at most ``max_bytes`` of value.

    Keeps the output's own source headers when it has them (a dead letter of an
    input), else names the batch's offset range in ``loopline.source.offsets``.
    """
    value = out.value or b""
    own = [(k, v) for k, v in (out.headers or ()) if k.startswith("loopline.source.")]
    headers: list[tuple[str, bytes]] = [
        ("loopline.error.class", error_class.encode()),
        ("loopline.error.type", type(root_cause(exc)).__name__.encode()),
        ("loopline.error.message", describe(exc).encode()),
        ("loopline.output.role", out.role.encode()),
        ("loopline.original.size", str(len(value)).encode()),
        ("loopline.truncated", b"true" if len(value) > max_bytes else b"false"),
        ("loopline.failed_at", str(int(time.time() * 1000)).encode()),
    ]
    headers += own
    if not own and source:
        headers.append(("loopline.source.offsets", source.encode()))
    if worker:
        headers.append(("loopline.worker", worker.encode()))
    return OutputRecord("dead_letter", out.key, value[:max_bytes], out.partition, headers)


class Publisher:
    """Sends outputs with per-output futures; see the module docstring for the guarantees."""

    def __init__(self, send: Sender, should_stop: Callable[[], bool], *, max_dead_letter_bytes: int = 65536,
                 stall_seconds: float = 60.0, poll_seconds: float = 0.5, max_backoff_seconds: float = 10.0,
                 worker: str = "", on_retry: Callable[[], None] | None = None,
                 on_dead_letter: Callable[[str], None] | None = None) -> None:
        self.send = send
        self.should_stop = should_stop
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.stall_seconds = stall_seconds
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.worker = worker
        self.on_retry = on_retry
        self.on_dead_letter = on_dead_letter
        self._waiting_since: float | None = None

    def waiting_seconds(self) -> float:
        """Seconds the current batch has been retrying (0 when publishing is not failing)."""
        return 0.0 if self._waiting_since is None else time.monotonic() - self._waiting_since

    @property
    def stalled(self) -> bool:
        """True once a batch has been retrying longer than ``stall_seconds`` (readiness turns red)."""
        return self.waiting_seconds() > self.stall_seconds

    async def publish(self, outputs: Sequence[OutputRecord], source: Sequence[InputRecord] = ()) -> None:
        """Return once every output (or the dead letter replacing it) is acknowledged by the broker.

        Raises :class:`PublishAbandoned` if the worker stops first.
        """
        pending: list[OutputRecord] = list(outputs)
        src = source_range(source) if source else ""
        delay = 0.2
        try:
            while pending:
                failed, transient = await self._attempt(pending, src)
                pending = failed
                if not pending:
                    return
                if self._waiting_since is None:
                    self._waiting_since = time.monotonic()
                if self.on_retry is not None:
                    self.on_retry()
                log.warning("publishing %d of %d outputs failed (%s); retrying in %.1fs%s", len(pending),
                            len(outputs), transient, delay, " (stalled: readiness is red)" if self.stalled else "")
                await self._sleep(delay)
                delay = min(delay * 2, self.max_backoff_seconds)
        finally:
            if not pending:
                self._waiting_since = None

    async def _attempt(self, pending: list[OutputRecord], src: str) -> tuple[list[OutputRecord], str]:
        """Send each pending output once; return those that failed transiently and the last such error."""
        futures: list[tuple[OutputRecord, asyncio.Future | None, BaseException | None]] = []
        for out in pending:
            try:
                futures.append((out, asyncio.ensure_future(await self.send(out)), None))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # raised before the record reached the producer's buffer
                futures.append((out, None, exc))
        waiting = {f for _, f, _ in futures if f is not None}
        while waiting:
            self._check_stop()
            _, waiting = await asyncio.wait(waiting, timeout=self.poll_seconds)
        retry: list[OutputRecord] = []
        last = ""
        for out, fut, exc in futures:
            if fut is not None:
                exc = fut.exception()
            if exc is None:
                continue
            kind = classify(exc)
            if kind is None:
                retry.append(out)
                last = describe(exc)
                continue
            retry += await self._dead_letter(out, exc, kind, src)
        return retry, last

    async def _dead_letter(self, out: OutputRecord, exc: BaseException, kind: str, src: str) -> list[OutputRecord]:
        """Publish the bounded dead letter of ``out``; a header-only one if even that cannot be sent."""
        log.error("an output to %s can never be published (%s): dead-lettered as %s", out.role, describe(exc), kind)
        for limit in (self.max_dead_letter_bytes, 0):
            dl = bounded_dead_letter(out, exc, kind, limit, src, self.worker)
            try:
                fut = asyncio.ensure_future(await self.send(dl))
                while not fut.done():
                    self._check_stop()
                    await asyncio.wait({fut}, timeout=self.poll_seconds)
                err = fut.exception()
            except asyncio.CancelledError:
                raise
            except PublishAbandoned:
                raise
            except Exception as e:
                err = e
            if err is None:
                if self.on_dead_letter is not None:
                    self.on_dead_letter(kind)
                return []
            if classify(err) is None:  # transient: retry the original output later
                return [out]
        log.error("a header-only dead letter could not be published either; dropping the output to %s", out.role)
        return []

    def _check_stop(self) -> None:
        if self.should_stop():
            raise PublishAbandoned("the worker is stopping with outputs not yet acknowledged; "
                                   "the batch is left uncommitted")

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._check_stop()
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self.poll_seconds))
