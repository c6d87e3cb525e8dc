"""The audit sink: Loopline's topics -> the audit database, at least once, without duplicates.

Guarantees:

* **Nothing lost**: offsets are committed (explicitly; ``enable.auto.commit`` is off) only after the
  database transaction holding the batch's rows has committed. A crash at any point (``kill -9``)
  re-delivers at most the uncommitted batch.
* **Nothing duplicated**: every row has a stable key taken from the record (see :mod:`.rows`) and is
  written with ``INSERT ... ON CONFLICT DO NOTHING``, so re-deliveries and replays add no row.
* **Nothing dropped silently**: a record the sink cannot decode becomes an ``undecodable`` row
  (topic, partition, offset, error, payload size and sha256) in the same transaction.
* **Bounded**: a batch holds at most ``audit_batch_max`` records; rows older than
  ``audit_retention_days`` (by their event time) are deleted every ``audit_retention_interval_seconds``.
* A database error never commits offsets: the batch is retried (with backoff, reconnecting) until it
  is written or the sink is stopped.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from loopline.connectors.audit.db import AuditDB
from loopline.connectors.audit.migrations import migrate
from loopline.connectors.audit.rows import ROLES, TABLES, Record, group_rows

log = logging.getLogger("loopline.audit")


class SinkMetrics(NamedTuple):
    """The sink's metrics, built once from an injected registry. Labels: table names and outcomes only."""

    rows: Counter
    records: Counter
    rows_per_second: Gauge
    batch_seconds: Histogram
    retention_deleted: Counter
    db_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SinkMetrics:
        return cls(
            rows=Counter("loopline_audit_rows_total", "Rows inserted into the audit database (duplicates not counted)",
                         ["table"], registry=registry),
            records=Counter("loopline_audit_records_total", "Kafka records consumed by the audit sink",
                            ["outcome"], registry=registry),
            rows_per_second=Gauge("loopline_audit_rows_per_second",
                                  "Rows written per second by the audit sink over the last rate window", registry=registry),
            batch_seconds=Histogram("loopline_audit_batch_seconds", "Seconds to write one batch and commit its offsets",
                                    registry=registry),
            retention_deleted=Counter("loopline_audit_retention_deleted_total", "Audit rows deleted past retention",
                                      ["table"], registry=registry),
            db_errors=Counter("loopline_audit_db_errors_total", "Failed audit database transactions (retried)",
                              registry=registry),
        )


class AuditSink:
    """Consume the audit topics of ``settings`` and write them to ``settings.audit_url``."""

    def __init__(self, settings, registry: CollectorRegistry | None = None, serde=None,
                 db_factory: Callable[[], AuditDB] | None = None) -> None:
        from loopline.streams.confluent import build_serde

        self.settings = settings
        if registry is None:
            from loopline.streams.conventions import apply_conventions

            registry = CollectorRegistry()
            apply_conventions(registry)  # process_* / python_* collectors, no *_created series, as every server
        self.registry = registry
        self.metrics = SinkMetrics.create(self.registry)
        self.serde = serde or build_serde(settings)
        self._db_factory = db_factory or (lambda: AuditDB(settings.audit_url))
        self.db = self._db_factory()
        migrate(self.db)
        topics = settings.topics
        self.role_of = {getattr(topics, role): role for role in ROLES}
        self._consumer = None
        self.ready = False
        self.alive_at = time.monotonic()
        self.rows_written = 0
        self.records_seen = 0
        self._rate_mark = (time.monotonic(), 0)
        self._next_retention = time.monotonic()

    # ------------------------------------------------------------------ kafka
    def _consumer_conf(self) -> dict:
        s = self.settings
        return {"bootstrap.servers": s.kafka_bootstrap, "group.id": s.audit_group,
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest", "session.timeout.ms": int(s.session_timeout_seconds * 1000),
                "fetch.wait.max.ms": s.fetch_max_wait_ms, "client.id": "loopline-audit-sink"}

    def _connect(self):
        from confluent_kafka import Consumer

        c = Consumer(self._consumer_conf())
        c.subscribe(sorted(self.role_of))
        return c

    def _poll(self, consumer) -> list:
        """Up to ``audit_batch_max`` messages, waiting at most ``audit_batch_wait_seconds`` to fill the batch."""
        s = self.settings
        out: list = []
        deadline = time.monotonic() + s.audit_batch_wait_seconds
        while len(out) < s.audit_batch_max:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for m in consumer.consume(s.audit_batch_max - len(out), left):
                err = m.error()
                if err is None:
                    out.append(m)
                elif not err.retriable() and err.fatal():
                    raise RuntimeError(f"fatal Kafka error: {err}")
        return out

    # ------------------------------------------------------------------ writes
    def write(self, records: list[Record]) -> int:
        """Write the rows of ``records`` in one transaction; returns rows inserted (0 for known rows)."""
        by_table, bad = group_rows(records, self.serde)
        inserted: dict[str, int] = {}
        with self.db.transaction():
            for table, rows in by_table.items():
                inserted[table] = self.db.insert_ignore(table, TABLES[table].columns, rows)
        for table, n in inserted.items():
            if n:
                self.metrics.rows.labels(table).inc(n)
        if bad:
            self.metrics.records.labels("undecodable").inc(bad)
        self.metrics.records.labels("written").inc(len(records) - bad)
        return sum(inserted.values())

    def _write_until_done(self, records: list[Record], stop: Callable[[], bool]) -> bool:
        delay = 0.2
        while True:
            try:
                self.rows_written += self.write(records)
                return True
            except Exception as exc:  # noqa: BLE001 - any database failure: retry the same batch, commit nothing
                self.metrics.db_errors.inc()
                log.warning("audit database write failed (%s); retrying in %.1fs", type(exc).__name__, delay)
                if stop():
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                self.db.close()
                try:
                    self.db = self._db_factory()
                except Exception as again:  # noqa: BLE001 - still down: keep retrying
                    log.warning("audit database unreachable (%s)", type(again).__name__)

    def retention(self, now_ms: int | None = None) -> int:
        """Delete rows whose event time is older than ``audit_retention_days``; returns rows deleted."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now_ms - int(self.settings.audit_retention_days * 86_400_000)
        total = 0
        with self.db.transaction():
            for t in TABLES.values():
                n = self.db.execute(f"DELETE FROM {t.name} WHERE {t.time_column} < ?", (cutoff,))  # noqa: S608 (fixed table names)
                if n:
                    self.metrics.retention_deleted.labels(t.name).inc(n)
                total += n
        return total

    def _update_rate(self) -> None:
        t0, n0 = self._rate_mark
        now = time.monotonic()
        if now - t0 >= 1.0:
            self.metrics.rows_per_second.set((self.rows_written - n0) / (now - t0))
            self._rate_mark = (now, self.rows_written)

    # ------------------------------------------------------------------ loop
    def run(self, stop: Callable[[], bool]) -> None:
        """Consume, write, commit until ``stop()`` is true."""
        from confluent_kafka import TopicPartition

        consumer = self._connect()
        self._consumer = consumer
        try:
            while not stop():
                self.alive_at = time.monotonic()
                if time.monotonic() >= self._next_retention:
                    try:
                        self.retention()
                    except Exception as exc:  # noqa: BLE001 - retention retries at the next interval
                        log.warning("audit retention failed (%s)", type(exc).__name__)
                    self._next_retention = time.monotonic() + self.settings.audit_retention_interval_seconds
                msgs = self._poll(consumer)
                self.ready = True
                if not msgs:
                    self._update_rate()
                    continue
                t0 = time.perf_counter()
                records = [Record(self.role_of.get(m.topic(), ""), m.topic(), m.partition(), m.offset(), m.value(),
                                  tuple(m.headers() or ()), m.timestamp()[1]) for m in msgs]
                if not self._write_until_done(records, stop):
                    break  # stopped while the database was down: nothing committed, the batch is re-delivered
                ends: dict[tuple[str, int], int] = {}
                for m in msgs:
                    key = (m.topic(), m.partition())
                    ends[key] = max(ends.get(key, -1), m.offset() + 1)
                try:
                    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False)
                except Exception as exc:  # noqa: BLE001 - rows are in; a lost commit only re-delivers known rows
                    log.warning("offset commit failed (%s); the batch may be re-delivered (no duplicate rows)", exc)
                self.records_seen += len(msgs)
                self.metrics.batch_seconds.observe(time.perf_counter() - t0)
                self._update_rate()
        finally:
            consumer.close()
            self.db.close()


class _Handler(BaseHTTPRequestHandler):
    sink: AuditSink

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path == "/metrics":
            body, ctype, code = generate_latest(self.sink.registry), CONTENT_TYPE_LATEST, 200
        elif self.path == "/healthz":
            ok = time.monotonic() - self.sink.alive_at < 120
            body, ctype, code = (b"ok\n" if ok else b"stalled\n"), "text/plain", 200 if ok else 503
        elif self.path == "/readyz":
            body, ctype, code = (b"ready\n" if self.sink.ready else b"starting\n"), "text/plain", 200 if self.sink.ready else 503
        else:
            body, ctype, code = b"not found: /metrics /healthz /readyz\n", "text/plain", 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def serve_http(sink: AuditSink, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz of ``sink`` on a daemon thread."""
    handler = type("AuditHandler", (_Handler,), {"sink": sink})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="audit-http", daemon=True).start()
    return server
