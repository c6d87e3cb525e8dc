"""Online learning figures: throughput, feedback-to-model latency, quality lift, override-risk routing.

    .venv/bin/python -m benchmarks.bench_learning [--quick] [--skip-latency]

1. **Learning throughput** of the default pipeline (``logreg``): examples/s of
   the whole learner (dedupe, guards, progressive validation of champion and
   challenger, challenger + override-risk updates), alone and with Avro decode
   (the worker's per-batch path), against a baseline of bare River
   ``LogisticRegression.learn_one`` on the same feature dicts.
2. **Feedback-to-model latency** on the embedded broker: TrainingExamples
   published at 1,000/s for 20 s to a learner worker process; a route-side
   ``RiskScorer`` (the code route workers run) tails the model-updates topic
   and verifies + swaps every override-risk snapshot. Latency of a correction =
   the swap of the first snapshot trained through its offset − its publication.
   Baseline: the same records' broker round trip (publish → a plain consumer).
3. **Quality lift** under concept drift: traffic drifts at event 40,000; in
   each of three correction cycles (40,000 events each) the static champion and
   the online challenger (trained on every earlier cycle's corrections) are
   scored on *all* events of the cycle by ground truth (fraud F1), then the
   cycle's corrections are learned. PNG: out/bench/learning_f1_cycles.png.
4. **Override-risk routing** vs confidence-only routing at the same review
   budget (the share confidence < 0.9 sends to review): the share of the
   producer model's errors that reach a human, on the cycle after the three.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from loopline.connectors.simulator import FraudTraffic
from loopline.connectors.simulator.corrections import corrected_examples
from loopline.processors.learning import LearnerConfig, ModelLearner, build_update
from loopline.processors.learning.features import example_features
from loopline.processors.learning.scorer import RiskScorer
from loopline.processors.wire.frame import frames_from_events

OUT = Path("out/bench")
KEY = b"bench-key"
OPEN = dict(reviewer_max_share=1.0, reviewer_max_per_window=10**9)


def throughput(n: int) -> None:
    from river import linear_model

    from loopline.processors.routing.router import InputRecord
    from loopline.processors.wire.catalogue import SchemaCatalogue
    from loopline.processors.wire.serde import AvroSerde
    from loopline.streams.learning.runtime import LearnerRuntime
    from loopline.streams.settings import Settings

    traffic = FraudTraffic(seed=21, n_events=n * 12, concept_drift_at=0.3)
    examples, _ = corrected_examples(traffic, 0, n * 12, reviewers=(("a", 0.03), ("b", 0.04)), seed=21)
    examples = examples[:n]
    xs = [(example_features(e["prediction"]), e["label"] == "fraud") for e in examples]
    base = linear_model.LogisticRegression()
    t = time.perf_counter()
    for x, y in xs:
        base.learn_one(x, y)
    t_base = time.perf_counter() - t
    lr = ModelLearner("fraud", LearnerConfig(**OPEN))
    t = time.perf_counter()
    for i in range(0, len(examples), 500):
        lr.learn_batch([(e, 0, i + j) for j, e in enumerate(examples[i:i + 500])])
    t_core = time.perf_counter() - t
    serde = AvroSerde(SchemaCatalogue.load())
    recs = [InputRecord(serde.encode("io.loopline.TrainingExample", e), "training", 0, i, [], b"fraud")
            for i, e in enumerate(examples)]
    rt = LearnerRuntime(Settings(), serde)
    rt.config = LearnerConfig(**OPEN)
    t = time.perf_counter()
    for i in range(0, len(recs), 500):
        rt.learn_records(recs[i:i + 500])
    t_rt = time.perf_counter() - t
    print(f"\n1. learning throughput, {len(examples):,} simulated corrections, one core")
    print(f"{'path':58} {'examples/s':>11} {'vs bare LR':>10}")
    for name, dt in (("bare river LogisticRegression.learn_one (baseline)", t_base),
                     ("ModelLearner.learn_batch (guards, validation, 2 models)", t_core),
                     ("Avro decode + learn (learner agent path)", t_rt)):
        print(f"{name:58} {len(examples) / dt:11,.0f} {t_base / dt:10.2f}")


def quality(quick: bool) -> dict:
    seg = 20_000 if quick else 40_000
    traffic = FraudTraffic(seed=31, n_events=seg * 5, concept_drift_at=seg)
    lr = ModelLearner("fraud", LearnerConfig(positive_label="fraud", **OPEN))
    offset = 0

    def learn(k: int) -> int:
        nonlocal offset
        ex, _ = corrected_examples(traffic, k * seg, (k + 1) * seg, reviewers=(("a", 0.03), ("b", 0.05)), seed=k)
        lr.learn_batch([(e, 0, offset + i) for i, e in enumerate(ex)])
        offset += len(ex)
        return len(ex)

    def f1(pred: np.ndarray, true: np.ndarray) -> float:
        tp = int((pred & true).sum())
        return 2 * tp / (2 * tp + int((pred & ~true).sum()) + int((~pred & true).sum())) if tp else 0.0

    learn(0)  # the corrections of the pre-drift warm-up
    rows = []
    for cycle in (1, 2, 3):
        chunk = next(traffic.iter_chunks(chunk_size=seg, start=cycle * seg, stop=(cycle + 1) * seg))
        true = chunk.labels.astype(bool)
        champ = np.array([e["predicted_label"] == "fraud" for e in chunk.events])
        ch = lr.challenger
        chal = np.array([ch.predict_one(ch.predict_proba_one(example_features(e))) == "fraud" for e in chunk.events])
        n_corr = learn(cycle)
        rows.append((cycle, f1(champ, true), f1(chal, true), n_corr, lr.online_f1("champion"), lr.online_f1("challenger")))
    print(f"\n3. quality lift under concept drift (drift at event {seg:,}; cycles of {seg:,} events; fraud F1 on all "
          "events of the cycle, by ground truth)")
    print(f"{'cycle':>5} {'champion F1':>12} {'challenger F1':>14} {'lift':>7} {'corrections':>12} "
          f"{'online F1 champ/chal (corrected events)':>40}")
    for c, a, b, n, oa, ob in rows:
        print(f"{c:5d} {a:12.3f} {b:14.3f} {b - a:+7.3f} {n:12,d} {oa:19.3f} / {ob:.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="champion (static producer model)")
    ax.plot([r[0] for r in rows], [r[2] for r in rows], "s-", label="online challenger")
    ax.set_xticks([1, 2, 3])
    ax.set_xlabel("correction cycle after the concept drift")
    ax.set_ylabel("fraud F1 (all events)")
    ax.set_ylim(0, max(0.5, max(r[2] for r in rows) * 1.2))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "learning_f1_cycles.png", dpi=110)
    print(f"plot: {OUT / 'learning_f1_cycles.png'}")
    return {"traffic": traffic, "learner": lr, "seg": seg}


def routing(ctx: dict) -> None:
    traffic, lr, seg = ctx["traffic"], ctx["learner"], ctx["seg"]
    chunk = next(traffic.iter_chunks(chunk_size=seg, start=4 * seg, stop=5 * seg))
    scorer = RiskScorer(KEY)
    scorer.accept(build_update("fraud", "override_risk", 1, lr.risk, key=KEY))
    frames = frames_from_events(chunk.events)
    t = time.perf_counter()
    risk = np.concatenate([scorer.score_frame(f) for f in frames])
    dt = time.perf_counter() - t
    ids = [i for f in frames for i in f.event_ids]
    order = {eid: k for k, eid in enumerate(e["event_id"] for e in chunk.events)}
    idx = np.array([order[i] for i in ids])
    true = chunk.labels.astype(bool)[idx]
    pred = np.array([chunk.events[k]["predicted_label"] == "fraud" for k in idx])
    conf = np.array([chunk.events[k]["confidence"] for k in idx])
    errors = pred != true
    by_conf = conf < 0.9
    budget = int(by_conf.sum())
    by_risk = np.zeros(len(risk), dtype=bool)
    by_risk[np.argsort(-risk, kind="stable")[:budget]] = True
    half = budget // 2  # mixed: half the budget by confidence, the rest by risk among the others
    mixed = np.zeros(len(risk), dtype=bool)
    mixed[np.argsort(conf, kind="stable")[:half]] = True
    rest = np.argsort(-np.where(mixed, -np.inf, risk), kind="stable")[:budget - half]
    mixed[rest] = True
    print(f"\n4. routing at the same review budget ({budget:,} of {len(risk):,} events = {budget / len(risk):.1%}; "
          f"{int(errors.sum()):,} producer-model errors)")
    print(f"{'policy':44} {'reviewed':>9} {'errors caught':>14} {'share':>7} {'vs conf.':>8}")
    base = (errors & by_conf).sum()
    for name, sel in (("confidence < 0.9 (baseline)", by_conf), ("top override risk", by_risk),
                      ("half lowest confidence + half top risk", mixed)):
        caught = int((errors & sel).sum())
        print(f"{name:44} {int(sel.sum()):9,d} {caught:14,d} {caught / errors.sum():7.1%} {caught / base:8.2f}")
    print(f"override-risk scoring on frames: {len(risk) / dt:,.0f} predictions/s")


def latency(seconds: float, rate: int) -> None:
    import tempfile
    import threading

    from confluent_kafka import Consumer, Producer, TopicPartition

    from loopline.connectors.broker import EmbeddedBroker, create_topics
    from loopline.connectors.processes import WorkerProcess
    from loopline.processors.wire.catalogue import SchemaCatalogue
    from loopline.processors.wire.serde import AvroSerde
    from loopline.streams.learning.kafka_io import UpdateTail
    from loopline.streams.settings import Settings
    from tests.conftest import free_port

    serde = AvroSerde(SchemaCatalogue.load())
    n = int(seconds * rate)
    traffic = FraudTraffic(seed=41, n_events=n * 12, concept_drift_at=0.2)
    team = tuple((f"reviewer-{i}", 0.03) for i in range(200))  # 1,000/s is ~5/s each: under the rate limit
    examples, _ = corrected_examples(traffic, 0, n * 12, reviewers=team, seed=41)
    examples = examples[:n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-learning-"))
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        s = Settings(kafka_bootstrap=broker.bootstrap, topic_namespace="benchlearn", app_id="benchlearn-learn",
                     agents="learn", web_port=free_port(), data_dir=tmp / "data", snapshot_hmac_key=KEY.decode())
        create_topics(broker.bootstrap, s.topics.all(), s.partitions, compacted=s.topics.compacted())
        worker = WorkerProcess(s, tmp / "learner.log").start()
        scorer = RiskScorer(KEY)
        swaps: list[tuple[float, int]] = []  # (wall time, trained through offset)
        raw: dict[int, float] = {}
        stop = threading.Event()

        def tail_updates():
            tail = UpdateTail(broker.bootstrap, s.topics.model_updates)
            while not stop.is_set():
                for m in tail.poll(500, 0.02):
                    _, up = serde.decode(m.value())
                    if up["role"] == "override_risk" and scorer.accept(up):
                        swaps.append((time.time(), max(r["last"] for r in up["trained_through"])))
            tail.close()

        def tail_training():  # baseline: the broker round trip of the same records
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-raw", "fetch.wait.max.ms": 10})
            parts = c.list_topics(s.topics.training, timeout=10).topics[s.topics.training].partitions
            c.assign([TopicPartition(s.topics.training, p, 0) for p in parts])
            while not stop.is_set():
                for m in c.consume(500, 0.02):
                    if m.error() is None:
                        raw[m.offset()] = time.time()
            c.close()

        threads = [threading.Thread(target=f, daemon=True) for f in (tail_updates, tail_training)]
        for th in threads:
            th.start()
        import json

        while not json.loads(worker.get("/learning"))["learner"]["restored"]:
            time.sleep(0.2)
        time.sleep(1.0)
        sent: dict[int, float] = {}
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2, "enable.idempotence": True})
        t0 = time.time()
        pending: dict[str, float] = {}
        for i, e in enumerate(examples):
            due = t0 + i / rate
            while time.time() < due:
                p.poll(0.0005)
            now = time.time()
            e = {**e, "reviewed_at": int(now * 1000), "correction_id": f"lat-{i}"}
            pending[e["correction_id"]] = now
            p.produce(s.topics.training, key=b"fraud", value=serde.encode("io.loopline.TrainingExample", e),
                      on_delivery=lambda err, m, now=now: err is None and sent.__setitem__(m.offset(), now))
        p.flush(30)
        last = max(sent)
        deadline = time.time() + 30
        while time.time() < deadline and not (swaps and swaps[-1][1] >= last):
            time.sleep(0.1)
        stop.set()
        for th in threads:
            th.join(5)
        worker.stop()
    offs = sorted(sent)
    swap_t = np.array([t for t, _ in swaps])
    swap_o = np.maximum.accumulate(np.array([o for _, o in swaps]))
    lat = []
    for o in offs:
        k = np.searchsorted(swap_o, o)
        if k < len(swaps):
            lat.append(swap_t[k] - sent[o])
    base = [raw[o] - sent[o] for o in offs if o in raw]
    lat, base = np.array(lat), np.array(base)
    print(f"\n2. feedback-to-model latency, {len(offs):,} corrections at {rate:,}/s on the embedded broker "
          f"({len(swaps)} override-risk swaps; {len(lat):,} corrections reached a swapped model)")
    print(f"{'measure':58} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
    print(f"{'broker round trip publish -> consumer (baseline)':58} {np.percentile(base, 50):7.3f} "
          f"{np.percentile(base, 99):7.3f} {base.max():7.3f}")
    print(f"{'correction published -> risk model in use (route side)':58} {np.percentile(lat, 50):7.3f} "
          f"{np.percentile(lat, 99):7.3f} {lat.max():7.3f}")
    print(f"ratio p99 model-in-use / broker round trip: {np.percentile(lat, 99) / np.percentile(base, 99):.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    throughput(10_000 if args.quick else 30_000)
    if not args.skip_latency:
        latency(8.0 if args.quick else 20.0, 1000)
    ctx = quality(args.quick)
    routing(ctx)


if __name__ == "__main__":
    main()
