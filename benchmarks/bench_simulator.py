"""Simulator throughput: PredictionEvent dicts vs the numpy arrays behind them, in the same run.

    .venv/bin/python -m benchmarks.bench_simulator [--n 1000000] [--chunk 10000] [--repeat 3]

Three stages over the same ``--n`` events of a ``FraudTraffic`` with a shift and
a drift (the producer model is fitted before timing starts):

* ``numpy arrays`` — population, fraud concept, labels, timestamps: the baseline;
* ``+ model scores`` — the same plus the static model's probabilities;
* ``events (dicts)`` — the full ``iter_chunks`` path: scored PredictionEvent dicts
  and ground truth recorded (what the demo feeds the producer).

Each figure is the best of ``--repeat`` rounds, interleaved, to damp the noise of
a shared machine; the ratio column is each stage's time over the baseline's.
"""
from __future__ import annotations

import argparse
import resource
import time

from loopline.connectors.simulator import FraudTraffic


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    def traffic() -> FraudTraffic:  # fresh each round: no block cache carried over
        return FraudTraffic(seed=7, n_events=args.n, feature_shift_at=0.4, concept_drift_at=0.7, model=model)

    t = time.perf_counter()
    model = FraudTraffic(seed=7, n_events=args.n).model
    fit_s = time.perf_counter() - t

    def arrays() -> None:
        for _ in traffic().iter_arrays(args.chunk):
            pass

    def scored() -> None:
        for a in traffic().iter_arrays(args.chunk):
            model.predict_proba(a)

    def events() -> None:
        n = 0
        for chunk in traffic().iter_chunks(args.chunk):
            n += len(chunk.events)
        assert n == args.n

    stages = [("numpy arrays", arrays), ("+ model scores", scored), ("events (dicts)", events)]
    times = {name: [] for name, _ in stages}
    for _ in range(args.repeat):
        for name, fn in stages:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    best = {name: min(ts) for name, ts in times.items()}
    base = best["numpy arrays"]
    print(f"{args.n:,} events, chunks of {args.chunk:,}, best of {args.repeat}; model fitted in {fit_s:.2f} s")
    print(f"{'stage':20s} {'seconds':>8s} {'events/s':>12s} {'x baseline':>10s}")
    for name, s in best.items():
        print(f"{name:20s} {s:8.2f} {args.n / s:12,.0f} {s / base:10.1f}")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return {name: args.n / s for name, s in best.items()}


if __name__ == "__main__":
    main()
