"""Per-tier statistics: equal to an offline reference, mergeable, bounded, unbiased auto-tier error."""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from loopline.processors.errors import ConfigError
from loopline.processors.stats.latency import LogBuckets
from loopline.processors.stats.summary import wilson
from loopline.processors.stats.tier_stats import TierStats

T0 = 1_800_000_000_000 - (1_800_000_000_000 % 3_600_000)  # on an hour boundary
TIERS = ("auto", "review", "escalate")
POSITIVE = {"fraud": "fraud", "churn": "leaves"}
LABELS = {"fraud": ("fraud", "legit"), "churn": ("leaves", "stays", "unknown")}


def make_rows(n: int = 20_000, seed: int = 5, span_ms: int = 3 * 3_600_000 + 17 * 60_000):
    """Decisions and joined outcomes of two models, sorted by event time."""
    rng = np.random.default_rng(seed)
    decisions, outcomes = [], []
    times = np.sort(rng.integers(T0, T0 + span_ms, n))
    for i, t in enumerate(times.tolist()):
        model = "fraud" if rng.random() < 0.7 else "churn"
        labels = LABELS[model]
        tier = TIERS[int(rng.choice(3, p=[0.8, 0.15, 0.05]))]
        conf = float(rng.uniform(0.5, 1.0)) if tier == "auto" else float(rng.uniform(0.0, 1.0))
        label = labels[int(rng.integers(len(labels)))]
        if tier == "auto":
            prop = (0.0, 0.02, 0.1, 0.05)[int(rng.choice(4, p=[0.05, 0.6, 0.3, 0.05]))]
            audited = bool(rng.random() < prop)
        else:
            prop, audited = 1.0, False
        decisions.append(dict(model=model, tier=tier, conf=conf, label=label, prop=prop, audited=audited, t=t))
        if tier != "auto" or audited:
            for _ in range(1 + (rng.random() < 0.1)):  # some events answered twice
                corr = None if rng.random() < 0.05 else (label if rng.random() < 0.8 else labels[
                    int(rng.integers(len(labels)))])
                lat = float(rng.lognormal(5, 1.5)) if rng.random() < 0.97 else math.nan
                rt = t + int(rng.integers(1_000, 90_000))
                outcomes.append(dict(model=model, tier=tier, pred=label, corr=corr, pos=POSITIVE[model], prop=prop,
                                     audited=audited, lat=lat, sla=bool(lat > 1800) if lat == lat else False, t=rt))
    outcomes.sort(key=lambda o: o["t"])
    return decisions, outcomes


def feed(stats: TierStats, decisions, outcomes, batch_ms: int = 20_000):
    """Feed rows in event-time order, in batches spanning at most ``batch_ms``."""
    stream = [("d", d["t"], d) for d in decisions] + [("o", o["t"], o) for o in outcomes]
    stream.sort(key=lambda x: (x[1], x[0]))
    start = 0
    while start < len(stream):
        end = start
        while end < len(stream) and stream[end][1] - stream[start][1] < batch_ms:
            end += 1
        ds = [r for kind, _, r in stream[start:end] if kind == "d"]
        os_ = [r for kind, _, r in stream[start:end] if kind == "o"]
        if ds:
            stats.update_decisions([d["model"] for d in ds], [d["tier"] for d in ds], [d["conf"] for d in ds],
                                   [d["label"] for d in ds], [d["prop"] for d in ds], [d["audited"] for d in ds],
                                   [d["t"] for d in ds])
        if os_:
            stats.update_outcomes([o["model"] for o in os_], [o["tier"] for o in os_], [o["pred"] for o in os_],
                                  [o["corr"] for o in os_], [o["pos"] for o in os_], [o["prop"] for o in os_],
                                  [o["audited"] for o in os_], [o["lat"] for o in os_], [o["sla"] for o in os_],
                                  [o["t"] for o in os_])
        start = end
    return stats


def reference(decisions, outcomes, all_time: bool) -> dict:
    """The statistics computed the slow, obvious way."""
    ref: dict = defaultdict(lambda: defaultdict(float))
    hist: dict = defaultdict(lambda: [0] * 20)
    classes: dict = defaultdict(Counter)
    lats: dict = defaultdict(list)
    ipw: dict = defaultdict(list)
    model_events: Counter = Counter()
    for d in decisions:
        k = (d["model"], d["tier"])
        r = ref[k]
        r["events"] += 1
        r["audited"] += d["audited"]
        r["sampled"] += d["tier"] == "auto" and d["prop"] > 0
        r["conf_sum"] += d["conf"]
        r["prop_sum"] += d["prop"]
        hist[k][min(int(d["conf"] * 20), 19)] += 1
        classes[k][d["label"]] += 1
        model_events[d["model"]] += 1
    for o in outcomes:
        k = (o["model"], o["tier"])
        r = ref[k]
        w = 1 / o["prop"] if o["prop"] > 0 else 0.0
        r["corrections"] += 1
        r["sla"] += o["sla"]
        r["zero_prop"] += not o["prop"] > 0
        if o["lat"] == o["lat"]:
            lats[k].append(o["lat"])
        if o["corr"] is None:
            continue
        r["answered"] += 1
        r["agree"] += o["corr"] == o["pred"]
        pp, ap = o["pred"] == o["pos"], o["corr"] == o["pos"]
        cell = "tp" if pp and ap else "fp" if pp else "fn" if ap else "tn"
        r[cell] += 1
        r["w_" + cell] += w
        if o["tier"] == "auto" and o["audited"] and o["prop"] > 0:
            ipw[k].append((w, float(o["corr"] != o["pred"])))
    out = {}
    for k, r in ref.items():
        def rate(a, b):
            return a / b if b else None

        e = {"events": int(r["events"]), "routed_share": rate(r["events"], model_events[k[0]]),
             "audited": int(r["audited"]), "mean_confidence": rate(r["conf_sum"], r["events"]),
             "confidence_histogram": hist[k], "classes": dict(classes[k]),
             "corrections": int(r["corrections"]), "answered": int(r["answered"]),
             "agreement_rate": rate(r["agree"], r["answered"]),
             "override_rate": rate(r["answered"] - r["agree"], r["answered"]),
             "confusion": {c: int(r[c]) for c in ("tp", "fp", "fn", "tn")},
             "precision": rate(r["w_tp"], r["w_tp"] + r["w_fp"]), "recall": rate(r["w_tp"], r["w_tp"] + r["w_fn"]),
             "false_positive_rate": rate(r["w_fp"], r["w_fp"] + r["w_tn"]),
             "sla_breaches": int(r["sla"]), "sla_breach_rate": rate(r["sla"], r["corrections"]),
             "zero_propensity": int(r["zero_prop"]), "latencies": lats[k]}
        if k[1] == "auto":
            e["expected_audited"] = r["prop_sum"]
            rows = ipw[k]
            if rows:
                W = sum(w for w, _ in rows)
                p = sum(w * y for w, y in rows) / W
                var = sum(w * w * (y - p) ** 2 for w, y in rows) / W ** 2
                n_eff = W ** 2 / sum(w * w for w, _ in rows)
                e["ipw"] = {"audited_outcomes": len(rows), "errors": int(sum(y for _, y in rows)), "estimate": p,
                            "ci95": list(wilson(p, n_eff)), "std_error": math.sqrt(var), "effective_n": n_eff}
                if all_time:
                    e["ipw"]["ht_estimate"] = sum(w * y for w, y in rows) / r["sampled"]
            else:
                e["ipw"] = {"audited_outcomes": 0, "estimate": None}
        out[k] = e
    return out


def close(a, b, tol=1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tol * max(1.0, abs(b))


def check_against_reference(models: dict, ref: dict, buckets: LogBuckets) -> None:
    got_keys = {(m, t) for m, block in models.items() for t in block["tiers"]}
    assert got_keys == set(ref)
    for (m, t), r in ref.items():
        g = models[m]["tiers"][t]
        o = g["outcomes"]
        for name in ("events", "audited", "confidence_histogram", "classes"):
            assert g[name] == r[name], (m, t, name)
        for name in ("corrections", "answered", "confusion", "sla_breaches", "zero_propensity"):
            assert o[name] == r[name], (m, t, name)
        assert o["unlabelled"] == r["corrections"] - r["answered"]
        for name in ("routed_share", "mean_confidence"):
            assert close(g[name], r[name]), (m, t, name)
        for name in ("agreement_rate", "override_rate", "precision", "recall", "false_positive_rate",
                     "sla_breach_rate"):
            assert close(o[name], r[name]), (m, t, name, o[name], r[name])
        lat = o["review_latency_seconds"]
        assert lat["count"] == len(r["latencies"])
        if r["latencies"]:
            x = np.array(r["latencies"])
            assert close(lat["mean"], float(np.mean(x)), 1e-9)
            for q, key in ((0.5, "p50"), (0.95, "p95")):
                exact = float(np.quantile(x, q, method="inverted_cdf"))
                assert abs(lat[key] - exact) <= buckets.alpha * exact * (1 + 1e-9) + 1e-12, (m, t, key)
        if t == "auto":
            assert close(g["expected_audited"], r["expected_audited"])
            ip, rp = g["error_rate_ipw"], r["ipw"]
            assert ip["audited_outcomes"] == rp["audited_outcomes"]
            if rp["estimate"] is None:
                assert ip["estimate"] is None
                continue
            assert ip["errors"] == rp["errors"]
            for name in ("estimate", "std_error", "effective_n"):
                assert close(ip[name], rp[name]), (m, name)
            assert all(close(a, b) for a, b in zip(ip["ci95"], rp["ci95"]))
            if "ht_estimate" in rp:
                assert close(ip["ht_estimate"], rp["ht_estimate"])


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def whole(rows):
    return feed(TierStats(), *rows)


def test_all_time_equals_offline_reference(rows, whole):
    decisions, outcomes = rows
    snap = whole.snapshot()
    check_against_reference(snap["all_time"], reference(decisions, outcomes, True), whole.latency)
    json.dumps(snap)  # JSON-able


@pytest.mark.parametrize("name,length", [("1m", 60_000), ("1h", 3_600_000)])
def test_windows_equal_offline_reference(rows, whole, name, length):
    decisions, outcomes = rows
    top = max(r["t"] for r in decisions + outcomes) // length
    block = whole.snapshot()["windows"][name]
    assert block["late_decisions"] == block["late_outcomes"] == 0
    for which, index in (("current", top), ("previous", top - 1)):
        w = block[which]
        assert (w["start_ms"], w["end_ms"]) == (index * length, (index + 1) * length)
        ref = reference([d for d in decisions if d["t"] // length == index],
                        [o for o in outcomes if o["t"] // length == index], False)
        assert ref, "the test data must reach into both windows"
        check_against_reference(w["models"], ref, whole.latency)


def assert_same(a, b, path="") -> None:
    """Snapshots equal: ints and strings exactly, floats within 1e-9."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert close(a, b), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_two_halves_merged_equal_the_whole(rows, whole):
    decisions, outcomes = rows
    halves = [TierStats(), TierStats()]
    for part, stats in enumerate(halves):  # like two partitions: each worker sees every other event
        feed(stats, decisions[part::2], outcomes[part::2])
    before = halves[1].to_state()
    merged = TierStats.merged(halves)
    assert_same(merged.snapshot(), whole.snapshot())
    assert halves[1].to_state() == before  # merging does not change its inputs
    assert_same(TierStats().merge(halves[1]).merge(halves[0]).snapshot(), whole.snapshot())  # order-free


def test_split_in_time_merged_equal_the_whole(rows, whole):
    decisions, outcomes = rows
    cut = decisions[len(decisions) // 2]["t"]
    first = feed(TierStats(), [d for d in decisions if d["t"] < cut], [o for o in outcomes if o["t"] < cut])
    second = feed(TierStats(), [d for d in decisions if d["t"] >= cut], [o for o in outcomes if o["t"] >= cut])
    assert_same(first.merge(second).snapshot(), whole.snapshot())


def test_state_round_trip_is_exact(whole):
    state = json.loads(json.dumps(whole.to_state()))
    again = TierStats.from_state(state)
    assert again.snapshot() == whole.snapshot()
    assert again.to_state() == whole.to_state()


def test_merge_refuses_different_layouts():
    with pytest.raises(ConfigError):
        TierStats().merge(TierStats(conf_bins=10))


def test_memory_is_bounded_by_the_windows():
    stats = TierStats()
    rng = np.random.default_rng(1)
    sizes = []
    for minute in range(1, 3001):  # 50 hours of minutes
        n = 50
        t = T0 + minute * 60_000 + rng.integers(0, 60_000, n)
        stats.update_decisions("fraud", rng.choice(TIERS, n).tolist(), rng.uniform(0, 1, n),
                               rng.choice(["fraud", "legit"], n).tolist(), np.full(n, 0.02), rng.random(n) < 0.1, t)
        stats.update_outcomes("fraud", rng.choice(TIERS, 10).tolist(), ["fraud"] * 10,
                              rng.choice(["fraud", "legit"], 10).tolist(), "fraud", np.full(10, 0.02),
                              np.ones(10, bool), rng.lognormal(4, 2, 10), np.zeros(10, bool), t[:10])
        if minute in (200, 3000):
            sizes.append(stats.nbytes())
    cells = [len(w.cells) for g in stats._grans.values() for w in (g.current, g.previous)]
    assert len(cells) == 4 and max(cells) <= 3
    assert sizes[0] == sizes[1] < 200_000, sizes


def test_labels_and_models_are_bounded():
    stats = TierStats(max_classes=3, max_models=2)
    for i in range(10):
        stats.update_decisions(f"m{i}", "auto", [0.9, 0.9], [f"l{i}", f"k{i}"], [0.1, 0.1], [False, False], [T0, T0])
    snap = stats.snapshot()["all_time"]
    assert set(snap) == {"m0", "m1", "__other__"}
    assert snap["__other__"]["tiers"]["auto"]["classes"] == {"__other__": 13, "l2": 1, "k2": 1, "l3": 1}


def test_late_records_count_only_all_time():
    stats = TierStats()
    stats.update_decisions("m", "review", [0.5], ["a"], [1.0], [False], [T0 + 10 * 60_000])
    stats.update_decisions("m", "review", [0.5, 0.5], ["a", "a"], [1.0, 1.0], [False, False],
                           [T0 + 9 * 60_000 + 5, T0 + 60_000])  # previous window, too old
    snap = stats.snapshot()
    one = snap["windows"]["1m"]
    assert one["late_decisions"] == 1
    assert one["current"]["models"]["m"]["events"] == 1 and one["previous"]["models"]["m"]["events"] == 1
    assert snap["windows"]["1h"]["current"]["models"]["m"]["events"] == 3
    assert snap["all_time"]["m"]["events"] == 3
    stats.update_decisions("m", "review", [0.5], ["a"], [1.0], [False], [T0 + 30 * 60_000])  # a gap
    one = stats.snapshot()["windows"]["1m"]
    assert one["previous"]["models"] == {} and one["current"]["models"]["m"]["events"] == 1


def test_ipw_error_rate_is_unbiased_where_the_audited_rate_is_not():
    """Oversampled low-confidence events err more; weighting by 1/propensity removes that bias."""
    rng = np.random.default_rng(2)
    n = 400_000
    conf = rng.uniform(0.9, 1.0, n)
    wrong = rng.random(n) < (1 - conf) * 2  # true error rate 10%
    prop = np.where(conf < 0.95, 0.10, 0.02)
    audited = rng.random(n) < prop
    stats = TierStats()
    labels = np.where(wrong, "fraud", "legit")
    stats.update_decisions("m", "auto", conf, ["legit"] * n, prop, audited, np.full(n, T0))
    k = int(audited.sum())
    stats.update_outcomes("m", "auto", ["legit"] * k, labels[audited].tolist(), "fraud", prop[audited],
                          np.ones(k, bool), np.full(k, 60.0), np.zeros(k, bool), np.full(k, T0))
    est = stats.snapshot()["all_time"]["m"]["tiers"]["auto"]["error_rate_ipw"]
    truth = wrong.mean()
    naive = wrong[audited].mean()
    assert est["ci95"][0] <= truth <= est["ci95"][1]
    assert abs(est["estimate"] - truth) < 0.004 < abs(naive - truth)
    assert abs(est["ht_estimate"] - truth) < 0.004


def test_ipw_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(4)
    covered = 0
    runs = 300
    for _ in range(runs):
        n = 20_000
        conf = rng.uniform(0.9, 1.0, n)
        wrong = rng.random(n) < (1 - conf) * 2
        prop = np.where(conf < 0.95, 0.10, 0.02)
        audited = rng.random(n) < prop
        k = int(audited.sum())
        stats = TierStats(windows={})
        stats.update_decisions("m", "auto", conf, ["legit"] * n, prop, audited, np.full(n, T0))
        stats.update_outcomes("m", "auto", ["legit"] * k, np.where(wrong[audited], "fraud", "legit").tolist(),
                              "fraud", prop[audited], np.ones(k, bool), np.full(k, 1.0), np.zeros(k, bool),
                              np.full(k, T0))
        lo, hi = stats.snapshot()["all_time"]["m"]["tiers"]["auto"]["error_rate_ipw"]["ci95"]
        covered += lo <= wrong.mean() <= hi
    assert 0.90 <= covered / runs <= 0.99


def test_latency_quantiles_within_the_documented_bound():
    lb = LogBuckets()
    rng = np.random.default_rng(9)
    x = rng.lognormal(3, 2.5, 50_000)
    x = x[(x > lb.min_value) & (x <= lb.max_value)]
    counts = lb.counts(x)
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
        exact = float(np.quantile(x, q, method="inverted_cdf"))
        assert abs(lb.quantile(counts, q) - exact) <= lb.alpha * exact * (1 + 1e-9)
    assert lb.quantile(np.zeros(lb.size, np.int64), 0.5) is None
    assert lb.quantile(lb.counts(np.array([0.0, 1e9])), 1.0) == lb.max_value


def test_frame_and_training_example_adapters():
    from loopline.processors.policy.policy import Policy
    from loopline.processors.testing import make_events
    from loopline.processors.wire.frame import frames_from_events

    evs = make_events(500, start_ms=T0)
    (frame,) = frames_from_events(evs)
    policy = Policy.from_toml('version = "p"\n[models.fraud]\npositive_label = "fraud"\n'
                              '[models.fraud.tiers.auto]\naudit_rate = 0.1\n')
    d = policy.decide_frame(frame, T0)
    stats = TierStats()
    stats.update_routed(frame, d)
    tiers = stats.snapshot()["all_time"]["fraud"]["tiers"]
    assert sum(t["events"] for t in tiers.values()) == 500
    assert tiers["auto"]["audited"] == int(d.audited.sum())
    examples = [{"model_name": "fraud", "tier": "review", "audit": True, "sampling_propensity": 0.1,
                 "label": "fraud", "task_created_at": T0, "reviewed_at": T0 + 90_000,
                 "prediction": {"predicted_label": "legit"}},
                {"model_name": "fraud", "tier": "escalate", "audit": False, "sampling_propensity": 1.0,
                 "label": None, "task_created_at": T0, "reviewed_at": T0 + 30_000,
                 "prediction": {"predicted_label": "fraud"}}]
    stats.update_examples(examples, lambda m: policy.model(m).positive_label, lambda m, t: 60_000)
    tiers = stats.snapshot()["all_time"]["fraud"]["tiers"]
    auto = tiers["auto"]["outcomes"]
    assert auto["corrections"] == 1 and auto["sla_breaches"] == 1 and auto["confusion"]["fn"] == 1
    assert tiers["auto"]["error_rate_ipw"]["estimate"] == 1.0
    assert tiers["escalate"]["outcomes"]["unlabelled"] == 1 and tiers["escalate"]["outcomes"]["sla_breaches"] == 0
