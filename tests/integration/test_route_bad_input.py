"""10,000 predictions, 1% bad in each bad-input class: every good one yields exactly
one decision, every bad one exactly one dead-letter record with the right class."""
from __future__ import annotations

import math
import random
import struct
from collections import Counter

import pytest
from confluent_kafka import Producer

from loopline.processors.routing.router import iter_decisions
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events, group_by_signature
from loopline.processors.wire.partitioning import partition_for
from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH, AvroSerde
from tests.helpers import headers_dict, read_topic

pytestmark = pytest.mark.integration

N = 10_000
SEMANTIC = {
    "confidence_out_of_range": lambda e: e.update(confidence=1.7),
    "non_finite_feature": lambda e: e["features_numeric"].update(f03=math.nan),
    # half with an empty model name, half with an empty event id
    "missing_identity": lambda e: e.update(model_name="") if int(e["event_id"].rsplit("-", 1)[1]) % 2 else e.update(event_id=""),
    "future_timestamp": lambda e: e.update(emitted_at=e["emitted_at"] + 86_400_000),
}
RAW = ("bad_magic", "truncated_payload", "unknown_schema")


def test_every_record_ends_in_exactly_one_place(loopline_settings, worker):
    s = loopline_settings
    serde = AvroSerde(SchemaCatalogue.load())
    rnd = random.Random(11)
    events = make_events(N, seed=3)
    n_bad_each = N // 100
    classes = list(SEMANTIC) + list(RAW)
    bad_plan = {}
    idx = list(range(N))
    rnd.shuffle(idx)
    for k, cls in enumerate(classes):
        for i in idx[k * n_bad_each:(k + 1) * n_bad_each]:
            bad_plan[i] = cls
    good_ids = {e["event_id"] for i, e in enumerate(events) if i not in bad_plan}
    assert len(good_ids) == N - len(bad_plan)

    producer = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 10, "enable.idempotence": True})
    topic = s.topics.predictions
    batches: dict[int, list[dict]] = {}
    expected_dl: dict[str, str] = {}  # tag -> error class
    for i, e in enumerate(events):
        cls = bad_plan.get(i)
        e["trace_id"] = f"tag-{i}"  # the test's handle on each event, carried through dead letters
        key = e["event_id"].encode()
        p = partition_for(key, s.partitions)
        if cls in RAW:
            data = serde.encode(PREDICTION, e)
            if cls == "bad_magic":
                data = b"\x7b" + data[1:]
            elif cls == "truncated_payload":
                data = data[: len(data) // 2]
            else:
                data = data[:2] + struct.pack("<Q", 0xDEADBEEF) + data[10:]
            producer.produce(topic, value=data, key=f"tag-{i}".encode(), partition=p)
            expected_dl[f"tag-{i}"] = cls
            continue
        if cls in SEMANTIC:
            SEMANTIC[cls](e)
            expected_dl[f"tag-{i}"] = cls
        # half the events travel as single records, half inside PredictionBatch records
        if i % 2 == 0:
            producer.produce(topic, value=serde.encode(PREDICTION, e), key=key, partition=p)
        else:
            batches.setdefault(p, []).append(e)
            if len(batches[p]) == 100:
                for j, group in enumerate(group_by_signature(batches.pop(p))):
                    producer.produce(topic, value=serde.encode(PREDICTION_BATCH, batch_from_events(group, f"b{i}.{j}")),
                                     key=f"b{i}.{j}".encode(), partition=p)
    for p, evs in batches.items():
        for j, group in enumerate(group_by_signature(evs)):
            producer.produce(topic, value=serde.encode(PREDICTION_BATCH, batch_from_events(group, f"last{p}.{j}")),
                             key=f"last{p}.{j}".encode(), partition=p)
    assert producer.flush(30) == 0

    def count_decisions(msgs):
        return sum(1 for m in msgs for _ in iter_decisions(serde, m.value()))

    decision_msgs = read_topic(s.kafka_bootstrap, s.topics.decisions, lambda m: count_decisions(m) >= len(good_ids),
                               timeout=120, settle=2.0)
    decided = Counter(d["event_id"] for m in decision_msgs for d in iter_decisions(serde, m.value()))
    dl_msgs = read_topic(s.kafka_bootstrap, s.topics.dead_letter, lambda m: len(m) >= len(expected_dl),
                         timeout=60, settle=1.0)

    # every good prediction: exactly one decision; no decision for anything bad
    assert set(decided) == good_ids, (len(decided), len(good_ids))
    assert max(decided.values()) == 1
    assert sum(decided.values()) == len(good_ids)

    # every bad record: exactly one dead letter with the right class and its source coordinates
    seen: Counter = Counter()
    for m in dl_msgs:
        h = headers_dict(m)
        assert h["loopline.source.topic"] == topic
        assert int(h["loopline.source.offset"]) >= 0 and int(h["loopline.source.partition"]) == m.partition()
        assert h["loopline.error.message"]
        if h["loopline.error.class"] in RAW:
            tag = m.key().decode()
        else:  # semantic errors carry the event's own bytes: decode them to find the tag
            _, ev = serde.decode(m.value())
            tag = ev["trace_id"]
        assert expected_dl[tag] == h["loopline.error.class"], (tag, h)
        seen[tag] += 1
    assert set(seen) == set(expected_dl)
    assert max(seen.values()) == 1
    # raw bad records keep their original bytes
    for m in dl_msgs:
        if headers_dict(m)["loopline.error.class"] == "truncated_payload":
            assert len(m.value()) < 200
    by_class = Counter(headers_dict(m)["loopline.error.class"] for m in dl_msgs)
    assert by_class == Counter({c: n_bad_each for c in classes})
    print(f"\n{len(good_ids)} decisions for {len(good_ids)} good predictions; dead letters by class: {dict(by_class)}")

    # the worker is still alive and its metrics add up
    metrics = worker.get("/metrics").decode()
    assert f'loopline_predictions_total{{model="fraud"}} {float(len(good_ids))}' in metrics
    assert worker.proc.poll() is None
