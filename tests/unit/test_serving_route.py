"""A challenger promoted on audited evidence serves auto-tier decisions, and every decision says who served it
(issue #17: served decisions improve, with rollback; docs/loop.md)."""
from __future__ import annotations

import numpy as np
import pytest

from loopline.processors.learning import LearnerConfig, ModelLearner, build_update
from loopline.processors.learning.features import example_features
from loopline.processors.learning.scorer import RiskScorer
from loopline.processors.learning.serving import STAGES, share_unit
from loopline.processors.learning.snapshot import load_model
from loopline.processors.policy.threshold import ThresholdPolicy
from loopline.processors.routing.router import InputRecord, Router, iter_decisions
from loopline.processors.testing import FlipEveryOther, make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events, frames_from_events
from loopline.processors.wire.serde import DECISION, PREDICTION_BATCH, AvroSerde

KEY = b"test-key"
SERDE = AvroSerde(SchemaCatalogue.load())
NOW = 1_800_000_000_000


def test_each_decision_says_who_served_it_and_what():
    evs = make_events(400, seed=4, start_ms=NOW - 1000)
    rec = InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs, "b")), "p", 0, 0)
    router = Router(SERDE, ThresholdPolicy(0.9, 0.6), 300_000, max_decisions_per_record=150, decision_events=True)
    router.server = FlipEveryOther()
    res = router.route([rec], now_ms=NOW)
    rows = [d for o in res.outputs if o.role == "decisions" for d in iter_decisions(SERDE, o.value)]
    assert [d["event_id"] for d in rows] == [e["event_id"] for e in evs]
    served = [(i, d) for i, d in enumerate(rows) if d["served_by"] == "challenger:v9"]
    assert served and all(d["tier"] == "auto" and i % 2 == 0 for i, d in served)  # a human decides the others
    assert all(d["served_label"] not in (None, d["predicted_label"]) for _, d in served)
    assert all(d["served_by"] == "producer" and d["served_label"] is None
               for i, d in enumerate(rows) if d["tier"] != "auto" or i % 2)
    singles = {SERDE.decode(o.value)[1]["event_id"]: SERDE.decode(o.value)[1]
               for o in res.outputs if o.role == "decision_events"}
    assert all(singles[d["event_id"]]["served_by"] == d["served_by"] for d in rows)
    assert sum(len(r.served.labels) for r in res.routed if r.served is not None) == len(served)
    router.server = None  # the producer serves: nothing marked
    plain = [d for o in router.route([rec], now_ms=NOW).outputs if o.role == "decisions"
             for d in iter_decisions(SERDE, o.value)]
    assert {d["served_by"] for d in plain} == {"producer"} and {d["served_label"] for d in plain} == {None}
    assert SERDE.decode(SERDE.encode(DECISION, plain[0]))[1] == plain[0]


def audits(n: int, seed: int, start: int = 0, flip_after: int | None = None) -> tuple[list[dict], list[dict]]:
    """Audited auto-tier examples of a producer that says "legit" at 0.97 while the truth is "fraud"
    whenever f00 > 0 (after ``flip_after``: the truth is the producer's again), and the events."""
    evs = make_events(n, seed=seed, start_ms=NOW)
    out = []
    for i, e in enumerate(evs):
        e["predicted_label"], e["confidence"] = "legit", 0.97
        e["class_probabilities"] = None
        changed = flip_after is None or start + i < flip_after
        label = "fraud" if e["features_numeric"]["f00"] > 0 and changed else "legit"
        out.append({"event_id": e["event_id"], "model_name": "fraud", "model_version": "v1",
                    "correction_id": f"c-{seed}-{i}", "reviewer_id": f"r{i % 7}",
                    "action": "approve" if label == "legit" else "override", "label": label,
                    "effective_label": label, "answers_so_far": 1, "tier": "auto", "audit": True,
                    "sampling_propensity": 0.02, "reason": "audit", "policy_version": "p1",
                    "task_created_at": NOW + i, "reviewed_at": NOW + i, "review_seconds": 5.0, "prediction": e})
    return out, evs


@pytest.fixture(scope="module")
def learned():
    """A challenger trained on audits of a producer that became confidently wrong on half the events."""
    lr = ModelLearner("fraud", LearnerConfig(positive_label="fraud", reviewer_max_share=1.0,
                                             reviewer_max_per_window=10**9, serving_min_examples=100))
    examples, _ = audits(1500, seed=5)
    lr.learn_batch([(e, 0, i) for i, e in enumerate(examples)])
    _, events = audits(300, seed=6)
    return lr, examples, events


def test_the_learner_moves_a_better_challenger_to_serving_on_audits_alone_and_back_when_it_is_worse(learned):
    lr, examples, _ = learned
    moves = [(c.old, c.new) for c in lr.serving.changes]
    assert moves == [("champion", "shadow"), ("shadow", "share"), ("share", "full")], lr.serving.status()
    first = lr.serving.changes[0]
    assert first.evidence["challenger_f1"] > first.evidence["champion_f1"] + 0.02
    m = lr.metrics()
    assert STAGES[int(m["serving.stage"])] == "full"
    again = load_model(build_update("fraud", "learner", 1, lr, key=KEY), KEY)  # the learner snapshot keeps it
    assert again.serving.stage == "full" and again.serving.gate() is True
    # the concept comes back: the producer is right again and the challenger, still flagging f00 > 0, is worse
    back, _ = audits(400, seed=7, start=0, flip_after=0)
    again.learn_batch([(e, 1, i) for i, e in enumerate(back)])
    last = again.serving.changes[-1]
    assert (last.old, last.new) == ("full", "champion") and last.evidence["rollback"] == 1.0
    assert again.serving.stage == "champion"


@pytest.mark.parametrize("stage", STAGES)
def test_route_workers_serve_as_the_challenger_snapshot_says(learned, stage):
    lr, _, events = learned
    metrics = {**lr.metrics(), "serving.stage": float(STAGES.index(stage)), "serving.share": 0.3}
    scorer = RiskScorer(KEY)
    assert scorer.accept(build_update("fraud", "challenger", 5, lr.challenger, key=KEY, metrics=metrics))
    frame = frames_from_events(events)[0]
    auto = np.arange(frame.n) % 3 != 0  # as if a third went to humans
    served = scorer.serve_frame(frame, auto)
    if stage in ("champion", "shadow"):
        assert served is None
        return
    want = auto if stage == "full" else auto & np.array([share_unit(e) < 0.3 for e in frame.event_ids])
    assert served.by == "challenger:v5" and (served.mask == want).all()
    rows = [frame.row(i) for i in np.flatnonzero(want)]
    assert served.labels == [lr.challenger.predict_one(lr.challenger.predict_proba_one(example_features(r)))
                             for r in rows]
