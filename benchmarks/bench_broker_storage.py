"""The embedded broker on disk against the embedded broker in memory, in one run: produce and read rates, restart.

    .venv/bin/python -m benchmarks.bench_broker_storage [--records 50000] [--batch 100] [--rounds 3]

For each storage (memory, disk) an embedded broker is started, a 4-partition topic created, and
``--records`` records of ~200 bytes produced with librdkafka batching up to ``--batch`` records per
request (idempotent, acks=all), then read back from offset 0 until all are in. Rounds alternate memory
and disk so that machine load hits both alike. Printed per round: records/s produced and read, and the
disk/memory ratio; then, for disk, the time until a restarted broker answers and whether every record
is still readable after the restart (the figure the storage exists for).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from loopline.connectors.broker import EmbeddedBroker, create_topics


def produce(bootstrap: str, topic: str, n: int, batch: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                  "batch.num.messages": batch, "log_level": 3})
    value = b"x" * 200
    started = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=value, partition=i % 4)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0, "records left unsent"
    return n / (time.perf_counter() - started)


def read_all(bootstrap: str, topic: str, n: int, timeout: float = 120.0) -> tuple[int, float]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "log_level": 3})
    c.assign([TopicPartition(topic, p, 0) for p in range(4)])
    got, started = 0, time.perf_counter()
    deadline = time.monotonic() + timeout
    while got < n and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if not m.error():
                got += 1
    elapsed = time.perf_counter() - started
    c.close()
    return got, got / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-broker-storage-"))
    print(f"# {args.records} records of 200 B, up to {args.batch} per request, {args.rounds} rounds; files in {tmp}")
    print("round  storage  produce rec/s  read rec/s")
    rates: dict[str, list[tuple[float, float]]] = {"memory": [], "disk": []}
    for r in range(args.rounds):
        for storage in ("memory", "disk"):
            folder = tmp / f"{storage}-{r}"
            with EmbeddedBroker(log_path=tmp / f"{storage}-{r}.log",
                                storage_dir=folder if storage == "disk" else None) as broker:
                create_topics(broker.bootstrap, ["bench"], 4)
                w = produce(broker.bootstrap, "bench", args.records, args.batch)
                got, rd = read_all(broker.bootstrap, "bench", args.records)
                assert got == args.records, f"{storage}: read {got} of {args.records}"
                rates[storage].append((w, rd))
                print(f"{r:5d}  {storage:7s}  {w:13,.0f}  {rd:10,.0f}", flush=True)
            if storage == "disk":
                broker = EmbeddedBroker(log_path=tmp / f"disk-{r}-again.log", storage_dir=folder)
                started = time.perf_counter()
                broker.start()
                try:
                    up = time.perf_counter() - started
                    got, _ = read_all(broker.bootstrap, "bench", args.records, timeout=60)
                    print(f"       disk restart: answering after {up:.2f} s, {got} of {args.records} records readable",
                          flush=True)
                finally:
                    broker.stop()
                shutil.rmtree(folder, ignore_errors=True)
    for i, what in ((0, "produce"), (1, "read")):
        ratios = [d[i] / m[i] for m, d in zip(rates["memory"], rates["disk"])]
        print(f"disk / memory, {what}: {', '.join(f'{x:.2f}' for x in ratios)} "
              f"(median {sorted(ratios)[len(ratios) // 2]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
