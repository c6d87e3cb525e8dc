"""Each drift policy, from DriftEvents to what changes: routing overlay, retrain request, or only alerts."""
from __future__ import annotations

import asyncio
import json
import types

from loopline.processors.drift.board import DriftBoard
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.coordinator import DriftCoordinator
from loopline.processors.drift.policy import DriftPolicyBook
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde
from loopline.streams.drift.agent import retrain_request
from loopline.streams.drift.reader import DriftReader, RoutingActions
from tests.unit.test_drift_pipeline import PARTS, run, shifted_stream

POLICY = 'version = "p1"\n[defaults.tiers.auto]\nmin_confidence = 0.9\naudit_rate = 0.01\n'
BOOK = DriftPolicyBook.from_json(json.dumps({
    "fraud": {"mode": "tighten_routing", "auto_threshold_delta": 0.05, "audit_rate_delta": 0.1},
    "scorer": {"mode": "retrain", "retrain_cooldown_ms": 60_000},
    "*": {"mode": "alert_only"}}))


class PolicyOwner:
    """The two things RoutingActions uses of a worker: its policy holder and the policy-change log."""

    def __init__(self) -> None:
        self.policy = PolicyHolder(Policy.from_toml(POLICY))
        self.logged = []

    async def log_policy_change(self, change) -> None:
        self.logged.append(change)


def ev(model, signal, state, detector="psi", at=1000):
    return {"model_name": model, "model_version": "v1", "signal": signal, "detector": detector, "score": 0.3,
            "threshold": 0.1, "window": "w", "state": state, "detected_at": at}


async def feed(board, actions, events):
    for e in events:
        await actions.run(board.apply(e), e)


def test_tighten_routing_raises_thresholds_while_drifting_and_reverts_once_calm():
    owner, board = PolicyOwner(), DriftBoard(BOOK)
    actions = RoutingActions(owner)
    asyncio.run(feed(board, actions, [ev("fraud", "amount", "started")]))
    mp = owner.policy.policy.model("fraud")
    assert round(mp.min_confidence, 6) == 0.95 and round(mp.audit_rate, 6) == 0.11
    assert "+drift:fraud@" in owner.policy.version
    assert [c.kind for c in owner.logged] == ["overlay_set"] and owner.logged[0].evidence["score"] == 0.3
    asyncio.run(feed(board, actions, [ev("fraud", "confidence", "started", "rank_cusum"),
                                      ev("fraud", "amount", "resolved")]))
    assert len(owner.logged) == 1  # still drifting on confidence: no change
    assert round(owner.policy.policy.model("fraud").min_confidence, 6) == 0.95
    asyncio.run(feed(board, actions, [ev("fraud", "confidence", "resolved", "rank_cusum")]))
    assert [c.kind for c in owner.logged] == ["overlay_set", "overlay_cleared"]
    assert owner.policy.version == "p1" and owner.policy.policy.model("fraud").min_confidence == 0.9


def test_alert_only_and_retrain_leave_routing_alone():
    owner, board = PolicyOwner(), DriftBoard(BOOK)
    actions = RoutingActions(owner)
    asyncio.run(feed(board, actions, [ev("other", "amount", "started"), ev("scorer", "amount", "started")]))
    assert owner.logged == [] and owner.policy.version == "p1"
    assert board.status("other").startswith("drifting: amount")


def test_retrain_emits_one_request_per_episode_from_the_merged_verdict():
    cfg = DriftConfig(bucket_ms=1000, reference_events=3000, window_buckets=4, calibration_budgets=10)
    coord = DriftCoordinator(cfg, policies=BOOK, expected_partitions=PARTS, idle_ms=10**9)
    import tests.unit.test_drift_pipeline as pipeline

    saved, pipeline.CFG = pipeline.CFG, cfg
    try:
        events, _ = run(shifted_stream(model="scorer"), [[0, 1], [2, 3]], coordinator=coord)
    finally:
        pipeline.CFG = saved
    starts = [e for e in events if e["state"] == "started"]
    assert len(starts) >= 2  # psi and rank_cusum on f00
    # replay the verdicts through a fresh policy: one request for the episode, not one per detector
    policy = BOOK.policy_for("scorer")
    acts = [a for e in events for a in policy.on_event(e)]
    reqs = [a for a in acts if a["action"] == "retrain_request"]
    assert len(reqs) == 1 and reqs[0]["signal"] == "f00"
    first = next(e for e in starts if e["detector"] == reqs[0]["detector"])
    record = retrain_request(reqs[0], first, now_ms=123)
    serde = AvroSerde(SchemaCatalogue.load())
    name, back = serde.decode(serde.encode("io.loopline.RetrainRequest", record))
    assert name == "io.loopline.RetrainRequest" and back["model_name"] == "scorer" and back["requested_at"] == 123
    assert record["request_id"] == retrain_request(reqs[0], first, now_ms=456)["request_id"]  # dedupe key


def test_a_restarted_worker_tightens_once_after_catching_up_not_per_old_event():
    owner = PolicyOwner()
    rt = types.SimpleNamespace(board=DriftBoard(BOOK), collector=None)
    reader = DriftReader(owner, rt)
    history = [ev("fraud", "amount", "started", at=1), ev("fraud", "amount", "resolved", at=2),
               ev("fraud", "amount", "started", at=3)]
    for e in history:  # catching up: state only
        rt.board.apply(e)
    assert owner.logged == []
    asyncio.run(reader._caught_up())
    assert [c.kind for c in owner.logged] == ["overlay_set"] and "+drift:fraud@" in owner.policy.version
