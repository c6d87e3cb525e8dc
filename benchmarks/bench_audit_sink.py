"""The audit sink's write rate against PostgreSQL and SQLite, as a ratio to the decisions' production rate.

    .venv/bin/python -m benchmarks.bench_audit_sink [--events 50000] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

One run, one embedded broker:

1. N predictions (``PredictionBatch`` records of 500, ~15% below the auto threshold) are pre-filled and a
   route worker decides them; the **production rate** is decisions / (last decided_at - first decided_at).
2. The audit sink (in process, the same ``AuditSink`` as ``loopline audit-sink``) then drains the decisions
   and both review topics into a fresh SQLite file and a fresh PostgreSQL database (created and dropped here),
   each with its own consumer group. Its rate is rows / (end of the last batch's commit - start of the first
   batch's write): Kafka polling, decoding, the transaction and the offset commit are all inside.

Printed: absolute rows/s and decision rows/s per database, and decision rows/s divided by the production
rate (> 1 means the sink keeps up with a worker running flat out). The backlog is drained, so this is the
sink's capacity, not its lag at a given traffic.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from loopline.connectors.audit.db import AuditDB
from loopline.connectors.audit.sink import AuditSink
from loopline.connectors.bench.run import _events, _prefill, _settings, _worker_row
from loopline.connectors.broker import EmbeddedBroker
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde


def drain(settings, url: str, want_decisions: int, timeout: float = 600) -> dict:
    """Run the sink on ``url`` until every decision is written and it is idle; returns its figures."""
    s = settings.model_copy(update={"audit_db_url": url, "audit_group": f"bench-audit-{uuid.uuid4().hex[:8]}",
                                    "audit_retention_interval_seconds": 1e9})
    sink = AuditSink(s, registry=CollectorRegistry())
    marks: dict[str, float] = {}
    write = sink.write

    def timed_write(records):
        marks.setdefault("first", time.perf_counter())
        n = write(records)
        marks["last"] = time.perf_counter()
        return n

    sink.write = timed_write
    deadline = time.monotonic() + timeout
    state = {"rows": -1, "changed": time.monotonic()}

    def stop() -> bool:
        now = time.monotonic()
        if sink.rows_written != state["rows"]:
            state.update(rows=sink.rows_written, changed=now)
        with_all = "last" in marks and _count(url, "decisions") >= want_decisions if now - state["changed"] > 2 else False
        return with_all or now > deadline

    t = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    t.start()
    t.join(timeout + 30)
    decisions, tasks = _count(url, "decisions"), _count(url, "review_tasks")
    span = marks["last"] - marks["first"]
    return {"rows": decisions + tasks, "decisions": decisions, "seconds": span,
            "rows_per_s": (decisions + tasks) / span, "decisions_per_s": decisions / span}


def _count(url: str, table: str) -> int:
    with AuditDB(url) as db:
        return db.query(f"SELECT COUNT(*) FROM {table}")[1][0][0]  # noqa: S608 (fixed names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="admin URL of a PostgreSQL server; a scratch database is created and dropped on it")
    args = ap.parse_args()
    import psycopg

    serde = AvroSerde(SchemaCatalogue.load())
    n = args.events
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            s = _settings(broker.bootstrap, f"a{uuid.uuid4().hex[:8]}", 4, tmp)
            print(f"[bench] pre-filling {n} predictions ...", flush=True)
            _prefill(s, _events(n), batch_size=500)
            print("[bench] route worker deciding them ...", flush=True)
            prod = _worker_row(s, serde, n, tmp)
            if "error" in prod:
                raise SystemExit(f"worker: {prod['error']}")
            results = {}
            print("[bench] audit sink -> SQLite ...", flush=True)
            results["SQLite (WAL, synchronous=FULL)"] = drain(s, f"sqlite:///{tmp / 'audit.sqlite3'}", n)
            name = f"loopline_audit_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                print("[bench] audit sink -> PostgreSQL ...", flush=True)
                results["PostgreSQL 127.0.0.1 (psycopg 3)"] = drain(s, args.pg.rsplit("/", 1)[0] + "/" + name, n)
            finally:
                with psycopg.connect(args.pg, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    rate = prod["rate"]
    print(f"\nDecisions produced by one route worker: {n} in this run at {rate:,.0f} decisions/s")
    print("| database | rows (decisions + review tasks) | seconds | rows/s | decision rows/s | ratio to production |")
    print("|---|---:|---:|---:|---:|---:|")
    for db, r in results.items():
        print(f"| {db} | {r['rows']:,} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} | {r['decisions_per_s']:,.0f} "
              f"| {r['decisions_per_s'] / rate:.2f}x |")


if __name__ == "__main__":
    main()
