"""Cost of issue #20's per-frame partition work on the route hot path, against the same router without it.

    .venv/bin/python -m benchmarks.bench_partition_check [--events N] [--repeats R] [--auto-threshold T]

In-process, no broker: the same PredictionBatch records (500 predictions each;
confidence >= ``--auto-threshold`` is auto-approved, the rest become review tasks,
which are encoded one by one and dominate the cost when there are many) are routed by :class:`Router`
three ways — without partition work (the baseline, what 0.1 did), with
``partitions=4`` (tasks on ``partition_for(event_id)`` and the mis-partition count:
one vectorised murmur2 per frame), and with ``decision_events=True`` too (one
extra ``RoutingDecision`` record per prediction). Prints predictions/s (best of
R runs) and each variant's throughput as a ratio of the baseline's.
"""
from __future__ import annotations

import argparse
import time

from loopline.processors.policy.threshold import ThresholdPolicy
from loopline.processors.routing.router import InputRecord, Router
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events
from loopline.processors.wire.partitioning import partitions_for
from loopline.processors.wire.serde import PREDICTION_BATCH, AvroSerde


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--auto-threshold", type=float, default=0.3)
    args = ap.parse_args()
    serde = AvroSerde(SchemaCatalogue.load())
    events = make_events(args.events, seed=3)
    now = max(e["emitted_at"] for e in events) + 1000
    records = [InputRecord(serde.encode(PREDICTION_BATCH, batch_from_events(events[i:i + 500], f"b{i}")), "p", 0, i)
               for i in range(0, len(events), 500)]
    variants = {"baseline (no partition work)": {}, "partitions=4 (issue #20 default)": {"partitions": 4},
                "partitions=4 + decision_events": {"partitions": 4, "decision_events": True}}
    rates = {}
    for name, kw in variants.items():
        router = Router(serde, ThresholdPolicy(args.auto_threshold, min(0.1, args.auto_threshold)), 10**12, **kw)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = router.route(records, now_ms=now)
            best = min(best, time.perf_counter() - t0)
        assert res.decided == len(events)
        tasks = sum(o.role.startswith("review") for o in res.outputs)
        rates[name] = len(events) / best
    t0 = time.perf_counter()
    partitions_for([e["event_id"] for e in events], 4)
    murmur = len(events) / (time.perf_counter() - t0)
    base = rates["baseline (no partition work)"]
    print(f"{len(events):,} predictions in {len(records)} PredictionBatch records ({tasks:,} review tasks), "
          f"best of {args.repeats}")
    for name, r in rates.items():
        print(f"  {name:<34} {r:>12,.0f} predictions/s  x{r / base:.3f} of baseline")
    print(f"  partitions_for alone               {murmur:>12,.0f} keys/s")


if __name__ == "__main__":
    main()
