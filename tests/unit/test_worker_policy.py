"""The worker routes with the tiered policy file when LOOPLINE_POLICY_FILE is set (no broker needed)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from loopline.connectors.processes import loopline_exe
from loopline.processors.policy.policy import PolicyHolder
from loopline.processors.policy.threshold import ThresholdPolicy
from loopline.processors.routing.router import InputRecord
from loopline.processors.testing import make_events
from loopline.processors.wire.frame import batch_from_events, frames_from_events
from loopline.processors.wire.serde import PREDICTION_BATCH
from loopline.streams.app import LooplineWorker
from loopline.streams.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.toml"


def test_worker_uses_policy_file(tmp_path):
    w = LooplineWorker(Settings(kafka_bootstrap="127.0.0.1:1", policy_file=EXAMPLE, data_dir=tmp_path, agents="route"))
    assert isinstance(w.policy, PolicyHolder)
    events = make_events(200, start_ms=1_800_000_000_000 - 1000)
    res = w.router.route([InputRecord(w.serde.encode(PREDICTION_BATCH, batch_from_events(events)), "p", 0, 0)],
                         now_ms=1_800_000_000_000)
    assert res.decided == 200
    assert all(r.decisions.policy_version == w.policy.version for r in res.routed)


def test_default_policy_decides_like_the_threshold_policy(tmp_path):
    """Without a policy file the worker's policy is a replaceable PolicyHolder equal to the two thresholds."""
    w = LooplineWorker(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, auto_confidence_threshold=0.8,
                        escalate_confidence_threshold=0.4))
    assert isinstance(w.policy, PolicyHolder) and w.policy.version == "threshold-v1"
    events = make_events(2000, start_ms=0)
    for i, e in enumerate(events):
        e["confidence"] = i / 2000
    frame = frames_from_events(events)[0]
    ours = w.policy.decide_frame(frame, now_ms=0)
    reference = ThresholdPolicy(auto=0.8, escalate=0.4).decide_frame(frame, now_ms=0)
    assert len(set(ours.tiers.tolist())) == 3
    assert ours.tiers.tolist() == reference.tiers.tolist()
    assert [ours.reasons[c] for c in ours.reason_codes] == [reference.reasons[c] for c in reference.reason_codes]


def test_invalid_policy_file_stops_worker_with_a_sentence(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('version = "', 'version = 12 #"', 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(LOOPLINE_KAFKA_BOOTSTRAP="127.0.0.1:1", LOOPLINE_POLICY_FILE=str(bad))
    r = subprocess.run([loopline_exe(), "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "version" in r.stderr, r.stderr
