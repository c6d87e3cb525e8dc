"""Shared fixtures.

``kafka_bootstrap`` (session): the external cluster from LOOPLINE_KAFKA_BOOTSTRAP
if set, else a testcontainers Kafka if a Docker daemon answers, else the
embedded Tansu broker. Every test gets its own topic namespace and consumer
group (``loopline_settings``), so tests never share topics.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
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


def settings_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LOOPLINE_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """A ``loopline worker`` subprocess with bounded start and stop."""

    def __init__(self, settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self, timeout: float = 90.0) -> "WorkerProcess":
        exe = shutil.which("loopline", path=str(Path(sys.executable).parent)) or "loopline"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([exe, "worker"], env=settings_env(self.settings), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except Exception:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"worker not ready within {timeout}s: {self.log_path.read_text()[-3000:]}")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=5) as r:
            return r.read()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture
def worker(loopline_settings, tmp_path):
    w = WorkerProcess(loopline_settings, tmp_path / "worker.log").start()
    yield w
    w.stop()
