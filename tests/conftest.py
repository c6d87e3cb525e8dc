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
INTEGRATION_DIR = REPO / "tests" / "integration"


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ is an integration test (it needs a broker, database or browser)."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _no_broker_outside_integration(request, monkeypatch):
    """A test without the ``integration`` mark that starts the embedded broker fails at once.

    So ``pytest -m "not integration"`` provably needs no network service.
    """
    if request.node.get_closest_marker("integration") is not None:
        return
    from loopline.connectors import broker

    def refuse(self, *a, **kw):
        raise AssertionError(f"{request.node.nodeid} starts a broker but is not marked integration")

    monkeypatch.setattr(broker.EmbeddedBroker, "start", refuse)


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
    from loopline.connectors.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap
        # destroy client handles the tests dropped before the broker goes, so librdkafka does not
        # print reconnect errors after pytest's summary
        import gc

        gc.collect()


def free_port() -> int:
    from loopline.connectors.broker import free_port as fp

    return fp()


@pytest.fixture
def loopline_settings(kafka_bootstrap, tmp_path):
    """Settings with a fresh topic namespace and app id; topics created and ready."""
    from loopline.connectors.broker import create_topics
    from loopline.streams.settings import Settings

    ns = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_namespace=ns, app_id=f"{ns}-worker",
                        web_port=free_port(), data_dir=tmp_path / "data", partitions=4,
                        allow_dev_key=True)  # a test setup, whatever broker LOOPLINE_KAFKA_BOOTSTRAP names
    create_topics(kafka_bootstrap, settings.topics.all(), settings.partitions,
                  compacted=settings.topics.compacted())
    return settings


from loopline.connectors.processes import WorkerProcess, settings_env  # noqa: E402,F401


@pytest.fixture
def worker(loopline_settings, tmp_path):
    w = WorkerProcess(loopline_settings, tmp_path / "worker.log").start()
    yield w
    w.stop()
