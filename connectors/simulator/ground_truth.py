"""Ground truth for simulated events, kept off the wire and bounded in memory.

True labels are stored as one ``int8`` code per event in a ring indexed by the
event's position in the traffic (parsed from its id ``"<prefix>-<index>"``): a
million events cost a megabyte, not a dict of a million strings. Once more than
``capacity`` events have been recorded, the oldest are forgotten and answer
``None``.
"""
from __future__ import annotations

import numpy as np

#: label names by code: 0 = legit, 1 = fraud
LABELS: tuple[str, ...] = ("legit", "fraud")
UNKNOWN = -1


class GroundTruthStore:
    """Ring buffer of true label codes for the last ``capacity`` event indices.

    Parameters
    ----------
    capacity
        How many of the most recent event indices are remembered.
    prefix
        Event-id prefix of the traffic this store belongs to; ids with another
        prefix are unknown here.
    labels
        Label names by code.

    Examples
    --------
    >>> store = GroundTruthStore(capacity=4, prefix="7")
    >>> store.record(0, np.array([0, 1, 0], dtype=np.int8))
    >>> store.label_of("7-1"), store.label_of("7-3"), store.label_of("8-1")
    ('fraud', None, None)
    >>> store.record(3, np.array([1, 1, 0], dtype=np.int8))  # indices 3..5; 0 and 1 fall out
    >>> store.label_of("7-0"), store.label_of("7-2"), store.label_of("7-4")
    (None, 'legit', 'fraud')
    >>> store.codes_of(np.array([1, 2, 5])).tolist()
    [-1, 0, 0]
    """

    def __init__(self, capacity: int, prefix: str, labels: tuple[str, ...] = LABELS) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.prefix = prefix
        self.labels = labels
        self._codes = np.full(self.capacity, UNKNOWN, dtype=np.int8)
        self._owner = np.full(self.capacity, -1, dtype=np.int64)  # which index a slot holds
        self._high = 0  # one past the highest index ever recorded

    def __len__(self) -> int:
        """Number of indices currently remembered."""
        return int(np.count_nonzero(self._owner >= max(0, self._high - self.capacity)))

    def record(self, start: int, codes: np.ndarray) -> None:
        """Remember ``codes[i]`` as the truth of event index ``start + i``."""
        codes = np.asarray(codes, dtype=np.int8)
        if len(codes) > self.capacity:  # only the newest fit
            start += len(codes) - self.capacity
            codes = codes[-self.capacity:]
        idx = np.arange(start, start + len(codes), dtype=np.int64)
        slots = idx % self.capacity
        self._codes[slots] = codes
        self._owner[slots] = idx
        self._high = max(self._high, start + len(codes))

    def codes_of(self, indices: np.ndarray) -> np.ndarray:
        """Label codes of many event indices at once (``-1`` where unknown or forgotten)."""
        indices = np.asarray(indices, dtype=np.int64)
        slots = indices % self.capacity
        known = (self._owner[slots] == indices) & (indices >= 0)
        return np.where(known, self._codes[slots], UNKNOWN).astype(np.int8)

    def index_of(self, event_id: str) -> int | None:
        """Event index encoded in ``event_id``, or ``None`` if it is not one of ours."""
        head, sep, tail = event_id.rpartition("-")
        if not sep or head != self.prefix or not tail.isdigit():
            return None
        return int(tail)

    def label_of(self, event_id: str) -> str | None:
        """True label of one event, or ``None`` if unknown, forgotten or foreign."""
        index = self.index_of(event_id)
        if index is None:
            return None
        slot = index % self.capacity
        if self._owner[slot] != index:
            return None
        return self.labels[self._codes[slot]]
