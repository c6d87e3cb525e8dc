"""Threshold autopilot vs fixed thresholds, and calibration of an over-confident model, on the simulation.

    .venv/bin/python -m benchmarks.bench_autopilot [--events N] [--seed S] [--more-seeds K] [--quick]

Everything runs in-process, no broker: :class:`FraudTraffic` (fixed seed, a
concept drift at 60% of the run) scored by :class:`StaticProducerModel`; every
chunk of 2,000 events (2 simulated seconds) is decided by the real tiered
policy (:class:`PolicyHolder`) — once with the autopilot moving the
``autopilot`` overlay, and once per fixed threshold. Every human task (review,
escalation, audit at 2% of the auto tier) is answered with the ground-truth label
``--delay`` simulated seconds after the event; the answers go through the
worker's :class:`~loopline.streams.quality.CalibrationRuntime` (example and route
hooks, the autopilot tick every 5 simulated seconds, windows of 40 s).
The autopilot gets no drift detector here: a concept drift leaves the inputs
unchanged, so only verified outcomes can reveal it.

Figures:

* per policy: human workload (tasks / events), realised error rate of the auto
  tier against ground truth (whole run, before and after the drift); the best
  fixed threshold is the one with the least workload whose whole-run realised
  error is within the budget; the target is autopilot error <= budget with
  workload >= 30% below that best fixed threshold;
* events between the concept drift and the autopilot's first tightening;
* ECE of a calibrated (temperature 1.0) and a deliberately over-confident
  (temperature 0.5) producer model: from verified outcomes (IPW, what Loopline
  reports) vs from ground truth on every event.

PNGs in ``out/bench/``: threshold trajectory and reliability diagrams.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from loopline.connectors.cli.policy_status import plot_reliability
from loopline.connectors.simulator import FraudTraffic, StaticProducerModel
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.policy.quality_options import AutopilotSpec, SliceSpec
from loopline.processors.quality.reliability import BinnedOutcomes, ece_reference
from loopline.processors.routing.router import Routed, RouteResult
from loopline.processors.wire.frame import frames_from_events
from loopline.streams.quality import CalibrationRuntime

OUT = Path("out/bench")
CHUNK = 2000
BUDGET = 0.01
FIXED = (0.90, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0)


def policy_text(threshold: float, audit: float = 0.02) -> str:
    return (f'version = "fixed-{threshold}"\n[models.fraud.tiers.auto]\n'
            f'min_confidence = {threshold}\naudit_rate = {audit}\n')


class Run:
    """One policy's tallies over the stream (against ground truth)."""

    def __init__(self, name: str, holder: PolicyHolder) -> None:
        self.name, self.holder = name, holder
        self.events = self.human = 0
        self.events_before = self.human_before = 0
        self.auto = np.zeros(2, dtype=np.int64)  # before / after drift
        self.auto_errors = np.zeros(2, dtype=np.int64)

    def decide(self, frame, wrong: np.ndarray, drifted: np.ndarray, now_ms: int):
        d = self.holder.decide_frame(frame, now_ms)
        auto = d.tiers == 0
        self.events += frame.n
        human = d.needs_human()
        self.human += int(human.sum())
        self.events_before += int((~drifted).sum())
        self.human_before += int((human & ~drifted).sum())
        for k, m in enumerate((~drifted, drifted)):
            self.auto[k] += int((auto & m).sum())
            self.auto_errors[k] += int((auto & m & wrong).sum())
        return d

    def row(self) -> dict:
        err = lambda e, n: e / n if n else 0.0  # noqa: E731  (an empty auto tier approves nothing wrongly)
        return {"policy": self.name, "workload": self.human / self.events,
                "error": err(self.auto_errors.sum(), self.auto.sum()),
                "error_before": err(self.auto_errors[0], self.auto[0]),
                "error_after": err(self.auto_errors[1], self.auto[1]), "auto_share": self.auto.sum() / self.events,
                "workload_before": self.human_before / max(self.events_before, 1)}


def answers(frame, d, labels: np.ndarray, due_ms: int) -> list[tuple[int, dict]]:
    """Ground-truth answers for every human task of a decided frame (perfect reviewers)."""
    out = []
    names = ("legit", "fraud")
    for i in np.flatnonzero(d.needs_human()).tolist():
        e = frame.row(i)
        audit = bool(d.audited[i])
        truth = names[int(labels[i])]
        out.append((due_ms, {"event_id": e["event_id"], "model_name": e["model_name"], "model_version": "v1",
                             "label": truth, "effective_label": truth, "tier": "auto" if audit else "review",
                             "audit": audit, "sampling_propensity": float(d.propensity[i]),
                             "reason": d.reasons[int(d.reason_codes[i])], "reviewed_at": due_ms,
                             "task_created_at": int(e["emitted_at"]), "prediction": e}))
    return out


def simulate(n: int, seed: int, delay_s: float, temperature: float = 0.8, drift_at: float | None = 0.6,
             fixed=FIXED, autopilot: bool = True, start: float = 0.95) -> dict:
    traffic = FraudTraffic(seed=seed, n_events=n, concept_drift_at=drift_at,
                           model=StaticProducerModel(temperature=temperature))
    spec = AutopilotSpec(error_budget=BUDGET, confidence=0.95, min_verified=500, max_step=0.02, interval_seconds=5,
                         window_minutes=40 / 60, min_threshold=0.8, max_threshold=1.0, min_slice_verified=500)
    ap_holder = PolicyHolder(Policy.from_toml(policy_text(start)))
    rt = CalibrationRuntime(ap_holder, CollectorRegistry(), autopilot_specs={"fraud": spec} if autopilot else {},
                            slice_specs={"fraud": (SliceSpec("country", "context", top_k=10),)})
    runs = [Run(f"fixed {t:g}", PolicyHolder(Policy.from_toml(policy_text(t)))) for t in fixed]
    ap = Run("autopilot", ap_holder) if autopilot else None
    pending: deque = deque()
    trajectory, changes = [], []
    truth_conf, truth_ok = [], []

    async def log_change(change) -> None:
        changes.append(change)

    loop = asyncio.new_event_loop()
    for chunk in traffic.iter_chunks(chunk_size=CHUNK):
        (frame,) = frames_from_events(chunk.events)
        a = chunk.arrays
        now = int(a.emitted_at.max())
        pred_fraud = np.array([lab == "fraud" for lab in frame.predicted_labels()])
        wrong = pred_fraud != (chunk.labels == 1)
        truth_conf.append(frame.confidence.copy())
        truth_ok.append(~wrong)
        for r in runs:
            r.decide(frame, wrong, a.drifted, now)
        d = (ap or runs[0]).decide(frame, wrong, a.drifted, now) if ap else runs[0].holder.decide_frame(frame, now)
        rt.on_route(RouteResult(outputs=[], routed=[Routed(frame, d, 0)]))
        pending.extend(answers(frame, d, chunk.labels, now + int(delay_s * 1000)))
        due = []
        while pending and pending[0][0] <= now:
            due.append(pending.popleft()[1])
        if due:
            rt.on_examples(due)
        if autopilot:
            loop.run_until_complete(rt.tick(log_change, now_ms=now))
            trajectory.append((chunk.start + len(chunk), rt.threshold("fraud")))
    loop.close()
    conf, ok = np.concatenate(truth_conf), np.concatenate(truth_ok)
    drift_index = traffic.drift_index
    eps = traffic.events_per_second
    tighten_after = None
    if autopilot and drift_index is not None:
        drift_ms = traffic.start_ms + drift_index * 1000 / eps
        after = [a for a in rt.autopilot.adjustments.get("fraud", ()) if a.action == "tighten" and a.at_ms >= drift_ms]
        if after:
            tighten_after = int((after[0].at_ms - drift_ms) * eps / 1000)
    return {"runs": [r.row() for r in runs], "autopilot": ap.row() if ap else None, "trajectory": trajectory,
            "tighten_after": tighten_after, "drift_index": drift_index, "changes": len(changes), "runtime": rt,
            "truth_conf": conf, "truth_ok": ok}


def truth_curve(conf: np.ndarray, ok: np.ndarray, bins: int = 10) -> list[dict]:
    b = np.minimum((conf * 200).astype(np.int64), 199)
    cell = BinnedOutcomes.from_rows(200, b, ok, np.ones(len(conf)), conf)
    return cell.coarse(bins).curve()


def plot_trajectory(traj, drift_index, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.step([t[0] for t in traj], [t[1] for t in traj], where="post", label="autopilot threshold")
    if drift_index is not None:
        ax.axvline(drift_index, color="red", ls="--", label="concept drift")
    ax.set_xlabel("events")
    ax.set_ylabel("min_confidence")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--delay", type=float, default=10.0, help="simulated seconds from event to answer")
    ap.add_argument("--start", type=float, default=0.95, help="the policy file's min_confidence (autopilot start)")
    ap.add_argument("--more-seeds", type=int, default=0, help="repeat the autopilot run on K more seeds (summary)")
    ap.add_argument("--quick", action="store_true", help="100,000 events")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.events
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    res = simulate(n, args.seed, args.delay, start=args.start)
    rows = res["runs"] + [res["autopilot"]]
    print(f"\nAutopilot vs fixed thresholds: {n:,} events, seed {args.seed}, concept drift at event "
          f"{res['drift_index']:,}, budget {BUDGET:.0%} (95% one-sided), audits 2%, answers after {args.delay:g} s, "
          f"autopilot starts at {args.start:g}")
    print(f"{'policy':<14}{'workload':>10}{'auto share':>12}{'auto error':>12}{'before drift':>14}{'after drift':>13}")
    for r in rows:
        print(f"{r['policy']:<14}{r['workload']:>10.1%}{r['auto_share']:>12.1%}{r['error']:>12.2%}"
              f"{r['error_before']:>14.2%}{r['error_after']:>13.2%}")
    ok_fixed = [r for r in res["runs"] if r["error"] <= BUDGET]
    best = min(ok_fixed, key=lambda r: r["workload"]) if ok_fixed else None
    a = res["autopilot"]
    print(f"\nbest fixed threshold within budget: {best['policy'] if best else 'none'}"
          + (f" (workload {best['workload']:.1%})" if best else ""))
    if best:
        cut = 1 - a["workload"] / best["workload"]
        print(f"autopilot: workload {a['workload']:.1%} = {cut:.0%} lower than the best fixed threshold "
              f"(target >= 30%); realised auto error {a['error']:.2%} (target <= {BUDGET:.0%}): "
              f"{'MET' if cut >= 0.30 and a['error'] <= BUDGET else 'NOT MET'}")
    pre = [r for r in res["runs"] if r["error_before"] <= BUDGET]
    if pre:
        bp = min(pre, key=lambda r: r["workload_before"])
        print(f"before the drift only: best fixed within budget {bp['policy']} (workload {bp['workload_before']:.1%}, "
              f"error {bp['error_before']:.2%}); autopilot workload {a['workload_before']:.1%}, "
              f"error {a['error_before']:.2%}")
    print(f"events from the concept drift to the autopilot's first tightening after it: {res['tighten_after']} "
          f"(policy changes logged in the run: {res['changes']})")
    safe = [float(r["policy"].split()[1]) for r in res["runs"] if r["error_after"] <= BUDGET]
    if safe and res["drift_index"] is not None:
        level = min(safe)
        hit = next((i for i, t in res["trajectory"] if i > res["drift_index"] and t >= level - 1e-9), None)
        print(f"events from the concept drift until the threshold reached {level:g} (the lowest fixed threshold "
              f"within budget after the drift): {None if hit is None else hit - res['drift_index']}")
    plot_trajectory(res["trajectory"], res["drift_index"], OUT / "autopilot_threshold.png")
    for seed in range(args.seed + 1, args.seed + 1 + args.more_seeds):
        r = simulate(n, seed, args.delay, start=args.start, fixed=(1.0,))
        a = r["autopilot"]
        print(f"  seed {seed}: autopilot workload {a['workload']:.1%} ({1 - a['workload']:.0%} below fixed 1), "
              f"auto error {a['error']:.2%} (before drift {a['error_before']:.2%}, workload "
              f"{a['workload_before']:.1%})")

    print("\nECE of the producer model: verified outcomes (IPW, as reported) vs ground truth on every event "
          "(no drift, fixed threshold 0.9, audits 2%, 10 bins)")
    print(f"{'temperature':<14}{'ECE verified':>14}{'ECE truth':>12}{'abs diff':>10}{'outcomes':>10}")
    m = 60_000 if args.quick else 150_000
    for temp in (1.0, 0.5):
        r = simulate(m, args.seed + 1, args.delay, temperature=temp, drift_at=None, fixed=(0.9,), autopilot=False)
        rt = r["runtime"]
        verified = rt.tracker.ece("fraud")
        truth = ece_reference(r["truth_conf"], r["truth_ok"], bins=10)
        print(f"{temp:<14g}{verified:>14.4f}{truth:>12.4f}{abs(verified - truth):>10.4f}"
              f"{int(rt.tracker.cell('fraud').n.sum()):>10,}")
        plot_reliability(rt.tracker.curve("fraud"), OUT / f"reliability_t{temp:g}.png",
                         title=f"producer model, temperature {temp:g}",
                         reference=truth_curve(r["truth_conf"], r["truth_ok"]))
    print(f"\nPNGs in {OUT}/ (autopilot_threshold.png, reliability_t1.png, reliability_t0.5.png); "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
