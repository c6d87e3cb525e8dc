"""``ServingController``: a challenger that beats the champion serves in shadow, then on a share, then fully;
it is rolled back when it gets worse.

The champion is the producer model's own prediction. Every corrected event is
shown to the controller *before* the challenger learns it (progressive
validation: the challenger never saw the event, so the comparison is held
out), with the true label, the challenger's prediction and the producer's.
Both sides are scored on a rolling window of ``window`` such events in the
stage in force (windows restart at every stage change, so each stage is judged
on its own evidence). "Beats" needs both a metric lift and a paired sign test
on the window: for accuracy McNemar's z on the events where exactly one side
is right (at least ``z``); for F1 a paired bootstrap of the window (seeded,
``resamples`` draws) in which the challenger wins at least ``confidence`` of
the time — so two equally good models do not trade places on noise:

=============  ===================================================================
stage          moves on
=============  ===================================================================
``champion``   → ``shadow`` when, over at least ``min_examples`` events, the
               challenger's metric beats the champion's by ``margin``, its
               accuracy is at most ``max_accuracy_drop`` below the champion's
               (a better F1 bought with many more false positives is not an
               improvement of what is served: measured on the loop bench, a
               challenger served on F1 alone tripled the served error rate),
               and the learner's promotion gate passes, when one is given
``shadow``     → ``share`` (the challenger serves ``share`` of events, chosen by
               a hash of the event id) after ``min_examples`` more events that
               still beat the champion by ``margin``
``share``      → ``full`` likewise
any other      → ``champion`` (**rollback**) as soon as, over at least
               ``min_examples`` events of the stage, the challenger's metric is
               ``rollback_margin`` below the champion's (and the sign test says
               worse), or its accuracy is more than ``max_accuracy_drop`` below
               *and* McNemar's z is at most ``-z`` (significantly less accurate:
               measured on the loop bench, a fixed one-point rule on 150 audits
               rolled back challengers that were not worse, z -0.9 to -1.4)
=============  ===================================================================

:meth:`serve` says which model serves an event (``"champion"`` or
``"challenger"``); in ``shadow`` the champion serves and the challenger's
answer is only scored. Every transition is a :class:`StageChange` with its
evidence (both metrics, n, the stage), kept in :attr:`changes`.

>>> c = ServingController(positive="fraud", min_examples=3, margin=0.1)
>>> for i in range(3):
...     _ = c.observe("fraud", "fraud", "legit", position=i)
>>> c.stage, c.serve("e1")
('shadow', 'champion')
"""
from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from loopline.processors.learning.window import RollingQuality

STAGES = ("champion", "shadow", "share", "full")


@dataclass(frozen=True)
class StageChange:
    old: str
    new: str
    position: int
    evidence: dict = field(default_factory=dict)


def challenger_serves(stage: str, share: float, event_ids) -> np.ndarray:
    """Per event of ``event_ids``: whether the challenger serves it in ``stage`` (the one rule, used by
    :meth:`ServingController.serve` and by the route workers, which know only the stage and the share)."""
    if stage == "full":
        return np.ones(len(event_ids), dtype=bool)
    if stage != "share":
        return np.zeros(len(event_ids), dtype=bool)
    return np.fromiter((share_unit(e) < share for e in event_ids), dtype=bool, count=len(event_ids))


def share_unit(event_id: str) -> float:
    """A number in [0, 1) fixed by ``event_id``: the events with one below the share are the challenger's."""
    h = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8, person=b"serving").digest(), "big")
    return h / 2.0**64


class ServingController:
    def __init__(self, positive: str | None = None, metric: str = "f1", window: int = 500, min_examples: int = 200,
                 margin: float = 0.02, rollback_margin: float = 0.02, share: float = 0.25,
                 gate: Callable[[], bool] | None = None, z: float = 1.64, confidence: float = 0.95,
                 resamples: int = 200, seed: int = 0, max_accuracy_drop: float = 0.01) -> None:
        if metric not in ("f1", "accuracy"):
            raise ValueError(f"serving metric must be f1 or accuracy, got {metric!r}")
        self.positive = positive
        self.metric = metric
        self.window = window
        self.min_examples = min_examples
        self.margin = margin
        self.rollback_margin = rollback_margin
        self.share = share
        self.gate = gate
        self.z = z
        self.confidence = confidence
        self.max_accuracy_drop = max_accuracy_drop
        self.resamples = resamples
        self._rng = np.random.default_rng(seed)
        self.stage = "champion"
        self.changes: deque[StageChange] = deque(maxlen=100)  # the latest; bounded even if the stage flaps
        self.moves = 0
        self._reset()

    def _reset(self) -> None:
        self._ch = RollingQuality(self.window, self.positive)
        self._ca = RollingQuality(self.window, self.positive)
        self._n = 0
        self._pairs: deque = deque(maxlen=self.window)  # +1 challenger alone right, -1 champion alone right
        self._rows: deque = deque(maxlen=self.window)  # (true, challenger, champion) is the positive label
        self._net = 0
        self._discordant = 0

    def _mcnemar(self) -> float:
        return self._net / math.sqrt(self._discordant) if self._discordant else 0.0

    def _win_share(self) -> float:
        """Share of paired bootstrap resamples of the window in which the challenger's F1 is higher."""
        rows = np.array(self._rows, dtype=bool)
        idx = self._rng.integers(0, len(rows), size=(self.resamples, len(rows)))
        t, ch, ca = rows[idx, 0], rows[idx, 1], rows[idx, 2]

        def f1(p):
            tp = (t & p).sum(1)
            den = 2 * tp + (~t & p).sum(1) + (t & ~p).sum(1)
            return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)

        d = f1(ch) - f1(ca)
        return float((d > 0).mean() + 0.5 * (d == 0).mean())

    def _sure(self, better: bool) -> bool:
        """The window's evidence that the challenger is better (or, ``better=False``, worse)."""
        if self.metric == "f1" and self.positive is not None:
            share = self._win_share()
            return share >= self.confidence if better else 1.0 - share >= self.confidence
        z = self._mcnemar()
        return z >= self.z if better else z <= -self.z

    def observe(self, true: str, challenger: str, champion: str, position: int = 0) -> StageChange | None:
        """One corrected event the challenger has not learned yet; returns the stage change it caused."""
        self._ch.update(true, challenger, 1.0 if challenger == true else 0.0)
        self._ca.update(true, champion, 1.0 if champion == true else 0.0)
        self._n += 1
        d = (challenger == true) - (champion == true)
        pos = self.positive
        self._rows.append((true == pos, challenger == pos, champion == pos))
        if len(self._pairs) == self._pairs.maxlen:
            old = self._pairs[0]
            self._net -= old
            self._discordant -= old != 0
        self._pairs.append(d)
        self._net += d
        self._discordant += d != 0
        if self._n < self.min_examples:
            return None
        rch, rca = self._ch.report(), self._ca.report()
        ch, ca = rch[self.metric], rca[self.metric]
        less_accurate = rca["accuracy"] - rch["accuracy"] > self.max_accuracy_drop
        # hysteresis: promotion needs accuracy within max_accuracy_drop on the window; a rollback on accuracy
        # needs the drop to be significant too (McNemar), else noise of a few audits flaps the stage
        surely_less_accurate = less_accurate and self._mcnemar() <= -self.z
        if self.stage != "champion" and (surely_less_accurate or (ch < ca - self.rollback_margin
                                                                  and self._sure(better=False))):
            return self._move("champion", position, ch, ca)
        if self.stage != "full" and not less_accurate and ch >= ca + self.margin and self._sure(better=True):
            if self.stage == "champion" and self.gate is not None and not self.gate():
                return None
            return self._move(STAGES[STAGES.index(self.stage) + 1], position, ch, ca)
        return None

    def _move(self, new: str, position: int, ch: float, ca: float) -> StageChange:
        change = StageChange(self.stage, new, position, {f"challenger_{self.metric}": ch,
                                                          f"champion_{self.metric}": ca, "n": float(self._n),
                                                          "mcnemar_z": self._mcnemar(),
                                                          "challenger_accuracy": self._ch.report()["accuracy"],
                                                          "champion_accuracy": self._ca.report()["accuracy"],
                                                          "rollback": float(new == "champion")})
        self.stage = new
        self.changes.append(change)
        self.moves += 1
        self._reset()
        return change

    def serve(self, event_id: str) -> str:
        """Which model serves ``event_id`` now: ``"challenger"`` or ``"champion"``."""
        return "challenger" if challenger_serves(self.stage, self.share, [event_id])[0] else "champion"

    def status(self) -> dict:
        r = {"stage": self.stage, "n": self._n, "changes": getattr(self, "moves", len(self.changes))}
        if self._n:
            r["challenger"] = self._ch.report()[self.metric]
            r["champion"] = self._ca.report()[self.metric]
        return r
