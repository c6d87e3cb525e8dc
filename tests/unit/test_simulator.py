"""Simulator: deterministic traffic on the Avro contract, visible shift and drift, reviewers in simulated time."""
from __future__ import annotations

import json

import numpy as np
import pytest

from loopline.connectors.simulator import (
    LABELS,
    NUMERIC_FEATURES,
    FraudTraffic,
    GroundTruthStore,
    ReviewerProfile,
    SimulatedReviewers,
    StaticProducerModel,
    default_reviewers,
)
from loopline.connectors.simulator.features import MERCHANTS
from loopline.processors.routing.validation import validate_prediction
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import PREDICTION, REVIEW_TASK, AvroSerde

CORRECTION = "io.loopline.CorrectionEvent"
SERDE = AvroSerde(SchemaCatalogue.load())


@pytest.fixture(scope="module")
def drifting() -> FraudTraffic:
    return FraudTraffic(seed=11, n_events=6_000, feature_shift_at=0.5, concept_drift_at=0.75)


def make_task(event: dict, i: int, tier: str = "review", priority: int = 1, created_at: int | None = None) -> dict:
    """A ReviewTask on the current schema, as the router would publish it."""
    created = event["emitted_at"] if created_at is None else created_at
    return {
        "task_id": f"task-{i}", "event_id": event["event_id"], "model_name": event["model_name"],
        "model_version": event["model_version"], "tier": tier, "priority": priority, "reason": "test",
        "policy_version": "p1", "audit": False, "sampling_propensity": 1.0, "created_at": created,
        "due_by": created + 600_000, "prediction": event,
        "insights": {"confidence": event["confidence"], "rule": "test", "override_risk": None,
                     "drift_status": None, "online_prediction": None, "top_contributions": []},
    }


def answer_all(profile: ReviewerProfile, n: int, seed: int = 3, traffic_seed: int = 5) -> tuple[list, dict]:
    """``n`` tasks on real predictions answered by one reviewer; returns (corrections, truth by event id)."""
    traffic = FraudTraffic(seed=traffic_seed, n_events=n)
    team = SimulatedReviewers(seed=seed, reviewers=[profile], max_backlog=n)
    truth = {}
    for chunk in traffic.iter_chunks(chunk_size=2_000):
        for j, event in enumerate(chunk.events):
            truth[event["event_id"]] = chunk.true_label(j)
            assert team.submit(make_task(event, chunk.start + j, created_at=0), truth[event["event_id"]])
    return team.drain(), truth


# ------------------------------------------------------------------ traffic
def test_same_seed_same_events_whatever_the_chunk_size():
    a = [e for c in FraudTraffic(seed=3, n_events=3_000, feature_shift_at=0.5).iter_chunks(1_000) for e in c.events]
    b = [e for c in FraudTraffic(seed=3, n_events=3_000, feature_shift_at=0.5).iter_chunks(777) for e in c.events]
    c = [e for c in FraudTraffic(seed=4, n_events=3_000, feature_shift_at=0.5).iter_chunks(1_000) for e in c.events]
    assert a == b
    assert [e["features_numeric"] for e in a] != [e["features_numeric"] for e in c]
    assert a[0]["event_id"] == "3-0" and c[0]["event_id"] == "4-0"


def test_ids_unique_and_timestamps_ordered(drifting):
    events = [e for c in drifting.iter_chunks(2_500) for e in c.events]
    assert len({e["event_id"] for e in events}) == len(events) == 6_000
    ts = np.array([e["emitted_at"] for e in events])
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] >= drifting.start_ms and ts[-1] < drifting.start_ms + 6_000 * 1000 / drifting.events_per_second


@pytest.mark.parametrize("start", [0, 3_100, 4_600])  # stationary, shifted, shifted + drifted
def test_events_round_trip_through_the_prediction_schema(drifting, start):
    chunk = next(drifting.iter_chunks(chunk_size=400, start=start))
    assert chunk.arrays.shifted.any() == (start >= 3_000) and chunk.arrays.drifted.any() == (start >= 4_500)
    for event in chunk.events:
        name, back = SERDE.decode(SERDE.encode(PREDICTION, event))
        assert name == PREDICTION and back == event
        validate_prediction(event, now_ms=event["emitted_at"], max_skew_ms=0)
        assert set(event["features_numeric"]) == set(NUMERIC_FEATURES)
        assert 0.5 <= event["confidence"] <= 1.0
        assert event["confidence"] == event["class_probabilities"][event["predicted_label"]]
        assert event["risk"]["amount"] == event["features_numeric"]["amount"]
        assert event["context"] == {k: event["features_categorical"][k] for k in ("country", "channel")}
        assert event["features_categorical"]["merchant_category"] in MERCHANTS


def test_ground_truth_is_off_the_wire_and_bounded():
    traffic = FraudTraffic(seed=2, n_events=5_000, truth_capacity=1_000)
    chunks = list(traffic.iter_chunks(chunk_size=1_000))
    assert all("label" not in k for e in chunks[0].events for k in e if k != "predicted_label")
    last = chunks[-1]
    assert [traffic.true_label(e["event_id"]) for e in last.events] == [LABELS[x] for x in last.labels]
    assert traffic.true_label(chunks[0].events[0]["event_id"]) is None  # forgotten
    assert traffic.true_label("someone-else-4999") is None
    assert traffic.truth._codes.nbytes + traffic.truth._owner.nbytes == 1_000 * 9


def test_ground_truth_store_vectorised_lookup():
    store = GroundTruthStore(capacity=10, prefix="x")
    store.record(0, np.array([1, 0, 1], dtype=np.int8))
    assert store.codes_of(np.array([0, 1, 2, 3])).tolist() == [1, 0, 1, -1]
    assert store.index_of("x-2") == 2 and store.index_of("y-2") is None and store.index_of("x-a") is None
    assert len(store) == 3


@pytest.mark.parametrize("k", [1.0, 2.0])
def test_feature_shift_moves_log_amount_by_k_sd_and_brings_a_new_country(k):
    traffic = FraudTraffic(seed=8, n_events=60_000, feature_shift_at=30_000, amount_shift_sd=k, new_country="PT")
    before, after = traffic.arrays(0, 30_000), traffic.arrays(30_000, 60_000)
    la, lb = np.log(before.column("amount")), np.log(after.column("amount"))
    moved = (lb.mean() - la.mean()) / la.std()
    assert moved == pytest.approx(k, rel=0.08)
    assert after.column("amount").mean() > before.column("amount").mean() * np.exp(0.8 * k)
    pt = traffic.country_names.index("PT")
    assert not np.any(before.country == pt)
    assert np.mean(after.country == pt) == pytest.approx(0.15, abs=0.01)
    # the rest of the population does not move
    for name in ("hour", "velocity_1h", "distance_km", "amount_to_avg"):
        assert abs(after.column(name).mean() - before.column(name).mean()) < 0.05 * before.column(name).std()


def test_feature_shift_is_visible_in_the_events():
    traffic = FraudTraffic(seed=9, n_events=4_000, feature_shift_at=0.5, amount_shift_sd=2.0)
    chunks = list(traffic.iter_chunks(chunk_size=2_000))
    amounts = [np.log([e["risk"]["amount"] for e in c.events]) for c in chunks]
    assert (amounts[1].mean() - amounts[0].mean()) / amounts[0].std() == pytest.approx(2.0, rel=0.1)
    assert "PT" in {e["context"]["country"] for e in chunks[1].events}
    assert "PT" not in {e["context"]["country"] for e in chunks[0].events}


def test_concept_drift_raises_model_error_while_inputs_look_the_same():
    traffic = FraudTraffic(seed=21, n_events=200_000, concept_drift_at=100_000)
    model = traffic.model
    before, after = traffic.arrays(0, 100_000), traffic.arrays(100_000, 200_000)
    assert not before.drifted.any() and after.drifted.all()
    err_before = np.mean(model.predict(before) != before.labels)
    err_after = np.mean(model.predict(after) != after.labels)
    base = before.labels.mean()
    assert 0.005 < err_before < base  # useful, yet imperfect on stationary data
    assert err_after > 1.4 * err_before  # 1.5-1.65x over seeds 0-5; standard error ~0.06 %
    recall_before = model.predict(before)[before.labels == 1].mean()
    recall_after = model.predict(after)[after.labels == 1].mean()
    assert recall_before > 0.15 and recall_after < 0.05
    # inputs: numeric means within 3 % of a standard deviation, categories within 1 point, same fraud rate
    for j, name in enumerate(NUMERIC_FEATURES):
        sd = before.numeric[:, j].std()
        assert abs(after.numeric[:, j].mean() - before.numeric[:, j].mean()) < 0.03 * sd, name
    for col in ("merchant", "country", "channel"):
        fb = np.bincount(getattr(before, col), minlength=12) / len(before)
        fa = np.bincount(getattr(after, col), minlength=12) / len(after)
        assert np.abs(fa - fb).max() < 0.01, col
    assert after.labels.mean() == pytest.approx(base, abs=0.004)


def test_model_is_deterministic_and_temperature_only_sharpens():
    traffic = FraudTraffic(seed=4, n_events=5_000)
    sample = traffic.arrays(0, 5_000)
    history = traffic.history(20_000)
    assert history.start == -20_000 and history.emitted_at.max() < traffic.start_ms
    hot = StaticProducerModel(temperature=0.5).fit(history)
    cold = StaticProducerModel(temperature=1.0).fit(FraudTraffic(seed=4, n_events=5_000).history(20_000))
    assert hot.weights == cold.weights
    assert np.array_equal(hot.predict(sample), cold.predict(sample))
    conf = lambda p: np.maximum(p, 1 - p).mean()  # noqa: E731
    assert conf(hot.predict_proba(sample)) > conf(cold.predict_proba(sample))
    with pytest.raises(RuntimeError):
        StaticProducerModel().predict(sample)


def test_bad_positions_are_rejected():
    with pytest.raises(ValueError):
        FraudTraffic(seed=1, n_events=10, feature_shift_at=1.5)
    with pytest.raises(TypeError):
        FraudTraffic(seed=1, n_events=10, concept_drift_at=True)
    with pytest.raises(ValueError):
        FraudTraffic(seed=-1)


# ------------------------------------------------------------------ reviewers
def test_corrections_round_trip_through_the_correction_schema():
    traffic = FraudTraffic(seed=6, n_events=300)
    chunk = next(traffic.iter_chunks(chunk_size=300))
    team = SimulatedReviewers(seed=1, reviewers=default_reviewers(adversarial=True))
    for i, event in enumerate(chunk.events):
        task = make_task(event, i, tier="escalate" if i % 5 == 0 else "review", created_at=0)
        assert SERDE.decode(SERDE.encode(REVIEW_TASK, task))[1] == task
        team.submit(task, chunk.true_label(i))
    corrections = team.drain()
    assert len(corrections) == 300 and team.backlog == 0 and team.in_review == 0
    assert {c["action"] for c in corrections} >= {"approve", "override", "unsure"}
    for c in corrections:
        name, back = SERDE.decode(SERDE.encode(CORRECTION, c))
        assert name == CORRECTION and back == c
        assert c["source"] == "simulator" and c["model_version"] == "v1"
    ids = [c["correction_id"] for c in corrections]
    assert len(set(ids)) == len(ids)
    predicted = {e["event_id"]: e["predicted_label"] for e in chunk.events}
    for c in corrections:
        if c["action"] == "unsure":
            assert c["corrected_label"] is None
        else:
            assert (c["action"] == "approve") == (c["corrected_label"] == predicted[c["event_id"]])
    seniors = {"senior-1", "senior-2"}
    tiers = {c["event_id"]: c["tier"] for c in corrections}
    assert all(c["reviewer_id"] in seniors for c in corrections if tiers[c["event_id"]] == "escalate")
    assert all(c["reviewer_id"] != "senior-2" for c in corrections if c["tier"] == "review")


def test_reviewers_are_deterministic_for_a_seed():
    profile = ReviewerProfile("r", 30, 2.0, 1.0, label_noise=0.2, unsure_rate=0.1)
    first, _ = answer_all(profile, 500, seed=7)
    again, _ = answer_all(profile, 500, seed=7)
    other, _ = answer_all(profile, 500, seed=8)
    assert first == again and first != other


def test_capacity_is_respected_and_the_rest_waits():
    traffic = FraudTraffic(seed=1, n_events=200)
    events = next(traffic.iter_chunks(200)).events
    team = SimulatedReviewers(seed=0, reviewers=[
        ReviewerProfile("slow", capacity_per_minute=3, latency_mean_s=5, latency_sd_s=2, tiers=("review",)),
        ReviewerProfile("fast", capacity_per_minute=6, latency_mean_s=4, latency_sd_s=2, tiers=("review",)),
    ])
    for i, e in enumerate(events):
        team.submit(make_task(e, i, created_at=0), "legit")
    done = team.advance(10 * 60_000)
    assert team.backlog_by_tier() == {"review": team.backlog, "escalate": 0}
    assert team.backlog + team.in_review + len(done) == 200
    assert team.backlog >= 200 - (3 + 6) * 10 - 2
    stats = team.stats()
    assert json.loads(json.dumps(stats)) == stats  # plain Python numbers, ready for a log line or a view
    assert stats["reviewers"]["slow"]["assigned"] <= 3 * 10 + 1
    assert stats["reviewers"]["fast"]["assigned"] <= 6 * 10 + 1
    for rid, gap_s in (("slow", 20.0), ("fast", 10.0)):
        starts = sorted(c["reviewed_at"] - c["review_seconds"] * 1000 for c in done if c["reviewer_id"] == rid)
        assert len(starts) > 5 and np.diff(starts).min() >= gap_s * 1000 - 2
    assert all(c["reviewed_at"] <= 10 * 60_000 for c in done)
    later = team.advance(20 * 60_000)
    assert all(10 * 60_000 < c["reviewed_at"] <= 20 * 60_000 for c in later)


def test_reviewer_works_one_task_at_a_time_when_slower_than_capacity():
    team = SimulatedReviewers(seed=0, reviewers=[ReviewerProfile("r", 60, latency_mean_s=30, latency_sd_s=10)])
    events = next(FraudTraffic(seed=1, n_events=50).iter_chunks(50)).events
    for i, e in enumerate(events):
        team.submit(make_task(e, i, created_at=0), "legit")
    done = team.drain()
    spans = sorted((c["reviewed_at"] - c["review_seconds"] * 1000, c["reviewed_at"]) for c in done)
    assert all(nxt[0] >= prev[1] - 2 for prev, nxt in zip(spans, spans[1:]))  # ms rounding


def test_higher_priority_is_claimed_first_and_arrivals_wait_for_their_time():
    events = next(FraudTraffic(seed=1, n_events=4).iter_chunks(4)).events
    team = SimulatedReviewers(seed=0, reviewers=[ReviewerProfile("r", 60, 1.0)])
    team.submit(make_task(events[0], 0, priority=1, created_at=0), "legit")
    team.submit(make_task(events[1], 1, priority=9, created_at=0), "legit")
    team.submit(make_task(events[2], 2, priority=5, created_at=0), "legit")
    team.submit(make_task(events[3], 3, priority=99, created_at=120_000), "legit")
    order = [c["event_id"] for c in team.advance(60_000)]
    assert order == [events[1]["event_id"], events[2]["event_id"], events[0]["event_id"]]
    assert team.backlog == 1  # the last one has not arrived yet
    (late,) = team.advance(180_000)
    assert late["reviewed_at"] == 121_000


@pytest.mark.parametrize("noise", [0.05, 0.2])
def test_label_noise_rate_within_tolerance(noise):
    corrections, truth = answer_all(ReviewerProfile("r", 120, 1.0, 0.5, label_noise=noise), 6_000)
    wrong = np.mean([c["corrected_label"] != truth[c["event_id"]] for c in corrections])
    assert wrong == pytest.approx(noise, abs=4 * np.sqrt(noise * (1 - noise) / 6_000))


def test_adversarial_flip_rate_within_tolerance():
    rate = 0.25
    corrections, truth = answer_all(ReviewerProfile("x", 120, 1.0, adversarial_flip_rate=rate), 6_000)
    wrong = np.mean([c["corrected_label"] != truth[c["event_id"]] for c in corrections])
    assert wrong == pytest.approx(rate, abs=4 * np.sqrt(rate * (1 - rate) / 6_000))
    assert all(c["action"] in ("approve", "override") for c in corrections)


def test_unsure_rate_and_full_backlog():
    corrections, _ = answer_all(ReviewerProfile("u", 120, 1.0, unsure_rate=0.1), 4_000)
    unsure = np.mean([c["action"] == "unsure" for c in corrections])
    assert unsure == pytest.approx(0.1, abs=0.02)
    team = SimulatedReviewers(seed=0, reviewers=[ReviewerProfile("r", 1, 1.0, tiers=("review",))], max_backlog=2)
    events = next(FraudTraffic(seed=1, n_events=3).iter_chunks(3)).events
    accepted = [team.submit(make_task(e, i, created_at=0), "legit") for i, e in enumerate(events)]
    assert accepted == [True, True, False] and team.stats()["dropped"] == 1
    with pytest.raises(ValueError):
        team.submit(make_task(events[0], 9, tier="escalate"), "legit")
