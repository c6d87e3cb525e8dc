"""A prediction whose label its model does not declare is dead-lettered by the running worker
(real broker, real Avro): class ``undeclared_label``, original bytes kept; the rest is decided."""
from __future__ import annotations

from confluent_kafka import Producer

from loopline.connectors.processes import WorkerProcess
from loopline.processors.routing.router import iter_decisions
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import PREDICTION, AvroSerde
from tests.helpers import headers_dict, read_topic

POLICY = 'version = "labels-1"\n[models.fraud]\nlabels = ["legit", "fraud"]\npositive_label = "fraud"\n'


def test_undeclared_predicted_label_goes_to_the_dead_letter_topic(loopline_settings, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    s = loopline_settings.model_copy(update={"policy_file": policy, "agents": "route"})
    serde = AvroSerde(SchemaCatalogue.load())
    events = make_events(50, seed=4)
    events[7]["predicted_label"] = "a"  # the junk label of the issue
    sent = {e["event_id"]: serde.encode(PREDICTION, e) for e in events}
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        p = Producer({"bootstrap.servers": s.kafka_bootstrap})
        for e in events:
            p.produce(s.topics.predictions, key=e["event_id"].encode(), value=sent[e["event_id"]])
        assert p.flush(15) == 0

        def n_decisions(msgs):
            return sum(1 for m in msgs for _ in iter_decisions(serde, m.value()))

        decisions = read_topic(s.kafka_bootstrap, s.topics.decisions, lambda m: n_decisions(m) >= 49, timeout=90,
                               settle=2.0)
        dead = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= 1, timeout=30, settle=1.0)
    finally:
        w.stop()
    decided = {d["event_id"] for m in decisions for d in iter_decisions(serde, m.value())}
    assert len(decided) == 49 and events[7]["event_id"] not in decided
    assert len(dead) == 1
    h = headers_dict(dead[0])
    assert h["loopline.error.class"] == "undeclared_label" and "not declared" in h["loopline.error.message"]
    assert dead[0].value() == sent[events[7]["event_id"]]  # the original bytes
