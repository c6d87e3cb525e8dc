"""Cost of drift processing in the worker: throughput with and without drift, same events, same run.

    .venv/bin/python -m benchmarks.bench_drift_worker [--events 200000] [--rounds 2]

Two measurements, printed as tables:

1. **Live worker** (embedded broker): the same N predictions (columnar
   ``PredictionBatch`` records of 500) pre-filled in two topic namespaces; a
   worker with ``LOOPLINE_AGENTS=route`` and one with ``route,drift`` (route
   hook + summary publisher + drift agent + reader in the same process) each
   drain their topic; throughput = decisions / (last decided_at − first),
   CPU µs per prediction from /proc. Rounds alternate the two so drift on the
   shared machine hits both alike; the cost is 1 − median(with / without).
2. **In process** (no broker, no noise from Kafka): ``Router.route`` on the
   same records vs ``Router.route`` + the drift route hook (``DriftCollector``
   with the reference layout already installed, i.e. the steady state).

Target: drift costs ≤ 15% of the worker's throughput.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from loopline.connectors.bench.run import _events, _prefill, _settings, _worker_row
from loopline.connectors.broker import EmbeddedBroker
from loopline.processors.drift.baseline import BaselineBuilder
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde

# name -> (LOOPLINE_AGENTS, pinned reference file, drift agent in this worker)
CONFIGS = {
    "route": ("route", False, True),
    "route,drift, collect only (agent in its own group), pinned reference": ("route,drift", True, False),
    "route,drift, agent in the worker, pinned reference": ("route,drift", True, True),
    "route,drift, agent in the worker, first-N reference phase": ("route,drift", False, True),
}


def live(n: int, rounds: int, tmp: Path) -> list[dict]:
    serde = AvroSerde(SchemaCatalogue.load())
    rows = []
    events = _events(n)
    b = BaselineBuilder("fraud", "v1", 5000)
    b.update(events[:20_000])
    ref = tmp / "reference.json"
    b.profile().save(ref)
    names = list(CONFIGS)
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate: load hits every config alike
            for name in order:
                agents, pinned, agent = CONFIGS[name]
                s = _settings(broker.bootstrap, f"d{r}{len(rows)}", 4, tmp, agents=agents)
                _prefill(s, events, batch_size=500)
                s = s.model_copy(update={"drift_agent": agent, "drift_reference_file": ref.resolve() if pinned else None})
                print(f"[bench] round {r + 1}, {name} ...", flush=True)
                res = _worker_row(s, serde, n, tmp)
                rows.append({"round": r + 1, "config": name, **res})
                print(f"        {res.get('rate', 0):,.0f}/s, {res.get('cpu_us', 0):.1f} CPU us/prediction"
                      if "rate" in res else f"        {res['error']}", flush=True)
    return rows


def in_process(n: int, repeats: int = 5) -> dict:
    """Router.route alone vs Router.route + drift hook, best of ``repeats``, steady state (layout known)."""
    from loopline.processors.drift.collector import DriftCollector
    from loopline.processors.drift.monitor import DriftMonitor
    from loopline.processors.policy.threshold import ThresholdPolicy
    from loopline.processors.routing.router import InputRecord, Router
    from loopline.processors.wire.frame import batch_from_events, frames_from_events
    from loopline.processors.wire.serde import PREDICTION_BATCH
    from loopline.streams.confluent import build_serde
    from loopline.streams.settings import Settings

    settings = Settings()
    serde = build_serde(settings)
    events = _events(n)
    records = [InputRecord(serde.encode(PREDICTION_BATCH, batch_from_events(events[i:i + 500])), "p", (i // 500) % 4,
                           i // 500) for i in range(0, n, 500)]
    router = Router(serde, ThresholdPolicy(auto=0.9, escalate=0.6, sla_ms=3_600_000), 300_000)
    mon = DriftMonitor("fraud")
    mon.update(frames_from_events(events[:10_000]))
    profiles = list(mon.profiles().values())

    def once(with_drift: bool) -> float:
        col = DriftCollector()
        col.set_references("fraud", profiles)
        t0 = time.perf_counter()
        for a in range(0, len(records), 40):  # a take of 40 records = 20,000 predictions
            res = router.route(records[a:a + 40], now_ms=int(time.time() * 1000))
            if with_drift:
                for rr in res.routed:
                    col.add_frame(rr.frame, rr.partition)
                col.flush()
        return time.perf_counter() - t0

    base, drift = [], []
    for _ in range(repeats):  # alternate, so load from other processes hits both alike; best of each
        base.append(once(False))
        drift.append(once(True))
    base, drift = min(base), min(drift)
    return {"route_s": base, "route_drift_s": drift, "rate_route": n / base, "rate_route_drift": n / drift}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-live", action="store_true")
    args = ap.parse_args(argv)
    tmp = Path("out/bench_drift")
    tmp.mkdir(parents=True, exist_ok=True)
    ip = in_process(min(args.events, 100_000))
    rows = [] if args.skip_live else live(args.events, args.rounds, tmp)
    print(f"\nDrift cost in the worker ({args.events:,} predictions, PredictionBatch of 500, 4 partitions)\n")
    print("| round | worker | predictions/s | CPU µs/prediction |")
    print("|---|---|---|---|")
    for r in rows:
        if "rate" in r:
            print(f"| {r['round']} | {r['config']} | {r['rate']:,.0f} | {r['cpu_us']:.1f} |")
        else:
            print(f"| {r['round']} | {r['config']} | {r.get('error')} | |")
    base = [r for r in rows if r["config"] == "route" and "rate" in r]
    for name in list(CONFIGS)[1:]:
        rate_ratios, cpu_ratios = [], []
        for rnd in sorted({r["round"] for r in rows}):
            a = [r for r in base if r["round"] == rnd]
            d = [r for r in rows if r["round"] == rnd and r["config"] == name and "rate" in r]
            if a and d:
                rate_ratios.append(d[0]["rate"] / a[0]["rate"])
                cpu_ratios.append(d[0]["cpu_us"] / a[0]["cpu_us"])
        if rate_ratios:
            rr, cr = statistics.median(rate_ratios), statistics.median(cpu_ratios)
            if "reference phase" in name:
                extra = statistics.median(
                    d["cpu_us"] - a["cpu_us"] for a in base for d in rows
                    if d["config"] == name and d["round"] == a["round"] and "rate" in d) * args.events / 1e6
                print(f"\n{name}: the reference phase is a one-off per model version: "
                      f"~{extra:.1f} CPU-seconds more over these {args.events:,} predictions")
            print(f"\n{name}: throughput with/without = {', '.join(f'{x:.2f}' for x in rate_ratios)} (median {rr:.2f}, "
                  f"cost {1 - rr:.0%}); CPU per prediction with/without = {', '.join(f'{x:.2f}' for x in cpu_ratios)} "
                  f"(median {cr:.2f}, cost {1 - 1 / cr:.0%} of throughput at equal CPU); target <= 15%")
    cost = 1 - ip["rate_route_drift"] / ip["rate_route"]
    print(f"in process (Router.route vs + drift hook, best of 5, {min(args.events, 100_000):,} predictions): "
          f"{ip['rate_route']:,.0f}/s vs {ip['rate_route_drift']:,.0f}/s -> drift hook costs {cost:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
