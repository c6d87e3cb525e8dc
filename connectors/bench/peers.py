"""Baseline consumers for ``loopline bench``, one per child process.

    python -m loopline.connectors.bench.peers MODE BOOTSTRAP TOPIC N PARTITIONS

MODE: ``aiokafka`` (getmany 5000 + fastavro decode), ``confluent`` (consume 5000
+ decode), ``faust-take`` (Faust agent, ``take_events(2000, 0.2)`` + decode),
``faust-naive`` (Faust agent, one event at a time: decode, validate, policy,
encode and send a single RoutingDecision — the same work as Loopline without
batching). Prints one JSON line: rate (records/s from the first record to the
N-th) and CPU µs per record over the same span.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.t0 = self.c0 = None

    def add(self, k: int) -> bool:
        if self.t0 is None:
            self.t0, self.c0 = time.perf_counter(), cpu()
        self.count += k
        return self.count >= self.n

    def report(self) -> None:
        dt = time.perf_counter() - self.t0
        print(json.dumps({"rate": self.count / dt, "cpu_us": (cpu() - self.c0) / self.count * 1e6,
                          "records": self.count}), flush=True)


def run_aiokafka(bootstrap, topic, n, partitions, serde):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def main():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
        await c.start()
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        await c.seek_to_beginning()
        m = Meter(n)
        dec = serde.decode
        try:
            while True:
                batches = await c.getmany(timeout_ms=500, max_records=5000)
                k = 0
                for msgs in batches.values():
                    for msg in msgs:
                        dec(msg.value)
                    k += len(msgs)
                if k and m.add(k):
                    break
        finally:
            m.report()
            await c.stop()

    asyncio.run(main())


def run_confluent(bootstrap, topic, n, partitions, serde):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{time.time_ns()}", "enable.auto.commit": False,
                  "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 8 << 20})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    m = Meter(n)
    dec = serde.decode
    while True:
        msgs = c.consume(5000, 0.5)
        for msg in msgs:
            dec(msg.value())
        if msgs and m.add(len(msgs)):
            break
    m.report()
    c.close()


def run_faust(mode, bootstrap, topic, n, partitions, serde):
    import faust

    from loopline.processors.policy.threshold import ThresholdPolicy
    from loopline.processors.routing.validation import check_prediction
    from loopline.processors.wire.frame import frames_from_events
    from loopline.processors.wire.names import TIERS
    from loopline.processors.wire.serde import DECISION

    app = faust.App(f"bench-{mode}-{time.time_ns()}", broker=f"kafka://{bootstrap}", value_serializer="raw",
                    key_serializer="raw", web_enabled=False, topic_disable_leader=True, store="memory://",
                    broker_session_timeout=6, broker_heartbeat_interval=2, consumer_auto_offset_reset="earliest",
                    broker_max_poll_records=5000, datadir=f"/tmp/bench-faust-{os.getpid()}")  # noqa: S108 (a throw-away bench dir)
    src = app.topic(topic, value_type=bytes, key_type=bytes, partitions=partitions)
    out = app.topic(topic + ".naive-decisions", value_type=bytes, key_type=bytes, partitions=partitions)
    m = Meter(n)
    policy = ThresholdPolicy()
    dec = serde.decode

    def done():
        m.report()
        os._exit(0)

    if mode == "faust-take":
        @app.agent(src)
        async def take(stream):
            async for events in stream.take_events(2000, within=0.2):
                k = 0
                for e in events:  # counts predictions: a PredictionBatch record holds many
                    name, obj = dec(e.message.value)
                    k += len(obj["event_ids"]) if "event_ids" in obj else 1
                if m.add(k):
                    done()
    else:
        @app.agent(src)
        async def naive(stream):
            async for value in stream:
                _, ev = dec(value)
                now = int(time.time() * 1000)
                if check_prediction(ev, now, 300_000) is None:
                    d = policy.decide_frame(frames_from_events([ev])[0], now)
                    rec = {"event_id": ev["event_id"], "model_name": ev["model_name"],
                           "model_version": ev["model_version"], "tier": TIERS[int(d.tiers[0])],
                           "reason": d.reasons[int(d.reason_codes[0])], "policy_version": d.policy_version,
                           "sampling_propensity": float(d.propensity[0]), "audited": False,
                           "confidence": ev["confidence"], "predicted_label": ev["predicted_label"],
                           "emitted_at": ev["emitted_at"], "decided_at": now}
                    await out.send(key=ev["event_id"].encode(), value=serde.encode(DECISION, rec))
                if m.add(1):
                    done()

    from faust.worker import Worker

    Worker(app, loglevel="error", quiet=True, redirect_stdouts=False).execute_from_commandline()


def main() -> None:
    mode, bootstrap, topic, n, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    serde = AvroSerde(SchemaCatalogue.load())
    if mode == "aiokafka":
        run_aiokafka(bootstrap, topic, n, partitions, serde)
    elif mode == "confluent":
        run_confluent(bootstrap, topic, n, partitions, serde)
    else:
        run_faust(mode, bootstrap, topic, n, partitions, serde)


if __name__ == "__main__":
    main()
