"""Serde throughput vs bare fastavro on the same records, in the same run.

    .venv/bin/python -m benchmarks.bench_serde [--n 50000] [--repeat 5]

Prints records/s for Loopline's single-object encode/decode of a 12-feature
PredictionEvent next to bare ``fastavro.schemaless_writer``/``schemaless_reader``
with the same parsed schema, and the ratio (target >= 80% of bare); then
predictions/s through the columnar PredictionBatch (encode from dicts, decode to
a frame of numpy columns). Each figure
is the best of ``--repeat`` rounds, interleaved, to damp the noise of a shared machine.
"""
from __future__ import annotations

import argparse
import time
from io import BytesIO

from fastavro import schemaless_reader, schemaless_writer

from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events, frame_from_batch
from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH, AvroSerde


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    reg = SchemaCatalogue.load()
    serde = AvroSerde(reg)
    parsed = reg.current(PREDICTION).parsed
    events = make_events(args.n)
    encoded = [serde.encode(PREDICTION, e) for e in events]
    bodies = [d[10:] for d in encoded]

    def bare_encode():
        for e in events:
            b = BytesIO()
            schemaless_writer(b, parsed, e)
            b.getvalue()

    def ours_encode():
        enc = serde.encode
        for e in events:
            enc(PREDICTION, e)

    def bare_decode():
        for d in bodies:
            schemaless_reader(BytesIO(d), parsed, None)

    def ours_decode():
        dec = serde.decode
        for d in encoded:
            dec(d)

    batch = [serde.encode(PREDICTION_BATCH, batch_from_events(events[i:i + 500]))
             for i in range(0, len(events), 500)]

    def ours_decode_batch():
        dec = serde.decode
        for d in batch:
            frame_from_batch(dec(d)[1])

    def ours_encode_batch():
        enc = serde.encode
        for i in range(0, len(events), 500):
            enc(PREDICTION_BATCH, batch_from_events(events[i:i + 500]))

    rows = {}
    for name, fn in [("bare encode", bare_encode), ("loopline encode", ours_encode),
                     ("bare decode", bare_decode), ("loopline decode", ours_decode),
                     ("loopline encode, columnar PredictionBatch of 500", ours_encode_batch),
                     ("loopline decode, columnar PredictionBatch of 500", ours_decode_batch)]:
        rows[name] = args.n / best(fn, args.repeat)
    print(f"{'path':45s} {'records/s':>12s} {'vs bare':>8s}")
    for name, rate in rows.items():
        base = rows["bare encode"] if "encode" in name else rows["bare decode"]
        print(f"{name:45s} {rate:12,.0f} {rate / base:8.1%}")
    return rows


if __name__ == "__main__":
    main()
