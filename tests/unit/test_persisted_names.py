"""Names users keep state under never change as a side effect of a refactor.

``persisted_names.json`` was taken from the code *before* the move to the
``loopline.*`` layout (issue #15): Faust app id, topics, tables and their
changelog topics, agent names, Avro type names and every metric's name and type.
A rename that is meant must update the file in the same commit and say so in
the changelog.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from loopline.streams.app import LooplineWorker
from loopline.streams.settings import Settings
from loopline.streams.topics import TopicNames

PINNED = json.loads((Path(__file__).parent / "persisted_names.json").read_text())
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture(scope="module")
def full_worker():
    # building the app declares topics, tables and agents; nothing connects to the broker
    return LooplineWorker(Settings(kafka_bootstrap="127.0.0.1:1", agents="route,feedback,drift,learn"))


def test_app_id_and_topics():
    assert Settings().app_id == PINNED["app_id"]
    assert TopicNames().all() == PINNED["topics"]


def test_tables_changelogs_and_agents(full_worker):
    app = full_worker.app
    assert sorted(app.tables.keys()) == PINNED["tables"]
    assert sorted(t.changelog_topic.get_topic_name() for t in app.tables.values()) == PINNED["changelogs"]
    assert sorted(a.name for a in app.agents.values()) == PINNED["agents"]


def test_metric_names_and_types(full_worker):
    text = generate_latest(full_worker.metrics.registry).decode()
    found = sorted(" ".join(line.split()[2:4]) for line in text.splitlines() if line.startswith("# TYPE loopline"))
    assert found == PINNED["metric_types"]


def test_avro_type_names():
    found = set()
    for path in SCHEMAS.rglob("*.avsc"):
        doc = json.loads(path.read_text())
        found.add(f"{doc.get('namespace', '')}.{doc['name']}")
    assert sorted(found) == PINNED["avro_types"]
