"""Topic names, declared once. Plain data: importing this pulls in no Kafka client."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicNames:
    """All Loopline topics under one namespace (``loopline`` by default).

    >>> TopicNames("loopline").predictions
    'loopline.predictions'
    """

    namespace: str = "loopline"

    def _n(self, suffix: str) -> str:
        return f"{self.namespace}.{suffix}"

    @property
    def predictions(self) -> str:
        return self._n("predictions")

    @property
    def decisions(self) -> str:
        return self._n("decisions")

    @property
    def review_analyst(self) -> str:
        return self._n("review.analyst")

    @property
    def review_escalation(self) -> str:
        return self._n("review.escalation")

    @property
    def corrections(self) -> str:
        return self._n("corrections")

    @property
    def training(self) -> str:
        return self._n("training")

    @property
    def drift(self) -> str:
        return self._n("drift")

    @property
    def model_updates(self) -> str:
        return self._n("model-updates")

    @property
    def policy_events(self) -> str:
        return self._n("policy-events")

    @property
    def drift_sketches(self) -> str:
        """Internal: per-worker drift summaries, keyed by model, merged by the drift agent."""
        return self._n("drift-sketches")

    @property
    def retrain_requests(self) -> str:
        return self._n("retrain-requests")

    @property
    def dead_letter(self) -> str:
        return self._n("dead-letter")

    @property
    def decision_events(self) -> str:
        """Optional (``LOOPLINE_DECISION_EVENTS``): one ``RoutingDecision`` per prediction, keyed by event_id."""
        return self._n("decision-events")

    def all(self) -> list[str]:
        return [self.predictions, self.decisions, self.review_analyst, self.review_escalation,
                self.corrections, self.training, self.drift, self.model_updates,
                self.policy_events, self.drift_sketches, self.retrain_requests, self.dead_letter,
                self.decision_events]

    def compacted(self) -> set[str]:
        return {self.model_updates}
