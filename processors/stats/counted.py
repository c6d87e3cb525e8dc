"""Which offsets of one input partition have been counted: the basis of counting each event once.

A consumer may deliver a partition's records out of order after a seek (the
offset guard reads a hole again: ``131`` first, then ``56..130``), and re-delivers
records after a crash or a rebalance. :class:`CountedOffsets` keeps a contiguous
prefix (every offset below ``next`` was counted or does not exist) and the
offsets counted beyond it (bounded), so a record is counted once whatever the
order of delivery. It is saved with the statistics it guards.

>>> c = CountedOffsets(next_offset=55)
>>> c.add(131); c.seen(131), c.seen(56), c.next
(True, False, 55)
>>> for o in range(55, 131): c.add(o)
>>> c.next, c.ahead
(132, set())
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger("loopline.stats")


class CountedOffsets:
    #: Offsets counted beyond a hole that have not been joined to the prefix; past this the prefix jumps.
    MAX_AHEAD = 100_000

    def __init__(self, next_offset: int | None = None, ahead: Iterable[int] = ()) -> None:
        #: every offset below ``next`` is counted (``None``: nothing known, the first record starts the prefix)
        self.next = next_offset
        self.ahead: set[int] = set(ahead)

    def seen(self, offset: int) -> bool:
        """True when the record at ``offset`` was counted before (a replay)."""
        return self.next is not None and (offset < self.next or offset in self.ahead)

    def add(self, offset: int) -> None:
        """The record at ``offset`` was counted."""
        if self.next is None:
            self.next = offset
        if offset < self.next:
            return
        if offset > self.next:
            self.ahead.add(offset)
            if len(self.ahead) <= self.MAX_AHEAD:
                return
            # a hole that never fills: give it up (logged)
            log.warning("offsets %d.. were never delivered; statistics stop waiting for them", self.next)
            self._jump(min(self.ahead))
        else:
            self.next += 1
        self._advance()

    def skip(self, start: int, end: int) -> None:
        """Offsets ``start..end-1`` hold no records (a hole the consumer accepted): nothing to count there."""
        if self.next is None or end <= self.next:
            return
        if start <= self.next:
            self._jump(end)
        elif end - start <= self.MAX_AHEAD - len(self.ahead):
            self.ahead.update(range(start, end))
        self._advance()

    def _jump(self, offset: int) -> None:
        self.next = offset
        self.ahead = {o for o in self.ahead if o >= offset}

    def _advance(self) -> None:
        while self.next in self.ahead:
            self.ahead.discard(self.next)
            self.next += 1

    def key(self) -> tuple:
        """What a save must record (changes when anything was counted)."""
        return self.next, len(self.ahead), max(self.ahead, default=None)

    def to_state(self) -> dict:
        return {"next": self.next, "ahead": sorted(self.ahead)}

    @classmethod
    def from_state(cls, state: dict | None) -> CountedOffsets:
        return cls(state["next"], state.get("ahead", ())) if state else cls()
