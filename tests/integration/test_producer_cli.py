"""PredictionProducer and the `loopline produce` / `loopline broker` commands, against a real broker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from loopline.connectors.producer import PredictionProducer
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import events_of_batch
from loopline.processors.wire.partitioning import partition_for
from loopline.processors.wire.serde import PREDICTION_BATCH, AvroSerde
from tests.conftest import settings_env
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())
LOOPLINE = str(Path(sys.executable).parent / "loopline")


def _events(value: bytes) -> list[dict]:
    name, obj = SERDE.decode(value)
    return events_of_batch(obj) if name == PREDICTION_BATCH else [obj]


def _events_on_topic(settings, expected):
    msgs = read_topic(settings.kafka_bootstrap, settings.topics.predictions,
                      lambda m: sum(len(_events(x.value())) for x in m) >= expected, timeout=30, settle=0.5)
    return [(m.partition(), e) for m in msgs for e in _events(m.value())]


def test_batches_land_where_single_events_would(loopline_settings):
    s = loopline_settings
    evs = make_events(2000)
    delivered = []
    with PredictionProducer(s, batch_size=100, on_delivery=lambda err, p, n: delivered.append((err, n))) as prod:
        prod.send_many(evs)
    assert sum(n for err, n in delivered if err is None) == 2000 and prod.failed_events == 0
    got = _events_on_topic(s, 2000)
    assert len(got) == 2000
    for partition, e in got:
        assert partition == partition_for(e["event_id"].encode(), s.partitions)


def test_our_partitioner_agrees_with_librdkafka_murmur2(loopline_settings):
    s = loopline_settings
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
    got = {}
    for i in range(200):
        key = f"corr-{i}".encode()
        p.produce(s.topics.corrections, key=key, value=b"x",
                  on_delivery=lambda err, msg: got.__setitem__(msg.key(), msg.partition()))
    p.flush(20)
    assert len(got) == 200
    assert all(part == partition_for(k, s.partitions) for k, part in got.items())


def test_invalid_event_raises_value_error_naming_the_field_and_sends_nothing(loopline_settings):
    s = loopline_settings
    e = make_events(1)[0]
    with PredictionProducer(s, batch_size=1) as prod:
        for bad, field in [({**e, "confidence": 3.0}, "confidence"), ({**e, "confidence": "high"}, "confidence"),
                           ({**e, "model_name": ""}, "model_name"), ({**e, "colour": "red"}, "colour"),
                           ({k: v for k, v in e.items() if k != "predicted_label"}, "predicted_label")]:
            with pytest.raises(ValueError, match=field):
                prod.send(bad)
        assert prod.sent_events == 0
        prod.send(e)
    assert prod.delivered_events == 1
    assert len(_events_on_topic(s, 1)) == 1


def test_produce_cli_reports_bad_lines_and_sends_good_ones(loopline_settings, tmp_path):
    s = loopline_settings
    evs = make_events(5)
    lines = [json.dumps(evs[0]), "{not json", json.dumps({**evs[1], "confidence": -1}), json.dumps(evs[2]), "",
             json.dumps(evs[3])]
    f = tmp_path / "preds.jsonl"
    f.write_text("\n".join(lines) + "\n")
    r = subprocess.run([LOOPLINE, "produce", str(f)], env=settings_env(s), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"{f}:2: not valid JSON" in r.stderr
    assert f"{f}:3: confidence" in r.stderr
    assert "3 predictions sent" in r.stdout and "2 lines rejected" in r.stdout
    assert sorted(e["event_id"] for _, e in _events_on_topic(s, 3)) == sorted(x["event_id"] for x in (evs[0], evs[2], evs[3]))


def test_produce_cli_all_good_exits_zero(loopline_settings, tmp_path):
    f = tmp_path / "ok.jsonl"
    f.write_text("\n".join(json.dumps(e) for e in make_events(3)) + "\n")
    r = subprocess.run([LOOPLINE, "produce", str(f)], env=settings_env(loopline_settings), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_cli_errors_are_one_sentence(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    r = subprocess.run([LOOPLINE, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "LOOPLINE_KAFKA_BOOTSTRAP" in r.stderr
    r = subprocess.run([LOOPLINE, "broker"], env={**env, "CALF_TANSU_BIN": "/nonexistent/tansu"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "embedded broker binary is missing" in r.stderr
    r = subprocess.run([LOOPLINE, "produce", str(tmp_path / "nope.jsonl")], env={**env, "LOOPLINE_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_broker_cli_port_taken_and_clean_stop(kafka_bootstrap, tmp_path):
    import signal
    import socket

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env["LOOPLINE_DATA_DIR"] = str(tmp_path / "data")  # the broker keeps its topics there: a fresh folder
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([LOOPLINE, "broker", "--port", str(port)], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and f"port {port}" in r.stderr and "already taken" in r.stderr
    from loopline.streams.topics import TopicNames

    proc = subprocess.Popen([LOOPLINE, "broker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "embedded broker on 127.0.0.1:" in first and f"{len(TopicNames().all())} topics created" in first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:  # a failed assertion must not leave a broker behind
            proc.terminate()
            proc.wait(30)


def test_clients_need_only_a_client_config(loopline_settings):
    """A producer service and a reviewer tool configure brokers + namespace, not the worker's Settings."""
    from loopline.connectors.client_config import ClientConfig
    from loopline.connectors.review.client import ReviewerClient

    s = loopline_settings
    cfg = ClientConfig(s.kafka_bootstrap, topic_namespace=s.topic_namespace)
    with PredictionProducer(cfg, batch_size=10) as prod:
        prod.send_many(make_events(25))
    assert prod.failed_events == 0 and prod.delivered_events == 25
    assert len(_events_on_topic(s, 25)) == 25
    with ReviewerClient(cfg, reviewer_id="bridge") as rc:
        assert rc.poll(timeout=0.5) == []  # no tasks: nothing routed in this namespace
        assert rc.group_id == f"{s.topic_namespace}-reviewer-client-analyst"
