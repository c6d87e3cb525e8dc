"""Drift wired into real workers on the real broker.

One run per worker count on the same seeded stream (two models, a +1 sd shift
of ``f00`` from event 20,000 to 32,000, then back): 1 worker and 2 workers in
one group publish the same DriftEvents. The 1-worker run also checks the
policies (``fraud``: tighten_routing, ``fraud2``: retrain), the drift status on
review tasks, the metrics at /metrics, and the dead letters of bad records on
drift-sketches.

Seeds 11 and 14 are streams without a stationary false alarm, so the policy
assertions are about the injected shift (with these settings, 1,000 events per
bucket, 5 of 10 seeds give a PSI false alarm on some of the 15 signals of a
60,000-event stream: ~0.1 per 100,000 events per detector, within the budget,
but ~1.3 per 100,000 events per model; see the report of issue #4).
"""
from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from loopline.connectors.broker import create_topics, free_port
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.routing.router import iter_decisions
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde
from tests.helpers import headers_dict, read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())
DRIFT_ENV = {
    "LOOPLINE_DRIFT_BUCKET_MS": "1000",
    "LOOPLINE_DRIFT_PUBLISH_INTERVAL_SECONDS": "0.5",
    "LOOPLINE_DRIFT_POLICY": json.dumps({"fraud": {"mode": "tighten_routing", "auto_threshold_delta": 0.05,
                                                   "audit_rate_delta": 0.1},
                                         "fraud2": {"mode": "retrain"}}),
}


def DriftWorker(settings, log_path) -> WorkerProcess:  # noqa: N802 - reads like the class it replaces
    """A worker child with the test's drift settings in its environment."""
    return WorkerProcess(settings, log_path, extra_env=DRIFT_ENV)


def stream(model: str, seed: int, start_ms: int, n: int = 60_000) -> list[dict]:
    events = make_events(n, seed=seed, model=model, start_ms=start_ms)
    for e in events[20_000:32_000]:
        e["features_numeric"]["f00"] += 1.0
    return events


def settings_for(bootstrap, tmp_path, tag):
    from loopline.streams.settings import Settings

    ns = f"t{uuid.uuid4().hex[:10]}"
    policy = tmp_path / f"policy-{tag}.toml"
    policy.write_text('version = "drift-test-1"\n[defaults.tiers.auto]\nmin_confidence = 0.9\naudit_rate = 0.01\n')
    s = Settings(kafka_bootstrap=bootstrap, topic_namespace=ns, app_id=f"{ns}-worker", web_port=free_port(),
                 data_dir=tmp_path / f"data-{tag}", partitions=4, agents="route,drift",
                 policy_file=policy)
    create_topics(bootstrap, s.topics.all(), s.partitions, compacted=s.topics.compacted())
    return s


def drift_events(s, done, timeout=120, settle=5.0):
    msgs = read_topic(s.kafka_bootstrap, s.topics.drift, lambda m: done([SERDE.decode(x.value())[1] for x in m]),
                      timeout=timeout, settle=settle)
    return [SERDE.decode(m.value())[1] for m in msgs]


def key(events):
    return sorted((e["model_name"], e["model_version"], e["signal"], e["detector"], e["state"], e["detected_at"],
                   round(e["score"], 9)) for e in events)


def resolved_all(events):
    started = {(e["model_name"], e["signal"], e["detector"]) for e in events if e["state"] == "started"}
    resolved = {(e["model_name"], e["signal"], e["detector"]) for e in events if e["state"] == "resolved"}
    models = {m for m, _, _ in started}
    return models == {"fraud", "fraud2"} and started <= resolved


def run_workers(s, tmp_path, n_workers, events, checks=None):
    workers = [DriftWorker(s.model_copy(update={"web_port": free_port()}), tmp_path / f"{s.topic_namespace}-{i}.log")
               for i in range(n_workers)]
    try:
        for w in workers:
            w.start()
        if n_workers > 1:
            time.sleep(2 * s.session_timeout_seconds)  # every member in the group before traffic
        with PredictionProducer(s, batch_size=250) as p:
            p.send_many(events)
        got = drift_events(s, resolved_all)
        if checks:
            checks(s, workers, got)
        return got
    finally:
        for w in workers:
            w.stop()


def policy_checks(s, workers, got):
    fraud_ids = set()
    decisions = read_topic(s.kafka_bootstrap, s.topics.decisions,
                           lambda m: sum(len(SERDE.decode(x.value())[1]["event_ids"]) for x in m) >= 120_000,
                           timeout=60)
    versions = {}
    for m in decisions:
        for d in iter_decisions(SERDE, m.value()):
            versions.setdefault(d["model_name"], set()).add(d["policy_version"])
            fraud_ids.add(d["event_id"])
    # tighten_routing: fraud was routed with the drift overlay while drifting, fraud2 (retrain) never
    assert any("+drift:fraud@" in v for v in versions["fraud"]), versions["fraud"]
    # (the effective version names every overlay in force, so fraud2's decisions show fraud's tag too)
    assert not any("drift:fraud2@" in v for vs in versions.values() for v in vs), versions
    # ... and reverted after it resolved: later predictions get the base policy again
    tail = make_events(500, seed=99, model="fraud", start_ms=int(time.time() * 1000))
    with PredictionProducer(s, batch_size=250) as p:
        p.send_many(tail)
    ids = {e["event_id"] for e in tail}
    later = read_topic(s.kafka_bootstrap, s.topics.decisions,
                       lambda m: len(ids & {d["event_id"] for x in m for d in iter_decisions(SERDE, x.value())}) == 500,
                       timeout=60)
    tail_versions = {d["policy_version"] for x in later for d in iter_decisions(SERDE, x.value()) if d["event_id"] in ids}
    assert tail_versions and not any("drift:" in v for v in tail_versions), tail_versions
    # retrain: one request per episode for fraud2, none for fraud
    reqs = [SERDE.decode(m.value()) for m in read_topic(s.kafka_bootstrap, s.topics.retrain_requests,
                                                        lambda m: len(m) >= 1, timeout=20, settle=2)]
    assert [r[0] for r in reqs] == ["io.loopline.RetrainRequest"]
    assert reqs[0][1]["model_name"] == "fraud2" and reqs[0][1]["signal"] == "f00"
    # review tasks carry the drift status of their model
    tasks = read_topic(s.kafka_bootstrap, s.topics.review_analyst, lambda m: len(m) > 1000, timeout=30, settle=3)
    statuses = {SERDE.decode(m.value())[1]["insights"]["drift_status"] for m in tasks}
    assert "stable" in statuses and any(st and st.startswith("drifting: f00") for st in statuses), statuses
    # metrics: whoever owns the models' drift-sketches partitions exports them
    text = "".join(w.get("/metrics").decode() for w in workers)
    assert re.search(r'^loopline_drift_detections_total\{model="fraud",signal="f00"\} [1-9]', text, re.M), text[-2000:]
    assert re.search(r'^loopline_drift_active\{model="fraud",signal="f00"\} 0\.0$', text, re.M)
    assert re.search(r'^loopline_drift_score\{detector="psi",model="fraud",signal="f00"\} ', text, re.M)
    bad_records_go_to_dead_letter(s)


def bad_records_go_to_dead_letter(s):
    from confluent_kafka import Producer

    garbage = b"\x00\x01not avro"
    wrong_type = SERDE.encode("io.loopline.DriftEvent", {
        "model_name": "fraud", "model_version": "v1", "signal": "x", "detector": "psi", "score": 1.0,
        "threshold": 0.5, "window": "w", "state": "started", "detected_at": 1})
    broken = SERDE.encode("io.loopline.DriftSummary", {
        "model_name": "fraud", "worker_id": "intruder", "seq": 1, "sent_at": 1, "partition_watermarks": {},
        "summary": b"not zlib"})
    p = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for v in (garbage, wrong_type, broken):
        p.produce(s.topics.drift_sketches, key=b"fraud", value=v)
    p.flush(10)
    dead = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= 3, timeout=30)
    by_value = {m.value(): headers_dict(m) for m in dead}
    assert set(by_value) == {garbage, wrong_type, broken}
    assert by_value[garbage]["loopline.error.class"] == "bad_magic"
    assert by_value[wrong_type]["loopline.error.class"] == "unexpected_type"
    assert by_value[broken]["loopline.error.class"] == "decode"
    assert all(h["loopline.source.topic"] == s.topics.drift_sketches for h in by_value.values())


def test_one_and_two_workers_publish_the_same_drift_events(kafka_bootstrap, tmp_path):
    start = int(time.time() * 1000) - 200_000
    events = [e for pair in zip(stream("fraud", 11, start), stream("fraud2", 14, start)) for e in pair]
    one = run_workers(settings_for(kafka_bootstrap, tmp_path, "one"), tmp_path, 1, events, policy_checks)
    two = run_workers(settings_for(kafka_bootstrap, tmp_path, "two"), tmp_path, 2, events)
    started = {(e["model_name"], e["signal"]) for e in one if e["state"] == "started"}
    assert started == {("fraud", "f00"), ("fraud2", "f00")}, key(one)
    assert key(one) == key(two)
    print(f"\n{len(one)} drift events, identical with 1 and 2 workers: {key(one)}")
