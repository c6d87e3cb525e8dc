"""A single worker stopped and started again on its committed offsets decides what came meanwhile.

Found with the embedded broker on disk (issue #16): the second worker of `loopline up` left partitions
undecided for minutes. The cause was in the consumer, not the storage: Faust's ``getmany`` waits for
records after the offset guard took the partitions' seek epochs, so records fetched *after* the
start-up seek were taken for records fetched before it and dropped, while the fetch position had
already moved past them (streams/offset_guard.py). Reproduced here on the memory broker in 1 of 3
restarts before the fix.
"""
from __future__ import annotations

import time

import pytest

from loopline.connectors.processes import WorkerProcess
from loopline.connectors.producer import PredictionProducer
from loopline.processors.routing.router import iter_decisions
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import AvroSerde
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())


def test_a_restarted_worker_decides_every_prediction_after_each_restart(loopline_settings, tmp_path):
    s = loopline_settings
    missing = []
    for run in range(3):
        w = WorkerProcess(s, tmp_path / f"w{run}.log").start(timeout=90)
        try:
            events = make_events(500, seed=60 + run)
            want = {e["event_id"] for e in events}
            with PredictionProducer(s, batch_size=100) as p:
                p.send_many(events)
            msgs = read_topic(s.kafka_bootstrap, s.topics.decisions,
                              lambda m: want <= {d["event_id"] for x in m for d in iter_decisions(SERDE, x.value())},
                              timeout=60)
            got = {d["event_id"] for x in msgs for d in iter_decisions(SERDE, x.value())}
            missing.append(len(want - got))
            time.sleep(4)  # a commit interval: the next start begins at committed offsets
        finally:
            w.stop()
    assert missing == [0, 0, 0], f"predictions left undecided per start: {missing}"
