"""The learner and the risk scorer on a real broker: training examples in, signed ModelUpdates out; a restarted
learner resumes from its snapshot and ends with the model of an uninterrupted replay; a route worker refuses a
tampered snapshot, dead-letters it and keeps its model."""
from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.connectors.simulator import FraudTraffic
from loopline.connectors.simulator.corrections import corrected_examples
from loopline.processors.learning import LearnerConfig, ModelLearner, build_update, load_model
from loopline.processors.learning.features import example_features
from loopline.processors.learning.scorer import RiskScorer
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde
from loopline.streams.learning.kafka_io import read_to_end
from tests.helpers import headers_dict, read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())
TE, MU = "io.loopline.TrainingExample", "io.loopline.ModelUpdate"


def produce(settings, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random",
                  "enable.idempotence": True})
    for key, value in records:
        p.produce(settings.topics.training, key=key, value=value)
    assert p.flush(20) == 0


def updates(settings, pred) -> list[dict]:
    msgs = read_topic(settings.kafka_bootstrap, settings.topics.model_updates,
                      lambda ms: pred([SERDE.decode(m.value())[1] for m in ms]), timeout=90)
    return [SERDE.decode(m.value())[1] for m in msgs]


def newest(ups: list[dict], role: str) -> dict:
    return max((u for u in ups if u["role"] == role), key=lambda u: u["version"])


def test_learner_publishes_signed_snapshots_and_resumes_after_restart(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"agents": "learn", "app_id": loopline_settings.app_id + "-learn"})
    key = s.snapshot_hmac_key.get_secret_value().encode()
    traffic = FraudTraffic(seed=12, n_events=40_000, concept_drift_at=0.2)
    examples, _ = corrected_examples(traffic, 0, 40_000, reviewers=(("a", 0.03), ("b", 0.04), ("c", 0.03)), seed=12)
    first, second = examples[:2500], examples[2500:3500]
    produce(s, [(b"fraud", SERDE.encode(TE, e)) for e in first] + [(b"fraud", b"\x00not avro")])

    w = WorkerProcess(s, tmp_path / "learn1.log").start()
    try:
        ups = updates(s, lambda us: any(u["role"] == "learner" and u["examples_seen"] == len(first) for u in us))
        for role in ("challenger", "override_risk", "learner"):
            up = newest(ups, role)
            assert up["model_format"] == "river-pickle-zlib/1" and up["examples_seen"] == len(first)
            load_model(up, key)  # HMAC verifies with the shared key
        ch = newest(ups, "challenger")
        assert ch["parent_version"] == (ch["version"] - 1 or None)
        assert "challenger.all.f1" in ch["metrics"] and "champion.review.log_loss" in ch["metrics"]
        [(part, last)] = [(r["partition"], r["last"]) for r in ch["trained_through"]]
        metrics = w.get("/metrics").decode()
        assert f'loopline_learn_examples_total{{model="fraud",outcome="learned"}} {float(len(first))}' in metrics
        assert 'loopline_online_f1{model="fraud",role="challenger"}' in metrics
        assert 'loopline_feedback_to_model_seconds_count{model="fraud",stage="learned"}' in metrics
        stats = json.loads(w.get("/learning"))
        assert stats["learner"]["models"]["fraud"]["examples_seen"] == len(first)
        dl = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= 1, timeout=30)
        assert dl[0].value() == b"\x00not avro"
        assert headers_dict(dl[0])["loopline.source.topic"] == s.topics.training
    finally:
        w.stop()

    # while the learner is down: new corrections, and 300 old ones delivered again
    produce(s, [(b"fraud", SERDE.encode(TE, e)) for e in second + first[:300]])
    w = WorkerProcess(s, tmp_path / "learn2.log").start()
    try:
        total = len(first) + len(second)
        ups = updates(s, lambda us: any(u["role"] == "challenger" and u["examples_seen"] == total for u in us)
                      and any(u["role"] == "learner" and u["examples_seen"] == total for u in us))
        final = newest(ups, "learner")
        outcomes = json.loads(w.get("/learning"))["learner"]["models"]["fraud"]["outcomes"]
        assert outcomes["duplicate"] >= 300 and outcomes["learned"] == total
    finally:
        w.stop()

    # deterministic rebuild: replaying the training topic from the start gives the same model
    msgs = read_to_end(s.kafka_bootstrap, s.topics.training)
    rebuilt = ModelLearner("fraud", LearnerConfig())
    rebuilt.learn_batch([(SERDE.decode(m.value())[1], m.partition(), m.offset())
                         for m in msgs if m.value() != b"\x00not avro"])
    resumed = load_model(final, key)
    probe = [example_features(e["prediction"]) for e in examples[5000:5300]]
    assert [resumed.challenger.predict_proba_one(x) for x in probe] == \
           [rebuilt.challenger.predict_proba_one(x) for x in probe]
    assert [resumed.risk.predict_proba_one(x) for x in probe] == [rebuilt.risk.predict_proba_one(x) for x in probe]
    assert part in {r["partition"] for r in final["trained_through"]} and last < final["trained_through"][0]["last"]


def test_route_worker_refuses_a_tampered_snapshot_and_keeps_its_model(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"agents": "route"})
    key = s.snapshot_hmac_key.get_secret_value().encode()
    traffic = FraudTraffic(seed=3, n_events=5000)
    examples, _ = corrected_examples(traffic, 0, 5000, seed=3)
    lr = ModelLearner("fraud", LearnerConfig())
    lr.learn_batch([(e, 0, i) for i, e in enumerate(examples)])
    good = build_update("fraud", "override_risk", 1, lr.risk, key=key)
    w = WorkerProcess(s, tmp_path / "route.log").start()
    try:
        p = Producer({"bootstrap.servers": s.kafka_bootstrap})
        p.produce(s.topics.model_updates, key=b"fraud/override_risk", value=SERDE.encode(MU, good))
        p.flush(10)
        deadline = time.monotonic() + 30
        while json.loads(w.get("/learning")).get("risk_scorer", {}).get("fraud/override_risk") != 1:
            assert time.monotonic() < deadline, "the good snapshot was never swapped in"
            time.sleep(0.2)
        tampered = build_update("fraud", "override_risk", 2, lr.risk, key=key)
        tampered["model_bytes"] = tampered["model_bytes"][:-3] + b"xyz"
        bad_value = SERDE.encode(MU, tampered)
        p.produce(s.topics.model_updates, key=b"fraud/override_risk", value=bad_value)
        p.flush(10)
        dl = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= 1, timeout=30)
        assert dl[0].value() == bad_value
        h = headers_dict(dl[0])
        assert h["loopline.error.class"] == "snapshot_hmac" and h["loopline.source.topic"] == s.topics.model_updates
        assert json.loads(w.get("/learning"))["risk_scorer"]["fraud/override_risk"] == 1
        m = w.get("/metrics").decode()
        assert 'loopline_snapshots_refused_total{reason="snapshot_hmac"} 1.0' in m
        assert 'loopline_model_updates_total{model="fraud",role="override_risk"} 1.0' in m

        # review tasks now carry the online model's insights
        p.produce(s.topics.model_updates, key=b"fraud/challenger",
                  value=SERDE.encode(MU, build_update("fraud", "challenger", 1, lr.challenger, key=key)))
        p.flush(10)
        deadline = time.monotonic() + 30
        while json.loads(w.get("/learning"))["risk_scorer"].get("fraud/challenger") != 1:
            assert time.monotonic() < deadline, "the challenger was never swapped in"
            time.sleep(0.2)
        events = next(traffic.iter_chunks(chunk_size=50, start=5000, stop=5050)).events
        for e in events:
            e["confidence"] = 0.75  # the threshold policy sends these to the analyst queue
        with PredictionProducer(s) as prod:
            prod.send_many(events)
        tasks = read_topic(s.kafka_bootstrap, s.topics.review_analyst, lambda ms: len(ms) >= 50, timeout=60)
        scorer = RiskScorer(key)
        scorer.accept(good)
        for t in (SERDE.decode(m.value())[1] for m in tasks):
            ins = t["insights"]
            assert ins["override_risk"] == pytest.approx(scorer.insights(t["prediction"], "review", "")["override_risk"])
            assert ins["online_prediction"] in ("fraud", "legit") and len(ins["top_contributions"]) == 5
    finally:
        w.stop()


def test_tombstone_on_model_updates_is_a_delete_not_a_forgery(loopline_settings, tmp_path):
    """Issue #19 item 8: a null value on the compacted model-updates topic is neither refused nor logged as an error."""
    s = loopline_settings.model_copy(update={"agents": "route", "log_level": "info"})
    key = s.snapshot_hmac_key.get_secret_value().encode()
    traffic = FraudTraffic(seed=5, n_events=2000)
    examples, _ = corrected_examples(traffic, 0, 2000, seed=5)
    lr = ModelLearner("fraud", LearnerConfig())
    lr.learn_batch([(e, 0, i) for i, e in enumerate(examples)])
    w = WorkerProcess(s, tmp_path / "route.log").start()
    try:
        p = Producer({"bootstrap.servers": s.kafka_bootstrap})
        p.produce(s.topics.model_updates, key=b"fraud/challenger", value=None)  # tombstone first ...
        p.produce(s.topics.model_updates, key=b"fraud/override_risk",           # ... then a good snapshot
                  value=SERDE.encode(MU, build_update("fraud", "override_risk", 1, lr.risk, key=key)))
        p.flush(10)
        deadline = time.monotonic() + 30
        while json.loads(w.get("/learning")).get("risk_scorer", {}).get("fraud/override_risk") != 1:
            assert time.monotonic() < deadline, "the snapshot after the tombstone was never swapped in"
            time.sleep(0.2)
        m = w.get("/metrics").decode()
        assert "loopline_snapshots_refused_total{" not in m
        assert 'error_class="snapshot' not in m
    finally:
        w.stop()
    log = (tmp_path / "route.log").read_text(errors="replace")
    # the old behaviour logged "model snapshot refused ..." at ERROR for the tombstone; other lines (the
    # control plane's start-up warning, shutdown noise) are not about the tombstone
    about_snapshots = [line for line in log.splitlines() if "snapshot" in line.lower() or "tombstone" in line.lower()]
    assert [line for line in about_snapshots if "ERROR" in line or "refused" in line] == []


def test_a_challenger_promoted_on_audits_serves_the_route_workers_decisions(loopline_settings, tmp_path):
    """Issue #17: audited answers -> learn worker judges the challenger (shadow, share, full) -> its snapshot
    carries the stage -> a route worker serves auto-tier decisions with it, and each decision names its server."""
    from loopline.processors.learning.serving import STAGES
    from loopline.processors.routing.router import iter_decisions
    from tests.conftest import free_port
    from tests.unit.test_serving_route import audits

    base = loopline_settings.model_copy(update={"serving_min_examples": 100})
    learn = base.model_copy(update={"agents": "learn", "app_id": base.app_id + "-learn"})
    route = base.model_copy(update={"agents": "route", "web_port": free_port()})
    examples, _ = audits(1500, seed=5)  # the producer says "legit" at 0.97; the truth is "fraud" when f00 > 0
    produce(learn, [(b"fraud", SERDE.encode(TE, e)) for e in examples])
    lw = WorkerProcess(learn, tmp_path / "learn.log").start()
    rw = WorkerProcess(route, tmp_path / "route.log").start()
    try:
        ups = updates(learn, lambda us: any(u["role"] == "challenger" and u["examples_seen"] == len(examples)
                                            for u in us))
        ch = max((u for u in ups if u["role"] == "challenger" and u["examples_seen"] == len(examples)),
                 key=lambda u: u["version"])
        assert STAGES[int(ch["metrics"]["serving.stage"])] == "full", ch["metrics"]
        serving = json.loads(lw.get("/learning"))["learner"]["models"]["fraud"]["serving"]
        assert [(h["from"], h["to"]) for h in serving["history"]] == [("champion", "shadow"), ("shadow", "share"),
                                                                      ("share", "full")]
        deadline = time.monotonic() + 30
        held = None
        while held is None or held < ch["version"]:
            assert time.monotonic() < deadline, f"the route worker never took the challenger (holds {held})"
            time.sleep(0.2)
            held = json.loads(rw.get("/learning")).get("risk_scorer", {}).get("fraud/challenger")
        ch = newest(updates(learn, lambda us: True), "challenger")  # what it holds now
        _, events = audits(200, seed=9)
        for e in events:
            e["emitted_at"] = int(time.time() * 1000)
        with PredictionProducer(route) as prod:
            prod.send_many(events)
        msgs = read_topic(route.kafka_bootstrap, route.topics.decisions,
                          lambda ms: sum(1 for m in ms for _ in iter_decisions(SERDE, m.value())) >= 200, timeout=60)
        rows = [d for m in msgs for d in iter_decisions(SERDE, m.value())]
        model = load_model(ch, learn.snapshot_hmac_key.get_secret_value().encode())  # the challenger itself
        truth = {e["event_id"]: "fraud" if e["features_numeric"]["f00"] > 0 else "legit" for e in events}
        auto = [d for d in rows if d["tier"] == "auto"]
        assert len(auto) >= 150 and {d["served_by"] for d in auto} == {f"challenger:v{ch['version']}"}
        assert all(d["served_by"] == "producer" for d in rows if d["tier"] != "auto")
        by_id = {e["event_id"]: e for e in events}
        for d in auto:
            want = model.predict_one(model.predict_proba_one(example_features(by_id[d["event_id"]])))
            assert (d["served_label"] or d["predicted_label"]) == want
        right = sum((d["served_label"] or d["predicted_label"]) == truth[d["event_id"]] for d in auto)
        producer_right = sum(d["predicted_label"] == truth[d["event_id"]] for d in auto)
        print(f"\n[serving] auto-tier decisions right: served {right}/{len(auto)}, producer {producer_right}/{len(auto)}")
        assert right > producer_right + 0.2 * len(auto)
        assert f'loopline_served_by_challenger_total{{model="fraud"}} {float(len(auto))}' in rw.get("/metrics").decode()
    finally:
        rw.stop()
        lw.stop()
