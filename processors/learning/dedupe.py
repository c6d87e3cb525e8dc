"""``TTLSet``: remembers ids for ``ttl_ms`` of data time, at most ``max_items`` of them (oldest go first).

The clock is the data's own (``reviewed_at`` of the examples), so a replay of
the same examples makes the same decisions — needed for a deterministic rebuild.

>>> s = TTLSet(ttl_ms=10, max_items=2)
>>> s.add("a", now_ms=0), s.add("a", now_ms=5), s.add("a", now_ms=20)
(True, False, True)
"""
from __future__ import annotations

from collections import OrderedDict


class TTLSet:
    def __init__(self, ttl_ms: int, max_items: int) -> None:
        self.ttl_ms = ttl_ms
        self.max_items = max_items
        self._expiry: OrderedDict[str, int] = OrderedDict()
        self._clock = 0

    def add(self, key: str, now_ms: int) -> bool:
        """True when ``key`` is new (and remember it), False when seen within the TTL."""
        self._clock = max(self._clock, now_ms)
        self._evict()
        exp = self._expiry.get(key)
        if exp is not None and exp > self._clock:
            return False
        self._expiry[key] = self._clock + self.ttl_ms
        self._expiry.move_to_end(key)
        while len(self._expiry) > self.max_items:
            self._expiry.popitem(last=False)
        return True

    def _evict(self) -> None:
        e = self._expiry
        while e:
            k, exp = next(iter(e.items()))
            if exp > self._clock:
                break
            e.popitem(last=False)

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: str) -> bool:
        exp = self._expiry.get(key)
        return exp is not None and exp > self._clock

    def __getstate__(self) -> dict:
        """Pickle only the newest ``PERSIST_MAX`` ids: a snapshot must fit in one Kafka record.

        Older re-deliveries after a restart are still caught by the learner's
        per-partition offsets.
        """
        state = dict(self.__dict__)
        items = list(self._expiry.items())[-PERSIST_MAX:]
        state["_expiry"] = OrderedDict(items)
        return state


PERSIST_MAX = 10_000
