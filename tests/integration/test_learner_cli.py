"""``loopline model list|show|promote|rollback`` against the embedded broker, bad input included."""
from __future__ import annotations

import argparse
import io

import pytest
from confluent_kafka import Producer

from loopline.connectors.cli.model import EXIT_INTEGRITY, EXIT_REFUSED, EXIT_USAGE, add_model_commands, cmd_model
from loopline.processors.learning import LearnerConfig, ModelLearner, build_update, load_model
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde
from loopline.streams.learning.kafka_io import read_to_end
from tests.unit.test_learning import SEQ

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())
MU = "io.loopline.ModelUpdate"


def parse(*argv):
    p = argparse.ArgumentParser()
    add_model_commands(p.add_subparsers(dest="command"))
    return p.parse_args(["model", *argv])


def run(settings, *argv):
    out = io.StringIO()
    code = cmd_model(parse(*argv), settings, out)
    return code, out.getvalue()


def learner(passing: bool) -> ModelLearner:
    lr = ModelLearner("fraud", LearnerConfig(gate_min_examples=5, gate_metric="accuracy"))
    lr.learn_batch([(e, 0, i) for i, e in enumerate(SEQ)])
    for _ in range(10):  # holdout verdicts: the challenger right (or wrong), the champion wrong
        lr.gate.score("review", "fraud", ("legit", 0.4), ("fraud" if passing else "legit", 0.7 if passing else 0.3))
    return lr


def publish(settings, ups):
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for u in ups:
        p.produce(settings.topics.model_updates, key=f"{u['model_name']}/{u['role']}".encode(),
                  value=SERDE.encode(MU, u))
    assert p.flush(10) == 0


def test_model_commands(loopline_settings, capsys):
    s = loopline_settings
    key = s.snapshot_hmac_key.get_secret_value().encode()
    assert run(s, "list") == (0, "no model snapshots yet\n")
    good, bad = learner(True), learner(False)
    ups = []
    for name, lr in (("fraud", good), ("spam", bad)):
        for role, obj in (("challenger", lr.challenger), ("learner", lr), ("override_risk", lr.risk)):
            up = build_update(name, role, 1, obj, key=key, examples_seen=lr.examples_seen, metrics=lr.metrics())
            up["metrics"]["marker"] = float(len(name))
            ups.append(up)
    publish(s, ups)

    code, text = run(s, "list")
    assert code == 0 and "fraud" in text and "spam" in text and "challenger" in text and "pass" in text
    code, text = run(s, "show", "fraud", "--role", "challenger")
    assert code == 0 and "fraud/challenger v1 (parent None)" in text and "HMAC ok" in text

    assert run(s, "show", "nope")[0] == EXIT_REFUSED
    assert "no snapshots of model 'nope'" in capsys.readouterr().err
    assert run(s, "promote", "spam")[0] == EXIT_REFUSED
    assert "the promotion gate blocks spam challenger v1: tier review" in capsys.readouterr().err
    assert run(s, "rollback", "fraud")[0] == EXIT_REFUSED
    assert "has no champion to roll back" in capsys.readouterr().err

    assert run(s, "promote", "fraud") == (0, "fraud/champion v1 published (parent None)\n")
    assert run(s, "promote", "fraud")[0] == 0  # v2, same bytes
    assert run(s, "rollback", "fraud", "--to", "9")[0] == EXIT_REFUSED
    assert "champion version 9 of fraud is not on the topic (versions: 1, 2)" in capsys.readouterr().err
    assert run(s, "rollback", "fraud") == (0, "fraud/champion v3 published (parent 2)\n")
    champs = sorted((SERDE.decode(m.value())[1] for m in read_to_end(s.kafka_bootstrap, s.topics.model_updates)
                     if m.key() == b"fraud/champion"), key=lambda u: u["version"])
    assert [c["version"] for c in champs] == [1, 2, 3] and champs[2]["metrics"]["rolled_back_to"] == 1.0
    probe = {"amount": 1.0, "channel=web": 1}
    assert load_model(champs[2], key).predict_proba_one(probe) == good.challenger.predict_proba_one(probe)

    tampered = build_update("fraud", "challenger", 2, good.challenger, key=b"wrong-key", metrics=good.metrics())
    publish(s, [tampered])
    assert run(s, "promote", "fraud")[0] == EXIT_INTEGRITY
    assert "fraud/challenger v2 fails its HMAC check" in capsys.readouterr().err
    assert run(s.model_copy(update={"kafka_bootstrap": None}), "list")[0] == EXIT_USAGE
