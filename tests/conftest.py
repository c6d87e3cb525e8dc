"""Shared fixtures.

``kafka_bootstrap`` (session): the external cluster from LOOPLINE_KAFKA_BOOTSTRAP
if set, else a testcontainers Kafka if a Docker daemon answers, else the
embedded Tansu broker. Every test gets its own topic namespace and consumer
group (``loopline_settings``), so tests never share topics.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _docker_daemon_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    external = os.environ.get("LOOPLINE_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if _docker_daemon_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from connectors.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap
        # destroy client handles the tests dropped before the broker goes, so librdkafka does not
        # print reconnect errors after pytest's summary
        import gc

        gc.collect()


def free_port() -> int:
    from connectors.broker import free_port as fp

    return fp()


@pytest.fixture
def loopline_settings(kafka_bootstrap, tmp_path):
    """Settings with a fresh topic namespace and app id; topics created and ready."""
    from connectors.broker import create_topics
    from streams.settings import Settings

    ns = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_namespace=ns, app_id=f"{ns}-worker",
                        web_port=free_port(), data_dir=tmp_path / "data", partitions=4)
    create_topics(kafka_bootstrap, settings.topics.all(), settings.partitions,
                  compacted=settings.topics.compacted())
    return settings


from connectors.processes import WorkerProcess, settings_env  # noqa: E402,F401


@pytest.fixture
def worker(loopline_settings, tmp_path):
    w = WorkerProcess(loopline_settings, tmp_path / "worker.log").start()
    yield w
    w.stop()
