"""Routing-policy throughput: decisions/s on synthetic predictions.

    .venv/bin/python -m benchmarks.bench_policy [--n 100000] [--batch 2000] [--repeat 5] [--policy FILE]

Prints decisions/s for

* ``decide_batch`` on decoded event dicts, in batches of ``--batch`` (the
  worker's ``take_max``) and as one batch of ``--n``;
* ``decide_frame`` on columnar frames of ``--batch`` rows (the worker's path);

with the example policy (risk, context, per-class thresholds, audit and
oversampling, new-version review, both budgets). Each figure is the best of
``--repeat`` rounds with a fresh policy (fresh budgets), so a shared machine's
noise is damped. The synthetic input is frozen out of the garbage collector
(``gc.freeze``): a worker never holds 100k decoded events, a benchmark does.
"""
from __future__ import annotations

import argparse
import gc
import time
from collections import Counter
from pathlib import Path

from loopline.processors.policy.policy import Policy
from loopline.processors.testing import make_events
from loopline.processors.wire.frame import frames_from_events

EXAMPLE = Path(__file__).resolve().parents[1] / "policies" / "example.toml"


def best_rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--policy", default=str(EXAMPLE))
    args = ap.parse_args(argv)
    text = Path(args.policy).read_text(encoding="utf-8")
    events = make_events(args.n, start_ms=1_700_000_000_000)
    for i, e in enumerate(events):  # some context variety for the country rule
        e["context"] = {"country": ("IR", "DE", "FR", "US")[i % 4] if i % 97 == 0 else "DE", "channel": "web"}
    batches = [events[i:i + args.batch] for i in range(0, args.n, args.batch)]
    frames = [f for b in batches for f in frames_from_events(b)]
    now = events[-1]["emitted_at"]
    gc.collect()
    gc.freeze()

    def run_batches():
        p = Policy.from_toml(text)
        for b in batches:
            p.decide_batch(b, now)

    def run_one():
        Policy.from_toml(text).decide_batch(events, now)

    def run_frames():
        p = Policy.from_toml(text)
        for f in frames:
            p.decide_frame(f, now)

    out = {
        f"decide_batch x{args.batch}": best_rate(run_batches, args.n, args.repeat),
        f"decide_batch x{args.n}": best_rate(run_one, args.n, args.repeat),
        f"decide_frame x{args.batch}": best_rate(run_frames, args.n, args.repeat),
    }
    mix = Counter((d.tier, d.reason) for d in Policy.from_toml(text).decide_batch(events, now))
    print(f"policy {args.policy}: {args.n} synthetic events")
    for name, rate in out.items():
        print(f"  {name:24s} {rate:12,.0f} decisions/s")
    print("  decision mix:", ", ".join(f"{t}/{r}={c}" for (t, r), c in mix.most_common()))
    return out


if __name__ == "__main__":
    main()
