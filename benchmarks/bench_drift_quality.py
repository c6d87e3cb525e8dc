"""Drift detection quality and cost: our detectors next to River's and a fixed PSI rule, in one run.

    .venv/bin/python -m benchmarks.bench_drift_quality [--quick] [--reps N] [--seed S]

Streams with known change points (the change is abrupt, at event ``C``):

* a synthetic prediction stream (numeric ``x`` ~ N(0, 1), categorical ``cat``,
  ``confidence`` ~ Beta(5, 2), predicted ``class``) with an injected shift of
  ``x`` by 0.5 and 1 standard deviation, a variance change (sd x1.5), a
  confidence drop of ~0.5 sd, and a new category taking 5% of ``cat``;
* a concept drift visible only in corrections: 25% of predictions get an
  outcome, the error rate goes from 10% to 20%;
* River's synthetic generators joined with ``ConceptDriftStream`` (sigmoid
  width 200 centred on C, so the change starts ~100 events before C): SEA
  variant 0 → 3, Agrawal function 0 → 2, Hyperplane → a new random hyperplane;
  a Hoeffding tree trained on the first 3,000 events and frozen, its error
  stream watched (every event labelled).

Every detector sees the same streams. Ours run through ``DriftMonitor`` (time
= event index in ms, 250-event buckets, window 8 buckets, reference = first
5,000 events / 1,000 outcomes, budget 100,000 events); River's ADWIN,
Page-Hinkley, KSWIN and DDM get the raw values (or error bits) one at a time;
"PSI>0.2 fixed" is the common rule: PSI of tumbling 2,000-event windows vs the
reference deciles, alarm above 0.2.

Columns: ``<=2000`` changes detected within 2,000 events, ``missed`` changes not
detected within the 6,000 events after the change, median/p90 delay in events
after the change (for the corrections stream: prediction events), and false
alarms per 100,000 stationary events (a long stationary stream plus every
pre-change segment after the 5,000-event warm-up; error detectors: per 100,000
outcomes). ``ours:signal`` is the signal-level verdict (any default detector).
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from loopline.processors.drift import DriftConfig, DriftMonitor
from loopline.processors.drift.columns import Columns
from loopline.processors.drift.histogram import count_buckets
from loopline.processors.drift.reference import build_profile
from loopline.processors.drift.stats import psi

C = 20_000  # change point
HORIZON = 6_000
WARMUP = 5_000
BUCKET = 250
CATS = np.array(list("abcdefgh"), dtype=object)
CAT_P = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05])
NUM_DETECTORS = ("psi", "ks", "wasserstein", "rank_cusum")
CAT_DETECTORS = ("js", "chi2", "unseen")
DEFAULTS = DriftConfig()


def config() -> DriftConfig:
    return DriftConfig(bucket_ms=BUCKET, reference_events=WARMUP, reference_outcomes=1000,
                       numeric_detectors=NUM_DETECTORS, categorical_detectors=CAT_DETECTORS)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- streams
def prediction_stream(n: int, rng: np.random.Generator, change: str | None = None, at: int = C) -> dict:
    """Columns of a synthetic prediction stream, ``change`` injected from event ``at`` on."""
    post = np.arange(n) >= at if change else np.zeros(n, bool)
    x = rng.normal(size=n)
    if change == "mean+0.5sd":
        x[post] += 0.5
    elif change == "mean+1sd":
        x[post] += 1.0
    elif change == "variance x1.5":
        x[post] *= 1.5
    cat = CATS[rng.choice(8, n, p=CAT_P)]
    if change == "new category 5%":
        cat[post & (rng.random(n) < 0.05)] = "NEW"
    conf = rng.beta(5.0, 2.0, n)
    if change == "confidence -0.5sd":
        conf[post] = rng.beta(3.5, 2.0, int(post.sum()))
    label = np.where(rng.random(n) < 0.1, "fraud", "legit").astype(object)
    return {"x": x, "cat": cat, "confidence": conf, "label": label}


def columns(d: dict, lo: int, hi: int) -> Columns:
    t = np.arange(lo, hi)
    return Columns(t, np.array([f"e{i}" for i in range(lo, hi)], dtype=object),
                   {"n:x": d["x"][lo:hi], "c:cat": d["cat"][lo:hi], "confidence": d["confidence"][lo:hi],
                    "label": d["label"][lo:hi]})


def correction_stream(n: int, rng: np.random.Generator, change: bool,
                      share: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(event index, error bit) of the outcomes: ``share`` of events corrected, error 10% → 20% at C."""
    idx = np.flatnonzero(rng.random(n) < share)
    p = np.where(change & (idx >= C), 0.2, 0.1)
    return idx, (rng.random(len(idx)) < p).astype(np.float64)


def river_error_stream(name: str, seed: int, n: int) -> np.ndarray:
    """Error bits of a frozen Hoeffding tree on a River generator with an abrupt concept change at C."""
    from river import tree
    from river.datasets import synth

    def gen(variant):
        if name == "SEA":
            return synth.SEA(variant=variant, seed=seed)
        if name == "Agrawal":
            return synth.Agrawal(classification_function=variant, seed=seed)
        return synth.Hyperplane(seed=seed + 1000 * variant, n_features=10)

    pairs = {"SEA": (0, 3), "Agrawal": (0, 2), "Hyperplane": (0, 1)}[name]
    stream = synth.ConceptDriftStream(stream=gen(pairs[0]), drift_stream=gen(pairs[1]), position=C + 3000,
                                      width=200, seed=seed)  # width >= 4*position/709 or River overflows
    model = tree.HoeffdingTreeClassifier(grace_period=100)
    errors = np.empty(n)
    for i, (x, y) in enumerate(stream.take(n + 3000)):
        if i < 3000:
            model.learn_one(x, y)
        else:
            errors[i - 3000] = model.predict_one(x) != y
    return errors


# ---------------------------------------------------------------- detectors
def run_ours_predictions(d: dict, n: int, batch: int = 2000) -> list[dict]:
    m = DriftMonitor("bench", config())
    events = []
    for lo in range(0, n, batch):
        events += m.update_columns("v1", columns(d, lo, min(lo + batch, n)))
    events += m.advance(n + BUCKET)
    return events


def run_ours_errors(idx: np.ndarray, err: np.ndarray, n: int, batch: int = 2000) -> list[dict]:
    m = DriftMonitor("bench", config())
    events = []
    ids = np.array([f"o{i}" for i in idx], dtype=object)
    bounds = np.searchsorted(idx, np.arange(0, n + batch, batch))
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            out = Columns(idx[a:b], ids[a:b], {"error": err[a:b]})
            events += m.update_columns("v1", None, out)
    events += m.advance(n + BUCKET)
    return events


def ours_alarms(events: list[dict], signal: str, default_detectors: tuple[str, ...]) -> dict[str, list[int]]:
    """Start times per detector, plus 'ours:signal' (signal-level: any default detector active)."""
    out: dict[str, list[int]] = defaultdict(list)
    active: set[str] = set()
    for e in events:
        if e["signal"] != signal:
            continue
        det = e["detector"]
        if e["state"] == "started":
            out["ours:" + det].append(e["detected_at"])
            if det in default_detectors:
                if not active:
                    out["ours (signal verdict)"].append(e["detected_at"])
                active.add(det)
        elif e["state"] == "resolved":
            active.discard(det)
    return out


def river_alarms(values: np.ndarray, index: np.ndarray | None = None, which=("ADWIN", "PageHinkley"),
                 start: int = 0, up_only: bool = False) -> dict[str, list[int]]:
    """Detection indexes of River detectors fed one value at a time (from ``values[start:]``)."""
    from river import drift

    makers = {"ADWIN": lambda: drift.ADWIN(),
              "PageHinkley": lambda: drift.PageHinkley(mode="up" if up_only else "both"),
              "KSWIN": lambda: drift.KSWIN(seed=1),
              "DDM": lambda: drift.binary.DDM()}
    out = {}
    idx = np.arange(len(values)) if index is None else index
    vals = values[start:].tolist()
    pos = idx[start:].tolist()
    for name in which:
        det = makers[name]()
        hits = []
        for i, v in zip(pos, vals):
            det.update(v)
            if det.drift_detected:
                hits.append(i)
        out["River " + name] = hits
    return out


def fixed_psi_alarms(values: np.ndarray, index: np.ndarray | None, kind: str, window: int = 2000,
                     threshold: float = 0.2) -> dict[str, list[int]]:
    """Tumbling-window PSI against the first WARMUP values, alarm (start) when it first exceeds 0.2."""
    idx = np.arange(len(values)) if index is None else index
    nref = int(np.searchsorted(idx, WARMUP))
    ref_vals = values[:nref]
    if kind == "numeric" and len(np.unique(ref_vals)) > 2:
        edges = np.unique(np.quantile(ref_vals, np.linspace(0, 1, 11))[1:-1])
        code = lambda v: np.searchsorted(edges, v, side="right")  # noqa: E731
        k = len(edges) + 1
    else:
        cats = {c: i for i, c in enumerate(sorted(set(ref_vals.tolist())))}
        code = lambda v: np.array([cats.get(c, len(cats)) for c in v.tolist()])  # noqa: E731
        k = len(cats) + 1
    ref = np.bincount(code(ref_vals), minlength=k)
    hits, above = [], False
    for lo in range(nref, len(values) - window + 1, window):
        w = np.bincount(code(values[lo:lo + window]), minlength=k)
        score = float(psi(w, ref))
        if score > threshold and not above:
            hits.append(int(idx[lo + window - 1]))
        above = score > threshold
    return {"PSI>0.2 fixed": hits}


# ---------------------------------------------------------------- scoring
class Tally:
    """Delays and false alarms per (scenario, detector)."""

    def __init__(self) -> None:
        self.delays: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.fa: dict[tuple[str, str], int] = defaultdict(int)
        self.fa_events: dict[tuple[str, str], float] = defaultdict(float)

    def change(self, scenario: str, alarms: dict[str, list[int]], change: int = C,
               pre_events: float | None = None) -> None:
        pre = (change - WARMUP) if pre_events is None else pre_events
        for det, hits in alarms.items():
            h = np.asarray(hits)
            after = h[(h >= change) & (h < change + HORIZON)]
            self.delays[(scenario, det)].append(float(after[0] - change) if len(after) else np.inf)
            group = _group(scenario)
            self.fa[(group, det)] += int(np.sum((h >= WARMUP) & (h < change)))
            self.fa_events[(group, det)] += pre

    def stationary(self, group: str, alarms: dict[str, list[int]], events: float, start: int = WARMUP) -> None:
        for det, hits in alarms.items():
            h = np.asarray(hits)
            self.fa[(group, det)] += int(np.sum(h >= start))
            self.fa_events[(group, det)] += events


def _group(scenario: str) -> str:
    if scenario.startswith(("mean", "variance")):
        return "x"
    if scenario.startswith("confidence"):
        return "confidence"
    if scenario.startswith("new category"):
        return "cat"
    return "errors"


def table(t: Tally) -> str:
    rows = [("scenario", "detector", "<=2000", "missed", "median", "p90", "FA/100k")]
    for (scen, det), d in t.delays.items():
        d = np.asarray(d)
        found = d[np.isfinite(d)]
        g = (_group(scen), det)
        fa = t.fa[g] / t.fa_events[g] * 1e5 if t.fa_events[g] else float("nan")
        rows.append((scen, det, f"{int(np.sum(d <= 2000))}/{len(d)}", str(int(np.sum(~np.isfinite(d)))),
                     f"{np.median(found):.0f}" if len(found) else "-",
                     f"{np.quantile(found, 0.9):.0f}" if len(found) else "-", f"{fa:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    last = None
    for r in rows:
        if last is not None and r[0] != last and r[0] != "scenario":
            lines.append("")
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        last = r[0]
    return "\n".join(lines)


# ---------------------------------------------------------------- cost
def cost(n: int = 200_000, features: int = 10, cats: int = 3) -> str:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    fields = {f"n:f{j}": rng.normal(size=n) for j in range(features)}
    fields.update({f"c:c{j}": CATS[rng.choice(8, n, p=CAT_P)] for j in range(cats)})
    cols = Columns(t, np.array([f"e{i}" for i in range(n)], dtype=object), fields)
    prof = build_profile(cols.first(5000), "m", "v", BUCKET)
    num = Columns(t, cols.ids, {k: v for k, v in fields.items() if k.startswith("n:")})
    cat = Columns(t, cols.ids, {k: v for k, v in fields.items() if k.startswith("c:")})

    def best(fn, repeat=3):
        out = []
        for _ in range(repeat):
            s = time.perf_counter()
            fn()
            out.append(time.perf_counter() - s)
        return min(out)

    tn = best(lambda: count_buckets(prof, num, BUCKET))
    tc = best(lambda: count_buckets(prof, cat, BUCKET))
    m = DriftMonitor("m", DriftConfig(bucket_ms=BUCKET))
    m.update_columns("v", cols.take(np.arange(20_000)))
    rest = cols.take(np.arange(20_000, n))
    s = time.perf_counter()
    m.update_columns("v", rest)
    tall = time.perf_counter() - s
    sig = features + cats
    from loopline.processors.testing import make_events

    evs = make_events(30_000, start_ms=0)
    md = DriftMonitor("fraud", DriftConfig(bucket_ms=BUCKET))
    md.update(evs[:10_000])
    s = time.perf_counter()
    md.update(evs[10_000:])
    tdict = (time.perf_counter() - s) / 20_000
    return (f"batch update (bin + bincount, {n:,} events): numeric {tn / n / features * 1e6:.3f} µs/event/feature, "
            f"categorical {tc / n / cats * 1e6:.3f} µs/event/feature\n"
            f"monitor end to end (count + merge + evaluate every {BUCKET}-event bucket, {sig} signals, default "
            f"detectors): {tall / len(rest) / sig * 1e6:.3f} µs/event/signal\n"
            f"from decoded PredictionEvent dicts (12 numeric + 3 categorical + confidence + class, frames built "
            f"from the dicts): {tdict * 1e6:.1f} µs/event")


# ---------------------------------------------------------------- main
def main(argv=None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and a shorter stationary stream")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 10)
    stationary = 300_000 if args.quick else 1_500_000
    kswin_reps, kswin_stationary = (1, 20_000) if args.quick else (2, 60_000)
    river_reps = 2 if args.quick else 4
    n = C + HORIZON
    t = Tally()
    seeds = np.random.SeedSequence(args.seed)
    started = time.perf_counter()
    num_defaults = tuple(d for d in DEFAULTS.numeric_detectors)
    cat_defaults = tuple(d for d in DEFAULTS.categorical_detectors)

    log(f"stationary prediction stream: {stationary:,} events")
    rng = np.random.default_rng(seeds.spawn(1)[0])
    d = prediction_stream(stationary, rng)
    ev = run_ours_predictions(d, stationary)
    mon = stationary - WARMUP
    t.stationary("x", ours_alarms(ev, "x", num_defaults), mon)
    t.stationary("confidence", ours_alarms(ev, "confidence", num_defaults), mon)
    t.stationary("cat", ours_alarms(ev, "cat", cat_defaults), mon)
    log("  River ADWIN / Page-Hinkley on raw x and confidence; fixed PSI")
    for sig in ("x", "confidence"):
        t.stationary(sig, river_alarms(d[sig], start=0), mon)
        t.stationary(sig, fixed_psi_alarms(d[sig], None, "numeric"), mon)
        t.stationary(sig, river_alarms(d[sig][:kswin_stationary], which=("KSWIN",)), kswin_stationary - WARMUP)
    t.stationary("cat", fixed_psi_alarms(d["cat"], None, "categorical"), mon)

    log(f"stationary error stream: {stationary:,} outcomes at 10% errors")
    err = (rng.random(stationary) < 0.1).astype(np.float64)
    idx = np.arange(stationary)
    ev = run_ours_errors(idx, err, stationary)
    alarms = ours_alarms(ev, "error", ("binomial_cusum",))
    alarms.pop("ours (signal verdict)", None)
    alarms.setdefault("ours:binomial_cusum", [])
    t.stationary("errors", alarms, mon)
    t.stationary("errors", river_alarms(err, which=("ADWIN", "PageHinkley", "DDM"), up_only=True), mon)
    t.stationary("errors", fixed_psi_alarms(err, None, "numeric_binary"), mon)

    scenarios = ["mean+0.5sd", "mean+1sd", "variance x1.5", "confidence -0.5sd", "new category 5%"]
    for scen in scenarios:
        log(f"{scen}: {reps} streams of {n:,} events, change at {C:,}")
        for r in range(reps):
            rng = np.random.default_rng(seeds.spawn(1)[0])
            d = prediction_stream(n, rng, scen)
            ev = run_ours_predictions(d, n)
            sig = _group(scen)
            defaults = cat_defaults if sig == "cat" else num_defaults
            alarms = ours_alarms(ev, sig, defaults)
            for det in (CAT_DETECTORS if sig == "cat" else NUM_DETECTORS):
                alarms.setdefault("ours:" + det, [])
            alarms.setdefault("ours (signal verdict)", [])
            if sig == "cat":
                alarms.update(fixed_psi_alarms(d["cat"], None, "categorical"))
            else:
                alarms.update(river_alarms(d[sig]))
                alarms.update(fixed_psi_alarms(d[sig], None, "numeric"))
                if r < kswin_reps:
                    k0 = C - 3000
                    ks = river_alarms(d[sig], which=("KSWIN",), start=k0)
                    t.change(scen, ks, pre_events=C - k0)
            t.change(scen, alarms)

    log(f"corrections-only concept drift: {reps} streams, 25% of predictions corrected, errors 10% -> 20% at {C:,}")
    for r in range(reps):
        rng = np.random.default_rng(seeds.spawn(1)[0])
        idx, err = correction_stream(n, rng, True)
        alarms = ours_alarms(run_ours_errors(idx, err, n), "error", ("binomial_cusum",))
        alarms.setdefault("ours:binomial_cusum", [])
        alarms.update(river_alarms(err, idx, which=("ADWIN", "PageHinkley", "DDM"), up_only=True))
        alarms.update(fixed_psi_alarms(err, idx, "numeric_binary"))
        alarms.pop("ours (signal verdict)", None)
        t.change("corrections 10%->20% errors", alarms, pre_events=np.sum((idx >= WARMUP) & (idx < C)))

    for gen in ("SEA", "Agrawal", "Hyperplane"):
        log(f"River {gen} + ConceptDriftStream (frozen Hoeffding tree, error stream): {river_reps} streams")
        for r in range(river_reps):
            err = river_error_stream(gen, args.seed * 100 + r, n)
            idx = np.arange(n)
            alarms = ours_alarms(run_ours_errors(idx, err, n), "error", ("binomial_cusum",))
            alarms.setdefault("ours:binomial_cusum", [])
            alarms.update(river_alarms(err, which=("ADWIN", "PageHinkley", "DDM"), up_only=True))
            alarms.update(fixed_psi_alarms(err, None, "numeric_binary"))
            pre, post = err[WARMUP:C].mean(), err[C:].mean()
            alarms.pop("ours (signal verdict)", None)
            t.change(f"{gen} (concept change)", alarms)
            log(f"  {gen} rep {r}: error rate {pre:.1%} before, {post:.1%} after the change")

    log("cost")
    cost_text = cost(50_000 if args.quick else 200_000)
    legend = ("delays in events after the change (bucketed detectors report at the end of a 250-event bucket); "
              "FA/100k: numeric/categorical detectors per 100k stationary events of that signal, error "
              "detectors per 100k outcomes")
    out = legend + "\n\n" + table(t) + "\n\n" + cost_text + f"\n\ntotal {time.perf_counter() - started:.0f} s"
    print()
    print(out)
    return out


if __name__ == "__main__":
    main()
