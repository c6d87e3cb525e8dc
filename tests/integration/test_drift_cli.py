"""``loopline drift baseline``: a pinned reference profile from a topic of predictions; bad input → exit 2."""
from __future__ import annotations

import json

import pytest

from loopline.connectors.cli.drift import main
from loopline.connectors.producer import PredictionProducer
from loopline.processors.drift.reference import ReferenceProfile
from loopline.processors.testing import make_events

pytestmark = pytest.mark.integration


def test_baseline_from_topic(loopline_settings, tmp_path, monkeypatch, capsys):
    s = loopline_settings
    monkeypatch.setenv("LOOPLINE_KAFKA_BOOTSTRAP", s.kafka_bootstrap)
    with PredictionProducer(s, batch_size=200) as p:  # PredictionBatch records
        p.send_many(make_events(3000, seed=1, start_ms=1_000_000))
        p.send_many(make_events(500, seed=2, model="other", start_ms=1_000_000))
    with PredictionProducer(s, batch_size=1) as p:  # single PredictionEvent records
        p.send_many(make_events(300, seed=3, start_ms=900_000))
    out = tmp_path / "fraud-v1.json"
    code = main(["drift", "baseline", "--from-topic", s.topics.predictions, "--out", str(out), "--model", "fraud",
                 "--events", "2000"])
    err = capsys.readouterr()
    assert code == 0, err.err
    prof = ReferenceProfile.load(out)
    assert (prof.model_name, prof.model_version, prof.n_events, prof.source) == ("fraud", "v1", 2000, "baseline")
    assert {"f00", "country", "confidence", "class"} <= {sig.name for sig in prof.signals}
    assert "records" in err.out and "fingerprint" in err.out
    # the reference is the first 2,000 by emitted_at: the 300 single events (earlier) are in it
    assert json.loads(out.read_text())["n_events"] == 2000


@pytest.mark.parametrize("argv, sentence", [
    (["--from-topic", "{ns}.nope"], "does not exist"),
    (["--from-topic", "{ns}.predictions"], "is empty"),
    (["--from-topic", "{ns}.predictions", "--events", "0"], "--events must be at least 1"),
])
def test_baseline_bad_input_exits_2_with_a_sentence(loopline_settings, tmp_path, monkeypatch, capsys, argv, sentence):
    s = loopline_settings
    monkeypatch.setenv("LOOPLINE_KAFKA_BOOTSTRAP", s.kafka_bootstrap)
    args = [a.format(ns=s.topic_namespace) for a in argv]
    code = main(["drift", "baseline", "--out", str(tmp_path / "x.json"), *args])
    err = capsys.readouterr().err
    assert code == 2 and sentence in err and err.startswith("loopline: ")
    assert not (tmp_path / "x.json").exists()


def test_baseline_unknown_model_exits_2(loopline_settings, tmp_path, monkeypatch, capsys):
    s = loopline_settings
    monkeypatch.setenv("LOOPLINE_KAFKA_BOOTSTRAP", s.kafka_bootstrap)
    with PredictionProducer(s, batch_size=100) as p:
        p.send_many(make_events(200, seed=1))
    code = main(["drift", "baseline", "--from-topic", s.topics.predictions, "--out", str(tmp_path / "x.json"),
                 "--model", "ghost"])
    assert code == 2 and "no predictions of model 'ghost'" in capsys.readouterr().err
