"""The route side: frame scoring equals River's own predictions, hot swap by version, refusal keeps the old model."""
from __future__ import annotations

import numpy as np
import pytest

from loopline.connectors.simulator import FraudTraffic
from loopline.connectors.simulator.corrections import corrected_examples
from loopline.processors.learning import LearnerConfig, ModelLearner, SnapshotIntegrityError, build_update
from loopline.processors.learning.features import risk_features
from loopline.processors.learning.scorer import RiskScorer
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import frames_from_events
from loopline.processors.wire.serde import AvroSerde

KEY = b"test-key"


@pytest.fixture(scope="module")
def trained():
    traffic = FraudTraffic(seed=8, n_events=20_000, concept_drift_at=0.1)
    examples, _ = corrected_examples(traffic, 0, 20_000, seed=8)
    lr = ModelLearner("fraud", LearnerConfig(positive_label="fraud", reviewer_max_share=1.0,
                                             reviewer_max_per_window=10**9))
    lr.learn_batch([(e, 0, i) for i, e in enumerate(examples)])
    events = next(traffic.iter_chunks(chunk_size=500, start=20_000, stop=20_500)).events
    return lr, events


def test_frame_scores_equal_river_predictions(trained):
    lr, events = trained
    scorer = RiskScorer(KEY)
    frame = frames_from_events(events)[0]
    assert scorer.score_frame(frame) is None  # no model yet
    assert scorer.accept(build_update("fraud", "override_risk", 1, lr.risk, key=KEY))
    got = scorer.score_frame(frame)
    want = [lr.risk.predict_proba_one(risk_features(e)) for e in frame_events(frame)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert 0.0 < got.min() < got.max() < 1.0


def frame_events(frame):
    return [frame.row(i) for i in range(frame.n)]


def test_newest_version_wins_and_a_tampered_snapshot_keeps_the_old_model(trained):
    lr, events = trained
    scorer = RiskScorer(KEY)
    v2 = build_update("fraud", "override_risk", 2, lr.risk, key=KEY)
    assert scorer.accept(v2)
    assert not scorer.accept(build_update("fraud", "override_risk", 1, lr.risk, key=KEY))  # older: ignored
    bad = build_update("fraud", "override_risk", 3, {"not": "a model"}, key=b"other-key")
    with pytest.raises(SnapshotIntegrityError):
        scorer.accept(bad)
    assert scorer.version("fraud", "override_risk") == 2
    assert scorer.score_frame(frames_from_events(events)[0]) is not None


def test_insights_fit_the_review_insights_schema(trained):
    lr, events = trained
    scorer = RiskScorer(KEY, top=3)
    assert scorer.insights(events[0], "review", "low_confidence") == {}
    scorer.accept(build_update("fraud", "override_risk", 1, lr.risk, key=KEY))
    scorer.accept(build_update("fraud", "challenger", 1, lr.challenger, key=KEY))
    ins = scorer.insights(events[0], "review", "low_confidence")
    assert set(ins) == {"override_risk", "online_prediction", "top_contributions"}
    assert ins["online_prediction"] in ("fraud", "legit") and 0 < ins["override_risk"] < 1
    assert len(ins["top_contributions"]) == 3
    mags = [abs(c["contribution"]) for c in ins["top_contributions"]]
    assert mags == sorted(mags, reverse=True)
    # the router's frame score of the same event is the same number, and is used as is when passed
    frame = frames_from_events(events[:1])[0]
    assert scorer.score_frame(frame)[0] == pytest.approx(ins["override_risk"])
    assert scorer.insights(events[0], "review", "low_confidence", override_risk=0.25)["override_risk"] == 0.25
    serde = AvroSerde(SchemaCatalogue.load())
    record = {"confidence": 0.7, "rule": "low_confidence", "drift_status": None, **ins}
    name, back = serde.decode(serde.encode("io.loopline.ReviewInsights", record))
    assert back["top_contributions"] == ins["top_contributions"]


def test_scorer_holds_at_most_max_models_and_refuses_the_next(trained):
    """Model names come from producers: the route side keeps snapshots of at most ``max_models`` models."""
    from loopline.processors.errors import ModelLimitError

    lr, _ = trained
    scorer = RiskScorer(KEY, max_models=3)
    for i in range(3):
        assert scorer.accept(build_update(f"m{i}", "override_risk", 1, lr.risk, key=KEY))
    assert scorer.accept(build_update("m0", "challenger", 1, lr.challenger, key=KEY))  # a known model: another role
    assert scorer.accept(build_update("m1", "override_risk", 2, lr.risk, key=KEY))  # a newer version swaps in
    with pytest.raises(ModelLimitError):
        scorer.accept(build_update("m3", "override_risk", 1, lr.risk, key=KEY))
    assert {m for m, _ in scorer.slots} == {"m0", "m1", "m2"}


def test_learner_runtime_learns_at_most_max_models_and_dead_letters_the_rest():
    from loopline.processors.routing.router import InputRecord
    from loopline.processors.wire.names import TRAINING_EXAMPLE
    from loopline.streams.learning.runtime import LearnerRuntime
    from loopline.streams.settings import Settings

    traffic = FraudTraffic(seed=3, n_events=2_000)
    examples, _ = corrected_examples(traffic, 0, 2_000, seed=3)
    serde = AvroSerde(SchemaCatalogue.load())
    rt = LearnerRuntime(Settings(learn_max_models=2), serde)
    records = []
    for i, e in enumerate(examples[:60]):
        e = {**e, "model_name": f"model-{i % 4}"}  # four producer-chosen names, two allowed
        records.append(InputRecord(serde.encode(TRAINING_EXAMPLE, e), "t.training", 0, i, [], None))
    counts, _, dead = rt.learn_records(records)
    assert set(rt.learners) == {"model-0", "model-1"} and set(counts) == {"model-0", "model-1"}
    assert len(dead) == 30 and rt.stats()["examples_over_model_limit"] == 30
    assert {dict(d.headers)["loopline.error.class"] for d in dead} == {b"model_limit"}
