"""The holdout and the promotion gate.

**Holdout choice**: an example is in the holdout when its event is a *gold
item* (its true label is known to the learner from the gold set, not from the
reviewer) and a deterministic hash of its ``event_id`` falls below
``holdout_share``. Holdout examples are never learned, and they are scored with
the gold label, so no reviewer can write to the holdout. The other gold
examples are learned (with the gold label) and score the reviewer's reputation.

**Gate**: a challenger is promotable only when, on every tier that has holdout
examples, it has at least ``min_examples`` of them and the challenger's metric
beats the champion's (the producer's prediction on the same events) by
``margin``, and its log-loss is at most ``max_logloss_increase`` worse than the
champion's (F1 of a rare class alone hides a model whose probabilities are
wrecked: a 30%-flipping reviewer drops audited auto-tier accuracy from 0.99 to
0.24 while the fraud F1 still "improves"). Otherwise the reasons say which
tier failed and why.

>>> in_holdout("evt-1", 1.0), in_holdout("evt-1", 0.0)
(True, False)
"""
from __future__ import annotations

import hashlib

from loopline.processors.learning.window import RollingQuality
from loopline.processors.wire.names import TIERS


def in_holdout(event_id: str, share: float) -> bool:
    h = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big")
    return h / 2.0**64 < share


class PromotionGate:
    def __init__(self, margin: float = 0.02, min_examples: int = 30, metric: str = "f1", window: int = 2000,
                 positive: str | None = None, max_logloss_increase: float = 0.1) -> None:
        if metric not in ("f1", "accuracy", "log_loss"):
            raise ValueError(f"gate metric must be f1, accuracy or log_loss, got {metric!r}")
        self.margin = margin
        self.min_examples = min_examples
        self.metric = metric
        self.window = window
        self.positive = positive
        self.max_logloss_increase = max_logloss_increase
        self.quality: dict[tuple[str, str], RollingQuality] = {}

    def _q(self, role: str, tier: str) -> RollingQuality:
        q = self.quality.get((role, tier))
        if q is None:
            q = self.quality[(role, tier)] = RollingQuality(self.window, self.positive)
        return q

    def score(self, tier: str, true: str, champion: tuple[str, float], challenger: tuple[str, float]) -> None:
        """One holdout example: each side's (predicted label, probability of the true label)."""
        self._q("champion", tier).update(true, *champion)
        self._q("challenger", tier).update(true, *challenger)

    def evaluate(self) -> tuple[bool, list[str]]:
        """(passed, reasons): reasons name every failing tier (or say why it passed)."""
        tiers = [t for t in TIERS if ("challenger", t) in self.quality]
        if not tiers:
            return False, ["no holdout examples yet (holdout = gold items by hash split)"]
        reasons, ok = [], True
        for t in tiers:
            ch, ca = self.quality[("champion", t)].report(), self.quality[("challenger", t)].report()
            m = self.metric
            if ca["n"] < self.min_examples:
                ok = False
                reasons.append(f"tier {t}: {ca['n']} holdout examples, need {self.min_examples}")
                continue
            lift = (ch[m] - ca[m]) if m == "log_loss" else (ca[m] - ch[m])
            worse = ca["log_loss"] - ch["log_loss"]
            if worse > self.max_logloss_increase:
                ok = False
                reasons.append(f"tier {t}: challenger log_loss {ca['log_loss']:.4f} is {worse:+.4f} worse than "
                               f"champion {ch['log_loss']:.4f} (max {self.max_logloss_increase})")
            elif lift < self.margin:
                ok = False
                reasons.append(f"tier {t}: challenger {m} {ca[m]:.4f} vs champion {ch[m]:.4f} "
                               f"(lift {lift:+.4f} < margin {self.margin})")
            else:
                reasons.append(f"tier {t}: challenger {m} {ca[m]:.4f} beats champion {ch[m]:.4f} by {lift:+.4f}")
        return ok, reasons

    def report(self) -> dict:
        return {f"{role}.{tier}": q.report() for (role, tier), q in sorted(self.quality.items())}
