"""Issue #19: a canary value in every personal field never reaches an uncleared analyst, a log, a header or /metrics.

Predictions carrying a unique canary value in each field the policy marks
personal are routed by a real worker (low confidence -> review tasks; one
invalid event -> dead letter). The canaries are then grepped in every channel
an uncleared analyst reaches (JSON API, HTML queue and task pages, the terminal
reviewer's output), in the worker's and the review server's logs, in the
dead-letter headers and in /metrics of both servers: zero hits. A cleared
reviewer sees them, which proves they were there to leak.
"""
from __future__ import annotations

import io
import logging
import urllib.request

import pytest
from confluent_kafka import Producer

from loopline.connectors.broker import free_port
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.review.app import ReviewServer
from loopline.connectors.review.cli import ApiClient, review_loop
from loopline.connectors.review.service import add_reviewer
from loopline.connectors.review.settings import ReviewSettings
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import PREDICTION, AvroSerde
from tests.helpers import read_topic
from tests.integration.test_review_api import PASSWORDS, Client, wait_for

pytestmark = pytest.mark.integration

N = 12
POLICY = '''version = "pii-canary"
[defaults]
personal_data = ["email", "phone", "income", "device_ip"]
[defaults.tiers.auto]
min_confidence = 0.99
'''


def canaries(i: int) -> dict[str, str]:
    return {"email": f"cnry{i}mail", "phone": f"cnry{i}phone", "device_ip": f"cnry{i}ip"}


def test_canaries_reach_no_uncleared_channel(loopline_settings, tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    s = loopline_settings.model_copy(update={"policy_file": path, "log_level": "info"})
    serde = AvroSerde(SchemaCatalogue.load())
    events = make_events(N + 1, seed=19)
    values: list[str] = []
    producer = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for i, e in enumerate(events):
        c = canaries(i)
        e["features_categorical"].update(email=c["email"], phone=c["phone"])
        e["context"] = {"device_ip": c["device_ip"]}
        e["features_numeric"]["income"] = 91234.5 + i  # a number is a value too
        values += list(c.values()) + [repr(91234.5 + i)]
        e["confidence"] = 0.6 if i < N else 1.7  # the last one is invalid: dead letter
        e["class_probabilities"] = None
        producer.produce(s.topics.predictions, value=serde.encode(PREDICTION, e), key=e["event_id"].encode())
    assert producer.flush(15) == 0

    review_log = io.StringIO()
    handler = logging.StreamHandler(review_log)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    rs = ReviewSettings.from_settings(s, port=free_port(), masked_features=())
    srv = ReviewServer(rs)
    for name, role, pii in (("ana", "analyst", False), ("pia", "analyst", True)):
        add_reviewer(srv.service.store, name, role, pii, PASSWORDS[name])
    srv.start()
    channels: dict[str, str] = {}
    try:
        client = Client(srv.url)
        tasks = wait_for(client, "ana", "analyst", N, timeout=60)
        channels["api tasks"] = str(tasks)
        cleared = str(client.call("GET", "/api/tasks?tier=analyst&limit=100", "pia")[1])
        assert all(v in cleared for v in values[:-4]), "the cleared reviewer sees every canary"
        first, second = tasks[0]["task_id"], tasks[1]["task_id"]
        channels["api claim"] = str(client.call("POST", f"/api/tasks/{first}/claim", "ana")[1])
        web = Client(srv.url)
        web.call("POST", "/login", form={"name": "ana", "password": PASSWORDS["ana"]})
        channels["html queue"] = str(web.call("GET", "/queue/analyst")[1])
        web.call("POST", f"/tasks/{second}/claim", form={})
        channels["html task"] = str(web.call("GET", f"/tasks/{second}")[1])
        out = io.StringIO()
        review_loop(ApiClient(srv.url, "ana", PASSWORDS["ana"]), "analyst", io.StringIO("u\nu\nu\nq\n"), out)
        channels["terminal"] = out.getvalue()
        assert "cnry" not in channels["terminal"] and "predicted" in channels["terminal"]
        with urllib.request.urlopen(srv.url + "/metrics", timeout=5) as r:  # noqa: S310 (our own server)
            channels["review /metrics"] = r.read().decode()
        channels["worker /metrics"] = w.get("/metrics").decode()
        dead = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda ms: len(ms) >= 1, timeout=30)
        assert len(dead) == 1
        channels["dead-letter headers"] = str(dead[0].headers())
    finally:
        srv.stop()
        w.stop()
        root.removeHandler(handler)
        root.setLevel(old_level)
    channels["worker log"] = (tmp_path / "worker.log").read_text(errors="replace")
    channels["review log"] = review_log.getvalue()
    hits = {name: [v for v in values if v in text] for name, text in channels.items()}
    assert {name: h for name, h in hits.items() if h} == {}
    print(f"\n{len(values)} canary values x {len(channels)} channels: 0 hits "
          f"({', '.join(f'{k} {len(v)} chars' for k, v in channels.items())})")
