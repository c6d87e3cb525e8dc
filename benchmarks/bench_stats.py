"""What per-tier statistics cost on the hot path, in one process, on the same records.

    .venv/bin/python -m benchmarks.bench_stats [--events 200000] [--repeats 5]

Rows (predictions/s, best of ``repeats``), all over the same ``PredictionBatch``
records of 500 predictions:

1. decode only: Avro decode + unpacking the columns into a ``PredictionFrame``
   (what any consumer of the columnar format must do);
2. the router: decode + validate + tiered policy + encoding every output
   (decisions, review tasks) — the route agent's work minus the broker;
3. the router + ``TierStats.update_routed`` (statistics per partition);
4. 3 + merging and snapshotting the statistics once per batch of 20 records
   (far more often than ``/stats`` is read; an upper bound on reporting cost).

Ratios are against row 1 in the same run. No broker: this isolates CPU cost;
``loopline bench`` measures the whole worker on the embedded broker.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from loopline.connectors.bench.run import _events as bench_events
from loopline.processors.policy.policy import Policy
from loopline.processors.routing.router import InputRecord, Router
from loopline.processors.stats.tier_stats import TierStats
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events, frame_from_batch
from loopline.processors.wire.serde import PREDICTION_BATCH, AvroSerde

EXAMPLE = Path(__file__).resolve().parents[1] / "policies" / "example.toml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    serde = AvroSerde(SchemaCatalogue.load())
    now = int(time.time() * 1000)
    events = bench_events(args.events)  # ~85% confident, like the demo's traffic
    records = [InputRecord(serde.encode(PREDICTION_BATCH, batch_from_events(events[i:i + 500])),
                           "loopline.predictions", (i // 500) % 4, i // 500) for i in range(0, len(events), 500)]
    text = EXAMPLE.read_text()
    # no budgets: a budget would defer differently on each repeat as its bucket drains
    text = text[: text.index("[budget.review]")]

    def decode_only() -> None:
        for r in records:
            frame_from_batch(serde.decode(r.value)[1])

    def run_router(stats: TierStats | None, report_every: int = 0) -> None:
        router = Router(serde, Policy.from_toml(text), 300_000)
        for k in range(0, len(records), 20):
            res = router.route(records[k:k + 20], now_ms=now)
            if stats is not None:
                for routed in res.routed:
                    stats.update_routed(routed.frame, routed.decisions)
                if report_every:
                    TierStats.merged([stats]).snapshot()

    rows = [("decode only (Avro + columns)", decode_only),
            ("router: decode + validate + policy + outputs", lambda: run_router(None)),
            ("router + per-tier statistics", lambda: run_router(TierStats())),
            ("router + statistics + merge/snapshot per 20 records", lambda: run_router(TierStats(), 1))]
    results = {}
    for name, fn in rows:
        best = min(_timed(fn) for _ in range(args.repeats))
        results[name] = len(events) / best
        print(f"  {name}: {results[name]:,.0f}/s", flush=True)
    base = results[rows[0][0]]
    router = results[rows[1][0]]
    print(f"\n{len(events):,} predictions in {len(records)} PredictionBatch records, best of {args.repeats}\n")
    print("| path | predictions/s | vs decode only | vs router alone |")
    print("|---|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.0%} | {rate / router:.0%} |")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
