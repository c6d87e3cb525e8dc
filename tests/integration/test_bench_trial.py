"""The bench's paced trial of the default deployment runs it as users do and measures it (issue #18)."""
from __future__ import annotations

import pytest

from loopline.connectors.bench.deployment import DEFAULT_AGENTS, Deployment, trial
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde

pytestmark = pytest.mark.integration


def test_a_paced_trial_of_the_default_deployment_decides_everything_and_closes_the_loop(kafka_bootstrap, tmp_path):
    d = Deployment("t-default", DEFAULT_AGENTS, learner=True, answer_share=0.5)
    r = trial(d, kafka_bootstrap, rate=400, seconds=8, tmp=tmp_path, serde=AvroSerde(SchemaCatalogue.load()))
    assert r["sent"] == r["decided"] == 3200 and r["kept_up"]
    assert 0.08 < r["tasks"] / r["sent"] < 0.25  # ~15% of the bench's predictions need a human
    assert 0.35 < r["answers"] / r["tasks"] < 0.65  # the simulated team answers its share
    assert r["feedback_p99_s"] is not None  # answers reached the learner and its model came back in use
    assert 0 < r["p50_ms"] <= r["p99_ms"] and r["cpu_us"] > 0 and len(r["cpu_us_by_process"]) == 2
