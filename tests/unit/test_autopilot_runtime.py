"""The worker-side runtime without a broker: real PolicyHolder, real registry, hooks, overlay, logged evidence."""
from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
from prometheus_client import CollectorRegistry

from loopline.connectors.cli.policy_status import plot_reliability, policy_status
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.policy.quality_options import AutopilotSpec, SliceSpec
from loopline.processors.routing.router import Routed, RouteResult
from loopline.processors.testing import make_events
from loopline.processors.wire.frame import frames_from_events
from loopline.streams.quality import CalibrationRuntime, drift_reader

T0 = 1_735_689_600_000
POLICY = """
version = "p1"
[models.fraud.tiers.auto]
min_confidence = 0.95
audit_rate = 0.5
"""
SPEC = AutopilotSpec(error_budget=0.01, min_verified=300, max_step=0.02, min_slice_verified=300)


def traffic(holder: PolicyHolder, n: int = 6000, seed: int = 3):
    """Route ``n`` events through the holder; answer every human task (audits at propensity 0.5)."""
    rng = np.random.default_rng(seed)
    evs = make_events(n, seed=seed, start_ms=T0)
    for e in evs:
        e["context"] = {"country": str(rng.choice(["DE", "FR"])), "channel": "web"}
    frames = frames_from_events(evs)
    routed, examples = [], []
    for frame in frames:
        d = holder.decide_frame(frame, now_ms=T0)
        routed.append(Routed(frame, d, 0))
        for i in np.flatnonzero(d.needs_human()).tolist():
            e = frame.row(i)
            ok = rng.random() < (0.999 if e["confidence"] >= 0.8 else 0.9)
            label = e["predicted_label"] if ok else ("fraud" if e["predicted_label"] == "legit" else "legit")
            audit = bool(d.audited[i])
            examples.append({"event_id": e["event_id"], "model_name": "fraud", "model_version": "v1",
                             "label": label, "effective_label": label, "tier": "auto" if audit else "review",
                             "audit": audit, "sampling_propensity": float(d.propensity[i]),
                             "reason": d.reasons[int(d.reason_codes[i])], "reviewed_at": T0 + 100,
                             "task_created_at": T0, "prediction": e})
    return RouteResult(outputs=[], routed=routed), examples


def runtime(holder, registry, **kw):
    return CalibrationRuntime(holder, registry, autopilot_specs={"fraud": kw.pop("spec", SPEC)},
                              slice_specs={"fraud": (SliceSpec("country", "context", top_k=5),)}, **kw)


def test_examples_move_the_threshold_through_a_logged_overlay(tmp_path):
    holder = PolicyHolder(Policy.from_toml(POLICY))
    registry = CollectorRegistry()
    rt = runtime(holder, registry)
    result, examples = traffic(holder)
    rt.on_route(result)
    rt.on_examples(examples)
    rt.on_examples(examples[:50])  # a second answer for the same events counts once
    assert int(rt.tracker.cell("fraud").n.sum()) == len(examples)
    logged = []

    async def log_change(change):
        logged.append(change)

    adjs = asyncio.run(rt.tick(log_change, now_ms=T0 + 1000, force=True))
    assert [a.action for a in adjs] == ["loosen"] and adjs[0].new_threshold == 0.93
    assert holder.policy.model("fraud").min_confidence == 0.93  # the overlay is in force
    assert holder.version.startswith("p1+autopilot:fraud@")
    (change,) = logged
    assert (change.kind, change.overlay, change.model) == ("overlay_set", "autopilot", "fraud")
    assert {"estimate", "lower", "upper", "n", "budget"} <= set(change.evidence)
    assert change.evidence["upper"] <= 0.01 and change.evidence["n"] > 300
    g = lambda name, **lab: registry.get_sample_value(name, {"model": "fraud", **lab})  # noqa: E731
    assert g("loopline_autopilot_threshold") == 0.93 and g("loopline_auto_error_budget") == 0.01
    assert g("loopline_auto_error_rate_estimate") == change.evidence["estimate"]
    assert 0 <= g("loopline_calibration_ece") < 1
    assert g("loopline_slice_error_rate", slice="country=DE") is not None
    # not due again before interval_seconds; forced evaluations keep going one bounded step at a time
    assert asyncio.run(rt.tick(log_change, now_ms=T0 + 2000)) == []
    stats = {"worker": "w1", "calibration": rt.stats()}
    text = policy_status(stats)
    assert "fraud" in text and "0.930" in text and "loosen" in text and "worst slices of fraud" in text
    png = plot_reliability(rt.tracker.curve("fraud"), tmp_path / "rel.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_disabling_clears_the_overlay_and_logs_it():
    holder = PolicyHolder(Policy.from_toml(POLICY))
    rt = runtime(holder, CollectorRegistry())
    result, examples = traffic(holder)
    rt.on_examples(examples)
    logged = []

    async def log_change(change):
        logged.append(change)

    asyncio.run(rt.tick(log_change, now_ms=T0, force=True))
    assert holder.policy.model("fraud").min_confidence == 0.93
    rt._ap_specs["fraud"] = dataclasses.replace(SPEC, enabled=False)
    asyncio.run(rt.tick(log_change, now_ms=T0 + 1, force=True))
    assert holder.policy.model("fraud").min_confidence == 0.95 and logged[-1].kind == "overlay_cleared"


def test_drift_blocks_loosening_and_tightens():
    holder = PolicyHolder(Policy.from_toml(POLICY))

    class Board:  # the drift board of a worker whose drift agent saw fraud drift
        def status(self, model):
            return "drifting: amount (psi 0.31 > 0.20)" if model == "fraud" else "stable"

    class Drift:
        board = Board()

    class W:
        drift = Drift()

    rt = runtime(holder, CollectorRegistry(), drift_active=drift_reader(W()))
    _, examples = traffic(holder)
    rt.on_examples(examples)

    async def log_change(change):
        pass

    (adj,) = asyncio.run(rt.tick(log_change, now_ms=T0, force=True))
    assert (adj.action, adj.reason, adj.new_threshold) == ("tighten", "drift", 1.0)
    (adj,) = asyncio.run(rt.tick(log_change, now_ms=T0 + 1, force=True))
    assert (adj.action, adj.reason) == ("hold", "drift_active")


def test_status_without_data_says_so():
    assert "no calibration data" in policy_status({"worker": "w"})


def test_per_class_thresholds_are_respected():
    """With min_confidence_by_class, a class's outcomes count at their margin over its own threshold."""
    holder = PolicyHolder(Policy.from_toml(POLICY + "min_confidence_by_class = { fraud = 0.99 }\n"))
    rt = runtime(holder, CollectorRegistry())
    rng = np.random.default_rng(4)

    def ex(i, label, conf, wrong, audit):
        pred = {"predicted_label": label, "confidence": conf, "context": {"country": "DE"}, "risk": None}
        truth = ("legit" if label == "fraud" else "fraud") if wrong else label
        return {"event_id": f"x{i}", "model_name": "fraud", "model_version": "v1", "label": truth,
                "effective_label": truth, "tier": "auto" if audit else "review", "audit": audit,
                "sampling_propensity": 0.5 if audit else 1.0,
                "reason": "audit" if audit else "confidence[fraud]<0.99", "reviewed_at": T0, "task_created_at": T0,
                "prediction": pred}

    examples = [ex(i, "legit", 0.97, False, True) for i in range(1000)]
    # fraud predictions at 0.96 sit below fraud's own threshold (0.99): 30% wrong, but they are not auto at 0.95
    examples += [ex(1000 + i, "fraud", 0.96, rng.random() < 0.3, False) for i in range(300)]
    rt.on_examples(examples)

    async def log_change(change):
        pass

    (adj,) = asyncio.run(rt.tick(log_change, now_ms=T0, force=True))
    assert adj.evidence["current_estimate"] == 0.0  # the fraud reviews are not in the auto region of 0.95
    assert (adj.action, adj.new_threshold) == ("loosen", 0.93)
    assert holder.policy.model("fraud").min_confidence_by_class["fraud"] == 0.97


def test_slice_series_are_bounded_to_the_worst():
    """``max_slice_series`` caps ``loopline_slice_error_rate``: the slices with the highest
    verified error rate stay, the rest lose their series."""
    def slice_series(registry):
        return {s.labels["slice"]: s.value for m in registry.collect() if m.name == "loopline_slice_error_rate"
                for s in m.samples}

    async def no_log(change):
        return None

    full, capped = CollectorRegistry(), CollectorRegistry()
    for registry, cap in ((full, 200), (capped, 1)):
        holder = PolicyHolder(Policy.from_toml(POLICY))
        rt = runtime(holder, registry, max_slice_series=cap)
        result, examples = traffic(holder)
        rt.on_route(result)
        rt.on_examples(examples)
        asyncio.run(rt.tick(no_log, now_ms=T0 + 1000, force=True))
    everything = slice_series(full)
    assert len(everything) >= 2, everything
    worst = min(everything, key=lambda k: (-everything[k], k))
    assert slice_series(capped) == {worst: everything[worst]}
