"""Two workers in one consumer group: every prediction decided exactly once, totals add up."""
from __future__ import annotations

import re
import time

import pytest

from loopline.connectors.broker import free_port
from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.routing.router import iter_decisions
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())


def _predictions_total(metrics: str) -> float:
    return sum(float(v) for v in re.findall(r'^loopline_predictions_total\{model="fraud"\} (\S+)$', metrics, re.M))


def test_two_workers_share_the_partitions(loopline_settings, tmp_path):
    s = loopline_settings.model_copy(update={"agents": "route"})
    workers = [WorkerProcess(s.model_copy(update={"web_port": free_port()}), tmp_path / f"w{i}.log") for i in range(2)]
    try:
        for w in workers:
            w.start()
        time.sleep(2 * s.session_timeout_seconds)  # both members in the group before traffic
        events = make_events(20_000, seed=5)
        with PredictionProducer(s, batch_size=200) as p:
            p.send_many(events)
        msgs = read_topic(s.kafka_bootstrap, s.topics.decisions,
                          lambda m: sum(len(SERDE.decode(x.value())[1]["event_ids"]) for x in m) >= 20_000,
                          timeout=90, settle=2.0)
        ids = [d["event_id"] for m in msgs for d in iter_decisions(SERDE, m.value())]
        assert len(ids) == 20_000 and set(ids) == {e["event_id"] for e in events}
        per_worker = [_predictions_total(w.get("/metrics").decode()) for w in workers]
        assert sum(per_worker) == 20_000
        assert all(n > 0 for n in per_worker), per_worker  # both did work
        print(f"\nper-worker predictions: {per_worker}")
    finally:
        for w in workers:
            w.stop()
