"""A Node.js producer and reviewer (kafkajs + avsc from npm) round-trip through a worker.

The Node side (tests/integration/node/client.js) is a real foreign client: it loads the
``.avsc`` files with avsc, frames single-object records itself, produces with kafkajs's
DefaultPartitioner (murmur2), expands DecisionBatch records with the documented recipe,
reads review tasks and answers them. Its npm packages are pinned in package.json /
package-lock.json and installed with ``npm ci`` (by ``python3 dev.py setup`` or here).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from loopline.processors.wire.catalogue import SchemaCatalogue, schema_dir
from loopline.processors.wire.serde import AvroSerde
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
NODE_DIR = Path(__file__).parent / "node"
SERDE = AvroSerde(SchemaCatalogue.load())


def ensure_node_modules() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the cross-language test (Debian: apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir() or not (NODE_DIR / "node_modules" / "avsc").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300,
                       capture_output=True)


def test_node_producer_and_reviewer_round_trip(loopline_settings, tmp_path):
    from loopline.connectors.processes import WorkerProcess

    ensure_node_modules()
    s = loopline_settings.model_copy(update={"agents": "route,feedback"})
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        env = {**os.environ, "BOOTSTRAP": s.kafka_bootstrap, "NAMESPACE": s.topic_namespace, "EVENTS": "100",
               "SCHEMA_DIR": str(schema_dir()), "TIMEOUT_MS": "60000"}
        r = subprocess.run(["node", str(NODE_DIR / "client.js")], env=env, capture_output=True, text=True, timeout=200)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"\nnode client: {json.dumps({k: v for k, v in out.items() if k != 'answered'})}")
        assert out["produced"] == 100 and out["decided"] == 100
        assert out["tiers"] == {"review": 50, "auto": 50}
        assert out["prediction_fingerprint"] == SERDE.fingerprint_of("io.loopline.PredictionEvent").hex()
        assert len(out["answered"]) == 50
        training = read_topic(s.kafka_bootstrap, s.topics.training, lambda m: len(m) >= 50, timeout=60, settle=1.0)
        examples = [SERDE.decode(m.value())[1] for m in training]
        assert sorted(x["event_id"] for x in examples) == sorted(out["answered"])  # each answer joined once
        assert all(x["correction_id"].startswith("node-c-") for x in examples)
        assert read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: False, timeout=2) == []
    finally:
        worker.stop()
