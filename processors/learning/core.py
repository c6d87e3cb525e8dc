"""``ModelLearner``: everything learned from one source model's corrections; pure, no Kafka.

For each example, in order (``learn_batch``):

1. an offset at or below the last one taken from its partition is a replay → ``duplicate``;
2. a ``correction_id`` seen within the TTL → ``duplicate`` (double delivery trains once);
3. no usable label (unsure / escalate) → ``rejected``;
4. gold items (trusted label known) score the reviewer's reputation; those in
   the holdout split are scored by the promotion gate and never learned → ``holdout``;
5. answers of a higher tier on the same event score reviewers (audits, escalations);
6. a reviewer under the reputation floor → ``rejected``;
7. over the reviewer's rate limit or influence cap → ``held``;
8. progressive validation (test-then-train): champion (the producer's
   prediction) and challenger are scored on the example *before* the
   challenger and the override-risk model learn it, weighted by reputation → ``learned``;
   audits of the auto tier (random, so representative of what the model serves alone)
   also go to the :class:`~loopline.processors.learning.serving.ServingController`,
   whose stage travels in the challenger's snapshot metrics (``serving.stage``) to the
   route workers, which let the challenger serve auto-tier decisions from ``share`` on.

Nothing here draws random numbers except the seeded challenger, so the same
examples in the same order give the same models (deterministic rebuild).
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from loopline.processors.learning.dedupe import TTLSet
from loopline.processors.learning.features import example_features, risk_features
from loopline.processors.learning.gate import PromotionGate, in_holdout
from loopline.processors.learning.guards import AnswerLedger, RateGuard, Reputation
from loopline.processors.learning.linear import LinearModel
from loopline.processors.learning.pipelines import make_challenger
from loopline.processors.learning.serving import STAGES, ServingController
from loopline.processors.learning.window import RollingQuality, champion_view

log = logging.getLogger("loopline.learning")
OUTCOMES = ("learned", "duplicate", "held", "rejected", "holdout")


@dataclass(frozen=True)
class LearnerConfig:
    """Knobs of a learner (the worker fills them from ``LOOPLINE_LEARN_*`` settings)."""

    pipeline: str = "logreg"
    positive_label: str | None = None
    labels: tuple[str, ...] = ()  # the model's declared label set (policy), empty = every label seen
    seed: int = 42
    metrics_window: int = 2000
    dedupe_ttl_ms: int = 7 * 86_400_000
    dedupe_max: int = 200_000
    rate_window_ms: int = 60_000
    reviewer_max_per_window: int = 500
    reviewer_max_share: float = 0.5
    share_min_examples: int = 50
    min_reputation: float = 0.8
    holdout_share: float = 0.5
    gate_margin: float = 0.02
    gate_min_examples: int = 30
    gate_metric: str = "f1"
    gate_max_logloss_increase: float = 0.1
    gold_max: int = 100_000
    serving_min_examples: int = 200
    serving_share: float = 0.25


@dataclass
class BatchOutcome:
    counts: Counter = field(default_factory=Counter)
    learned_reviewed_at: list[int] = field(default_factory=list)


class ModelLearner:
    """Learner state of one source model (see module doc)."""

    def __init__(self, model_name: str, config: LearnerConfig | None = None) -> None:
        self.model_name = model_name
        self.config = c = config or LearnerConfig()
        self.challenger = None  # built on the first example: declared labels, else that example's labels
        self.risk = LinearModel()
        self.quality: dict[tuple[str, str], RollingQuality] = {}
        self.risk_quality = RollingQuality(c.metrics_window, "override")
        self.dedupe = TTLSet(c.dedupe_ttl_ms, c.dedupe_max)
        self.rate = RateGuard(c.rate_window_ms, c.reviewer_max_per_window, c.reviewer_max_share, c.share_min_examples)
        self.reputation = Reputation(min_reputation=c.min_reputation)
        self.ledger = AnswerLedger()
        self.gate = PromotionGate(c.gate_margin, c.gate_min_examples, c.gate_metric, c.metrics_window, c.positive_label,
                                  c.gate_max_logloss_increase)
        self.gold: OrderedDict[str, str] = OrderedDict()
        self.offsets: dict[int, list[int]] = {}  # partition -> [first, last] taken
        self.outcomes: Counter = Counter()
        self.examples_seen = 0
        self.versions: dict[str, int] = {}
        self._serving: ServingController | None = None

    @property
    def serving(self) -> ServingController:
        """Which model serves auto-tier events, judged on audits (built lazily: older snapshots lack it)."""
        if getattr(self, "_serving", None) is None:
            c = self.config
            self._serving = ServingController(
                positive=c.positive_label, min_examples=getattr(c, "serving_min_examples", 200),
                window=max(2 * getattr(c, "serving_min_examples", 200), 400), share=getattr(c, "serving_share", 0.25),
                gate=self._serving_gate)
        return self._serving

    def _serving_gate(self) -> bool:
        """The promotion gate on gold holdout items when there are any; without gold items the reviewers'
        reputation and rate guards (steps 6-7) are what stands between a poisoned label and serving."""
        passed, _ = self.gate.evaluate()
        return passed or not self.gate.quality

    # ----------------------------------------------------------------- inputs
    def add_gold(self, event_id: str, label: str) -> None:
        """Declare a gold item: ``event_id``'s true label is known to the learner."""
        self.gold[event_id] = label
        while len(self.gold) > self.config.gold_max:
            self.gold.popitem(last=False)

    def learn_batch(self, items) -> BatchOutcome:
        """Learn ``(example, partition, offset)`` items in order; offsets may be ``None`` (no Kafka)."""
        out = BatchOutcome()
        for example, partition, offset in items:
            outcome = self._one(example, partition, offset)
            out.counts[outcome] += 1
            if outcome == "learned":
                out.learned_reviewed_at.append(example["reviewed_at"])
        self.outcomes.update(out.counts)
        return out

    def _one(self, ex: dict, partition, offset) -> str:
        if offset is not None:
            span = self.offsets.get(partition)
            if span is not None and offset <= span[1]:
                return "duplicate"
            self.offsets[partition] = [offset if span is None else span[0], offset]
        if not self.dedupe.add(ex["correction_id"], ex["reviewed_at"]):
            return "duplicate"
        label, reviewer, pred = ex.get("label"), ex["reviewer_id"], ex["prediction"]
        if label is None or ex["action"] not in ("approve", "override"):
            return "rejected"
        seen = (*(pred.get("class_probabilities") or ()), pred["predicted_label"], label)
        if self.challenger is None:
            labels = tuple(self.config.labels) or seen
            self.challenger = make_challenger(self.config.pipeline, labels, self.config.positive_label,
                                              self.config.seed)
        self.challenger.observe(seen)
        x = example_features(pred)
        gold = self.gold.get(ex["event_id"])
        if gold is not None:
            self.reputation.observe(reviewer, label == gold)
            if in_holdout(ex["event_id"], self.config.holdout_share):
                probs = self.challenger.predict_proba_one(x)
                self.gate.score(ex["tier"], gold, champion_view(pred, gold),
                                (self.challenger.predict_one(probs), probs.get(gold, 0.0)))
                return "holdout"
        for who, agreed in self.ledger.record(ex["event_id"], reviewer, label, ex["tier"]):
            self.reputation.observe(who, agreed)
        weight = self.reputation.weight(reviewer)
        if weight <= 0.0:
            return "rejected"
        why = self.rate.admit(reviewer, ex["reviewed_at"])
        if why is not None:
            self.rate.hold({"correction_id": ex["correction_id"], "reviewer_id": reviewer,
                            "partition": partition, "offset": offset}, reviewer, why)
            return "held"
        target = gold if gold is not None else label
        self._test_then_train(ex, x, pred, target, weight if gold is None else 1.0)
        self.reputation.admitted(reviewer)
        self.examples_seen += 1
        return "learned"

    def _test_then_train(self, ex: dict, x: dict, pred: dict, label: str, weight: float) -> None:
        probs = self.challenger.predict_proba_one(x)
        ch_label = self.challenger.predict_one(probs)
        champ = champion_view(pred, label)
        for tier in (ex["tier"], "all"):
            self._q("champion", tier).update(label, *champ)
            self._q("challenger", tier).update(label, ch_label, probs.get(label, 0.0))
        xr = risk_features(pred, x)
        overridden = label != pred["predicted_label"]
        p = self.risk.predict_proba_one(xr)
        self.risk_quality.update("override" if overridden else "keep", "override" if p >= 0.5 else "keep",
                                 p if overridden else 1.0 - p)
        if ex.get("audit") and ex["tier"] == "auto":  # held out: the challenger has not learned this event yet
            change = self.serving.observe(label, ch_label, pred["predicted_label"], position=self.examples_seen)
            if change is not None:
                log.warning("serving of %s: %s -> %s (%s)", self.model_name, change.old, change.new,
                            ", ".join(f"{k} {v:.3f}" for k, v in change.evidence.items()))
        self.challenger.learn_one(x, label, weight, probs)
        self.risk.learn_one(xr, overridden, weight)

    def _q(self, role: str, tier: str) -> RollingQuality:
        q = self.quality.get((role, tier))
        if q is None:
            q = self.quality[(role, tier)] = RollingQuality(self.config.metrics_window, self.config.positive_label)
        return q

    # ---------------------------------------------------------------- outputs
    def online_f1(self, role: str) -> float | None:
        q = self.quality.get((role, "all"))
        return q.f1() if q is not None and len(q) else None

    def metrics(self) -> dict[str, float]:
        """Flat metrics for a ``ModelUpdate``: ``<role>.<tier>.<metric>``, ``override_risk.*``, ``gate.passed``."""
        out: dict[str, float] = {}
        for (role, tier), q in sorted(self.quality.items()):
            for k, v in q.report().items():
                out[f"{role}.{tier}.{k}"] = float(v)
        for k, v in self.risk_quality.report().items():
            out[f"override_risk.{k}"] = float(v)
        passed, _ = self.gate.evaluate()
        out["gate.passed"] = 1.0 if passed else 0.0
        out["serving.stage"] = float(STAGES.index(self.serving.stage))
        out["serving.share"] = float(self.serving.share)
        for k, v in self.gate.report().items():
            out[f"holdout.{k}.{self.gate.metric}"] = float(v[self.gate.metric])
        return out

    def trained_through(self) -> list[dict]:
        return [{"partition": p, "first": f, "last": last} for p, (f, last) in sorted(self.offsets.items())]

    def next_version(self, role: str) -> tuple[int, int | None]:
        """(new version, parent version) for a snapshot of ``role``."""
        parent = self.versions.get(role)
        self.versions[role] = (parent or 0) + 1
        return self.versions[role], parent

    def stats(self) -> dict:
        passed, reasons = self.gate.evaluate()
        return {"examples_seen": self.examples_seen, "outcomes": dict(self.outcomes), "versions": dict(self.versions),
                "trained_through": self.trained_through(), "pipeline": self.config.pipeline,
                "quality": {f"{r}.{t}": q.report() for (r, t), q in sorted(self.quality.items())},
                "override_risk": self.risk_quality.report(),
                "gate": {"passed": passed, "reasons": reasons, "holdout": self.gate.report()},
                "serving": {**self.serving.status(), "history": [
                    {"from": c.old, "to": c.new, "at_example": c.position, **c.evidence}
                    for c in list(self.serving.changes)[-20:]]},
                "reviewers": self.reputation.report(),
                "held_by_reviewer": dict(self.rate.held_by_reviewer),
                "features_dropped": self.features_dropped()}

    def features_dropped(self) -> int:
        """Feature occurrences both models ignored because they already hold their cap of distinct keys."""
        return sum(int(getattr(m, "dropped_features", 0) or getattr(getattr(m, "model", None), "dropped_features", 0))
                   for m in (self.risk, self.challenger))
