"""The loop's effectiveness, in-process: simulator -> policy -> review capacity -> learner -> served decision.

    .venv/bin/python -m benchmarks.bench_loop [--seeds 7 8 9] [--events 200000] [--answers-per-hour 2160]
                                             [--events-per-second 10] [--sweep [MULTIPLE ...]] [--jobs 2]
                                             [--out out/bench/loop]

No broker: the same processors the workers run (``PolicyHolder`` with the
``trust`` autonomy overlay from :class:`~loopline.streams.autonomy.AutonomyRuntime`,
:class:`~loopline.processors.policy.capacity.ReviewCapacity`,
:class:`~loopline.processors.learning.ModelLearner`,
:class:`~loopline.processors.learning.serving.ServingController`) fed with
:class:`~loopline.connectors.simulator.FraudTraffic` (feature shift at 40%,
concept change at 70% of the events, as the demo). Everything runs on event
time and event counts, so the same seed gives the same figures exactly
(tolerance 0) whatever the machine's load.

Per batch of ``--batch`` events: the policy decides (auto / review / audit);
every event gets an expected-error value (producer doubt, override-risk model,
challenger disagreement); the team's capacity (answers per hour of event time)
grants the audits first, then the highest values; a simulated reviewer (3%
label noise) answers the granted events within the batch (the bench assumes
answers arrive before the decision is served: an upper bound on what review
latency allows); with ``--confirm-above C`` a correction of a prediction made at
confidence >= C also gets a senior's answer (1% noise, charged to the capacity),
which decides — the review server's ``LOOPLINE_REVIEW_CONFIRM_OVERRIDES_ABOVE``.
The served decision is the human's answer when there is one,
else the model the serving controller names (the producer's prediction or the
challenger's). Audited answers feed the autonomy monitor and — before the
challenger learns them — the serving controller (random, held out); every
answer then trains the learner.

Writes ``report_seed<N>.json`` per seed, ``report.json`` (all seeds with
min/mean/max, and with ``--sweep`` one row per seed and capacity), ``loop_seed<N>.png`` (event index on x)
and ``loop_sweep.png`` (the targets against the human share).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from loopline.connectors.simulator import FraudTraffic
from loopline.processors.learning import LearnerConfig, ModelLearner
from loopline.processors.learning.features import example_features, risk_features
from loopline.processors.learning.serving import ServingController
from loopline.processors.policy.capacity import ReviewCapacity, expected_error
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.quality.autonomy import AutonomyLevel, AutonomyMonitor, AutonomySpec
from loopline.streams.autonomy import AutonomyRuntime

SHIFT_AT, DRIFT_AT = 0.4, 0.7
AUDIT_RATE = 0.02
POLICY = 'version = "bench-loop"\n[models.fraud]\npositive_label = "fraud"\n[models.fraud.tiers.auto]\n' \
         f'min_confidence = 0.9\naudit_rate = {AUDIT_RATE}\n'
NOISE = 0.03
SENIOR_NOISE = 0.01  # the demo's senior reviewer
ERROR_BUDGET = 0.02  # the auto tier's error budget (the producer's auto-tier error is ~1.1% before the change)
#: autonomy levels sized to the team: audits that no one can answer would only crowd out the chosen tasks
LEVELS = (AutonomyLevel(0.04, 0.03), AutonomyLevel(0.06, 0.06))
OPEN = dict(reviewer_max_share=1.0, reviewer_max_per_window=10**9)


def f1(true: np.ndarray, pred: np.ndarray) -> float:
    tp = int((true & pred).sum())
    fp = int((~true & pred).sum())
    fn = int((true & ~pred).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def noisy(truth: str, noise: float, rng) -> str:
    """A reviewer's label: the truth, flipped with probability ``noise``."""
    return truth if rng.random() >= noise else ("legit" if truth == "fraud" else "fraud")


def example(e: dict, d, label: str, tier: str, audit: bool, reviewer: str, answers: int, effective: str) -> dict:
    """The TrainingExample the join would emit for one answer."""
    return {"event_id": e["event_id"], "model_name": "fraud", "model_version": "v1",
            "correction_id": f"c-{e['event_id']}-{answers}", "reviewer_id": reviewer,
            "action": "approve" if label == e["predicted_label"] else "override", "label": label,
            "effective_label": effective, "answers_so_far": answers, "tier": tier, "audit": audit,
            "sampling_propensity": d.sampling_propensity if audit else 1.0, "reason": d.reason,
            "policy_version": d.policy_version, "task_created_at": e["emitted_at"],
            "reviewed_at": e["emitted_at"] + answers - 1, "review_seconds": 30.0, "prediction": e}


def run(seed: int, n: int, answers_per_hour: float, eps: float, batch: int, class_probabilities: bool = True,
        confirm_above: float | None = None) -> dict:
    traffic = FraudTraffic(seed=seed, n_events=n, feature_shift_at=SHIFT_AT, concept_drift_at=DRIFT_AT,
                           events_per_second=eps)
    holder = PolicyHolder(Policy.from_toml(POLICY))
    spec = AutonomySpec(error_budget=ERROR_BUDGET, levels=LEVELS, label_noise=NOISE)  # the reviewers' stated noise
    autonomy = AutonomyRuntime(holder, lambda m: spec)
    # the same sequential test, reset after every alarm, on the same audits: detection delays and false alarms
    # of the test itself (the runtime's monitor stops alarming once autonomy is at its lowest level)
    detector = AutonomyMonitor("fraud", spec)
    alarms: list[int] = []
    capacity = ReviewCapacity(answers_per_hour)
    learner = ModelLearner("fraud", LearnerConfig(positive_label="fraud", **OPEN))
    serving = ServingController(positive="fraud", min_examples=150, window=400)
    rng = np.random.default_rng([seed, 17])
    true_all = np.zeros(n, bool)
    prod_all = np.zeros(n, bool)
    served_all = np.zeros(n, bool)
    human = np.zeros(n, bool)
    audited = np.zeros(n, bool)
    served_by_ch = np.zeros(n, bool)
    level = np.zeros(n, np.int8)
    conf_all = np.zeros(n)
    changes = []
    stages = []
    confirmations = 0
    for ch in traffic.iter_chunks(chunk_size=batch):
        evs = ch.events
        if not class_probabilities:  # allowed by the schema, and what the README's producer example does
            for e in evs:
                e.pop("class_probabilities", None)
        lo = ch.start
        decisions = holder.decide_batch(evs, now_ms=evs[-1]["emitted_at"])
        truth = [ch.true_label(i) for i in range(len(evs))]
        conf = np.array([e["confidence"] for e in evs])
        conf_all[lo:lo + len(evs)] = conf
        xs = [example_features(e) for e in evs]
        ch_model = learner.challenger
        if ch_model is not None:
            probs = [ch_model.predict_proba_one(x) for x in xs]
            ch_pred = [ch_model.predict_one(p) for p in probs]
            disagree = np.array([1.0 - p.get(e["predicted_label"], 0.0) for p, e in zip(probs, evs)])
            risk = np.array([learner.risk.predict_proba_one(risk_features(e, x)) for e, x in zip(evs, xs)])
        else:
            ch_pred = [e["predicted_label"] for e in evs]
            disagree = risk = None
        is_audit = np.array([d.reason == "audit" for d in decisions])
        values = expected_error(conf, risk, disagree)
        granted = capacity.grant(values, evs[-1]["emitted_at"], is_audit)
        examples = []
        for i, (e, d) in enumerate(zip(evs, decisions)):
            k = lo + i
            true_all[k] = truth[i] == "fraud"
            prod_all[k] = e["predicted_label"] == "fraud"
            level[k] = autonomy.monitors["fraud"].level if "fraud" in autonomy.monitors else 0
            if granted[i]:
                label = noisy(truth[i], NOISE, rng)
                human[k] = True
                audited[k] = bool(is_audit[i])
                reviewer = f"r{int(rng.integers(6))}"
                tier = "auto" if is_audit[i] else "review"
                if is_audit[i]:  # an audit checks an auto decision after it was served
                    use_ch = ch_model is not None and serving.serve(e["event_id"]) == "challenger"
                    served_by_ch[k] = use_ch
                    served_all[k] = (ch_pred[i] if use_ch else e["predicted_label"]) == "fraud"
                    examples.append(example(e, d, label, tier, True, reviewer, 1, label))
                elif (confirm_above is not None and label != e["predicted_label"]
                      and e["confidence"] >= confirm_above):
                    # a confident prediction overridden: a senior's second opinion decides (the escalation tier wins)
                    senior = noisy(truth[i], SENIOR_NOISE, rng)
                    capacity.charge(1)
                    confirmations += 1
                    served_all[k] = senior == "fraud"
                    examples.append(example(e, d, label, tier, False, reviewer, 1, label))
                    examples.append(example(e, d, senior, "escalate", False, "senior", 2, senior))
                else:  # a review task is answered before its decision is served
                    served_all[k] = label == "fraud"
                    examples.append(example(e, d, label, tier, False, reviewer, 1, label))
                if is_audit[i]:
                    if detector.observe(label != e["predicted_label"], d.sampling_propensity, e["confidence"], k):
                        alarms.append(k)
                        detector.level = 0
                    sc = serving.observe(label, ch_pred[i], e["predicted_label"], position=k)
                    if sc is not None:
                        stages.append({"at": k, "from": sc.old, "to": sc.new, **sc.evidence})
            else:
                use_ch = ch_model is not None and serving.serve(e["event_id"]) == "challenger"
                served_by_ch[k] = use_ch
                served_all[k] = (ch_pred[i] if use_ch else e["predicted_label"]) == "fraud"
        for c in autonomy.on_examples(examples):
            at = int(round((c.evidence["position"] - traffic.start_ms) * eps / 1000.0))  # emitted_at -> index
            changes.append({"at": at, "action": c.action, "level": c.new_level,
                            **{k: c.evidence[k] for k in ("estimate", "lower", "upper", "cusum")}})
        learner.learn_batch([(ex, 0, None) for ex in examples])
    rep = figures(seed, traffic, true_all, prod_all, served_all, human, audited, served_by_ch, level, changes,
                  stages, answers_per_hour, eps, alarms)
    rep["detection_bound"] = detection_bound(true_all, prod_all, conf_all, traffic.drift_index,
                                             AUDIT_RATE, NOISE)
    rep["class_probabilities"] = class_probabilities
    rep["confirm_overrides_above"] = confirm_above
    rep["confirmations_share"] = confirmations / n  # second opinions (extra answers, charged to the capacity)
    rep["human_tasks_share"] = (int(human.sum()) + confirmations) / n  # every task a person answered
    rep["serving_status"] = serving.status()
    rep["learner_quality"] = {k: v for k, v in learner.stats()["quality"].items() if k.endswith(".all")}
    return rep


def detection_bound(true, prod, conf, change: int, audit_rate: float, noise: float, auto_min: float = 0.9,
                    window: int = 2000, false_alarms_per_100k: float = 1.0) -> dict:
    """How well *any* test on audits alone can see the concept change within ``window`` events.

    The auto tier's true error before and after the change comes from the simulator's truth, seen
    through reviewers with ``noise`` label noise. In ``window`` events there are
    ``n = window x audit_rate`` audits; the test that counts wrong-looking audits in that window and
    alarms at ``k`` or more, with ``k`` the smallest count whose chance without a change is within the
    false-alarm budget (one per 100k events = ``window / 100k`` per window), detects the change with the
    binomial chance ``power``. A sequential test cannot do much better on the same outcomes.
    """
    from math import comb

    auto = conf >= auto_min
    wrong = prod != true
    before = float(wrong[:change][auto[:change]].mean())
    after = float(wrong[change:][auto[change:]].mean())
    p0, p1 = (p * (1 - 2 * noise) + noise for p in (before, after))
    n = int(round(window * audit_rate))
    alpha = window * false_alarms_per_100k / 100_000

    def tail(k: int, p: float) -> float:
        return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    k = next(k for k in range(n + 2) if k > n or tail(k, p0) <= alpha)
    return {"auto_error_before": before, "auto_error_after": after, "label_noise": noise, "audit_rate": audit_rate,
            "window_events": window, "audits_in_window": n, "wrong_looking_expected_before": n * p0,
            "wrong_looking_expected_after": n * p1, "alarm_at": k, "false_alarm_chance": tail(k, p0),
            "power": tail(k, p1) if k <= n else 0.0}


def figures(seed, traffic, true, prod, served, human, audited, by_ch, level, changes, stages, aph, eps,
            alarms) -> dict:
    n = len(true)
    wrong = prod != true
    shift, drift = traffic.shift_index, traffic.drift_index
    cycles = {}
    for name, start, stop in (("feature_shift", shift, drift), ("concept_change", drift, n)):
        edges = np.linspace(start, stop, 4).astype(int)
        cycles[name] = {"served": [f1(true[a:b], served[a:b]) for a, b in zip(edges, edges[1:])],
                        "producer": [f1(true[a:b], prod[a:b]) for a, b in zip(edges, edges[1:])]}
    fp_served = int((served & ~true).sum())
    fp_prod = int((prod & ~true).sum())
    lowers = [c["at"] for c in changes if c["action"] == "lower"]
    delay = {}
    for name, at, until in (("feature_shift", shift, drift), ("concept_change", drift, n)):
        hit = [x for x in lowers if at <= x < until]
        test = [x for x in alarms if at <= x < until]
        delay[name] = {"autonomy_lowered": hit[0] - at if hit else None,
                       "audit_error_cusum": test[0] - at if test else None, "drift_monitor": None}
    stationary = shift
    false_alarms = sum(1 for x in alarms if x < stationary)
    return {
        "seed": seed, "events": n, "events_per_second": eps, "team_answers_per_hour": aph,
        "team_capacity_share": aph / (3600 * eps), "error_budget": ERROR_BUDGET,
        "human_share": float(human.mean()), "audit_share": float(audited.mean()),
        "errors_answered_share": float((wrong & human).sum() / max(wrong.sum(), 1)),
        "errors_served_share": float((wrong & (served == prod)).sum() / max(wrong.sum(), 1)),
        "errors_not_served_unchanged_share": float((wrong & (served != prod)).sum() / max(wrong.sum(), 1)),
        "served_f1_by_cycle": {k: v["served"] for k, v in cycles.items()},
        "producer_f1_by_cycle": {k: v["producer"] for k, v in cycles.items()},
        "served_f1_third_cycle_lift": cycles["concept_change"]["served"][2] - cycles["concept_change"]["producer"][2],
        "served_fp": fp_served, "producer_fp": fp_prod, "served_fp_change": (fp_served - fp_prod) / max(fp_prod, 1),
        "detection_delay_events": delay,
        "false_alarms_per_100k": false_alarms * 100_000 / max(stationary, 1), "stationary_events": stationary,
        "audit_error_alarms": alarms,
        "served_by_challenger_share": float(by_ch.mean()),
        "autonomy_changes": changes, "serving_stages": stages,
        "_series": {"level": level, "human": human, "wrong": wrong, "served_wrong": served != true, "by_ch": by_ch,
                    "shift": shift, "drift": drift},
    }


def plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = rep["_series"]
    n = len(s["level"])
    w = max(n // 200, 1)
    x = np.arange(0, n - w + 1, w)

    def roll(a):
        return np.add.reduceat(a.astype(float), x) / w

    fig, ax = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ax[0].plot(x, roll(s["wrong"]), label="producer error rate")
    ax[0].plot(x, roll(s["served_wrong"]), label="served error rate")
    ax[0].set_ylabel("error rate")
    ax[1].plot(x, roll(s["human"]), label="human share (audits included)")
    ax[1].plot(x, roll(s["by_ch"]), label="served by challenger")
    ax[1].set_ylabel("share of events")
    ax[2].step(x, s["level"][x], where="post", label="autonomy level (0 = policy file)")
    ax[2].set_ylabel("level")
    ax[2].set_xlabel("event index (event time)")
    for a in ax:
        a.axvline(s["shift"], color="grey", ls="--")
        a.axvline(s["drift"], color="red", ls="--")
        a.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"bench_loop seed {rep['seed']}: feature shift (grey), concept change (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summary(reps: list[dict]) -> dict:
    keys = ("human_share", "audit_share", "errors_answered_share", "errors_served_share",
            "errors_not_served_unchanged_share", "served_f1_third_cycle_lift", "served_fp_change",
            "false_alarms_per_100k", "served_by_challenger_share")
    out = {k: {"min": min(r[k] for r in reps), "mean": float(np.mean([r[k] for r in reps])),
               "max": max(r[k] for r in reps)} for k in keys}
    delays = [r["detection_delay_events"]["concept_change"]["audit_error_cusum"] for r in reps]
    out["concept_detection_delay_events"] = delays
    out["concept_detection_best_window_test_power"] = [round(r["detection_bound"]["power"], 3) for r in reps]
    return out


SWEEP_KEYS = ("team_answers_per_hour", "team_capacity_share", "human_share", "errors_answered_share",
              "errors_not_served_unchanged_share", "served_f1_third_cycle_lift", "served_fp_change",
              "served_by_challenger_share", "confirmations_share")


def _one(job: tuple) -> dict:
    """One seed at one capacity (a process-pool job): the report without its series, plus the plot."""
    seed, events, aph, eps, batch, out, draw, probs, confirm = job
    rep = run(seed, events, aph, eps, batch, probs, confirm)
    if draw:
        plot(rep, out / f"loop_seed{seed}.png")
    rep.pop("_series")
    return rep


def plot_sweep(rows: list[dict], path: Path, title: str) -> None:
    """The targets against the human share, one line per seed (the dashed lines are the issue's targets)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    for seed in sorted({r["seed"] for r in rows}):
        rs = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["human_share"])
        x = [100 * r["human_share"] for r in rs]
        ax[0].plot(x, [100 * r["errors_not_served_unchanged_share"] for r in rs], "o-", label=f"seed {seed}")
        ax[1].plot(x, [r["served_f1_third_cycle_lift"] for r in rs], "o-", label=f"seed {seed}")
        ax[2].plot(x, [100 * r["served_fp_change"] for r in rs], "o-", label=f"seed {seed}")
    for a, target, name in ((ax[0], 90, "producer errors not served unchanged (%)"),
                             (ax[1], 0.12, "served F1 - producer F1, 3rd cycle after the change"),
                             (ax[2], -40, "served false positives vs producer (%)")):
        a.axhline(target, color="grey", ls="--")
        a.set_title(name, fontsize=9)
        a.set_xlabel("events answered by a human, audits included (%)")
        a.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    from concurrent.futures import ProcessPoolExecutor

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--answers-per-hour", type=float, default=2160.0,
                    help="team capacity: default 12 reviewers x 180 answers/h = 6%% of events at 10 events/s")
    ap.add_argument("--events-per-second", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--sweep", type=float, nargs="*", default=None, metavar="MULTIPLE",
                    help="also run every seed at these multiples of the capacity (default with no value: 2 4 6 8)")
    ap.add_argument("--no-class-probabilities", action="store_true",
                    help="producers send no class_probabilities (the learner must be as good without them)")
    ap.add_argument("--confirm-above", type=float, default=None, metavar="CONFIDENCE",
                    help="an analyst's override of a prediction at or above this confidence gets a senior's second "
                         "opinion (1%% noise), which decides; charged to the capacity "
                         "(LOOPLINE_REVIEW_CONFIRM_OVERRIDES_ABOVE in the review server)")
    ap.add_argument("--jobs", type=int, default=2, help="processes (each run is single-threaded)")
    ap.add_argument("--out", type=Path, default=Path("out/bench/loop"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    multiples = [] if args.sweep is None else (args.sweep or [2.0, 4.0, 6.0, 8.0])
    jobs = [(seed, args.events, args.answers_per_hour, args.events_per_second, args.batch, args.out, True,
             not args.no_class_probabilities, args.confirm_above) for seed in args.seeds]
    jobs += [(seed, args.events, args.answers_per_hour * m, args.events_per_second, args.batch, args.out, False,
              not args.no_class_probabilities, args.confirm_above) for m in multiples for seed in args.seeds]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_one, jobs))
    reps = results[:len(args.seeds)]
    for rep in reps:
        (args.out / f"report_seed{rep['seed']}.json").write_text(json.dumps(rep, indent=1))
        print(f"seed {rep['seed']}: human {rep['human_share']:.3f} (audits {rep['audit_share']:.3f})  errors answered "
              f"{rep['errors_answered_share']:.3f}  errors served unchanged {rep['errors_served_share']:.3f}  "
              f"served FP {rep['served_fp_change']:+.3f}  F1 after change served "
              f"{[round(v, 3) for v in rep['served_f1_by_cycle']['concept_change']]} vs producer "
              f"{[round(v, 3) for v in rep['producer_f1_by_cycle']['concept_change']]}  concept delay "
              f"{rep['detection_delay_events']['concept_change']['audit_error_cusum']}  false alarms/100k "
              f"{rep['false_alarms_per_100k']:.2f}  stages {[(s['at'], s['to']) for s in rep['serving_stages']]}")
    sweep = [{"seed": r["seed"], **{k: r[k] for k in SWEEP_KEYS}} for r in results]
    if multiples:
        for row in sorted(sweep, key=lambda r: (r["team_capacity_share"], r["seed"])):
            print(f"capacity {row['team_capacity_share']:.2f} seed {row['seed']}: " + ", ".join(
                f"{k} {row[k]:.3f}" for k in SWEEP_KEYS[2:]))
        plot_sweep(sweep, args.out / "loop_sweep.png", "bench_loop: 3% noisy reviewers, " + (
            f"second opinion on corrections of predictions at confidence >= {args.confirm_above}"
            if args.confirm_above is not None else "no second opinions"))
    (args.out / "report.json").write_text(json.dumps({"seeds": reps, "summary": summary(reps), "sweep": sweep},
                                                     indent=1))
    print(json.dumps(summary(reps), indent=1))


if __name__ == "__main__":
    main()
