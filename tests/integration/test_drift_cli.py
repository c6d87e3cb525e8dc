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


def test_baseline_applies_the_routers_validation_and_reads_to_the_end(loopline_settings, tmp_path, monkeypatch,
                                                                      capsys):
    """Issue #19 item 4: 300 valid + 200 NaN amount + 50 confidence 1.7 -> a profile of the 300, 250 counted skips."""
    import random

    import numpy as np
    from confluent_kafka import Producer

    from loopline.processors.drift.baseline import BaselineBuilder
    from loopline.processors.drift.stats import psi
    from loopline.processors.wire.catalogue import SchemaCatalogue
    from loopline.processors.wire.frame import frames_from_events
    from loopline.processors.wire.serde import PREDICTION, AvroSerde

    s = loopline_settings
    monkeypatch.setenv("LOOPLINE_KAFKA_BOOTSTRAP", s.kafka_bootstrap)
    rnd = random.Random(4)

    def with_amount(events, nan=False):
        for e in events:
            e["features_numeric"]["amount"] = float("nan") if nan else rnd.lognormvariate(4, 1.0)
        return events

    valid = with_amount(make_events(300, seed=41, start_ms=1_000_000))
    nan_amount = with_amount(make_events(200, seed=42, start_ms=1_000_000), nan=True)
    bad_conf = with_amount(make_events(50, seed=43, start_ms=1_000_000))
    for e in bad_conf:
        e["confidence"] = 1.7
    mixed = valid + nan_amount + bad_conf
    rnd.shuffle(mixed)
    serde = AvroSerde(SchemaCatalogue.load())
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 50})
    for e in mixed:
        p.produce(s.topics.predictions, value=serde.encode(PREDICTION, e), key=e["event_id"].encode())
    assert p.flush(15) == 0
    out = tmp_path / "fraud-v1.json"
    code = main(["drift", "baseline", "--from-topic", s.topics.predictions, "--out", str(out), "--events", "5000"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "550 records read, 250 skipped: 200 non_finite_feature, 50 confidence_out_of_range" in printed.out
    prof = ReferenceProfile.load(out)
    assert prof.n_events == 300

    def built(events):
        b = BaselineBuilder("fraud", "v1", 5000)
        b.update(frames_from_events(sorted(events, key=lambda e: (e["emitted_at"], e["event_id"]))))
        return b.profile()

    assert prof.fingerprint == built(valid).fingerprint
    # fresh valid traffic against the pinned profile: no amount alarm (the unvalidated profile alarms)
    fresh = with_amount(make_events(300, seed=44, start_ms=2_000_000))
    sig = prof.signal("amount")
    cur = np.bincount(sig.bin(np.array([e["features_numeric"]["amount"] for e in fresh])), minlength=sig.n_bins)
    unvalidated = built(valid + nan_amount).signal("amount")
    cur_u = np.bincount(unvalidated.bin(np.array([e["features_numeric"]["amount"] for e in fresh])),
                        minlength=unvalidated.n_bins)
    psi_valid, psi_unvalidated = float(psi(cur, sig.counts)), float(psi(cur_u, unvalidated.counts))
    print(f"\namount PSI of fresh valid traffic: {psi_valid:.3f} vs the validated profile, "
          f"{psi_unvalidated:.3f} vs a profile that kept the NaN rows")
    assert psi_valid < 0.2 < psi_unvalidated
