"""``loopline drift baseline``: a pinned drift reference profile built from a topic of predictions.

    loopline drift baseline --from-topic loopline.predictions --out fraud-v3.json [--model fraud]
                            [--version v3] [--events 5000]

Reads the topic from the beginning (outside any consumer group, nothing
committed) up to the end it had when the command started, keeps the first
``--events`` predictions of the model version (by ``emitted_at``, then
``event_id``, like the worker's own reference) and writes the profile as JSON.
Workers use it with ``LOOPLINE_DRIFT_REFERENCE_FILE``. Both ``PredictionEvent``
and ``PredictionBatch`` records are read; other records are counted and
skipped. Failures (no broker, no such topic, no predictions of the model,
unwritable output) end with one sentence and exit code 2.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

EXIT_USAGE = 2


class BaselineFailure(Exception):
    """A sentence for the user; the command exits with code 2."""


def add_drift_commands(subparsers) -> None:
    """Add ``drift baseline`` to the ``loopline`` parser's subcommands."""
    drift = subparsers.add_parser("drift", help="drift detection tools")
    sub = drift.add_subparsers(dest="drift_command", required=True)
    b = sub.add_parser("baseline", help="build a pinned reference profile from a topic of predictions")
    b.add_argument("--from-topic", required=True, help="topic of PredictionEvent / PredictionBatch records")
    b.add_argument("--out", required=True, help="JSON file to write (LOOPLINE_DRIFT_REFERENCE_FILE)")
    b.add_argument("--model", help="model name (default: the first model on the topic)")
    b.add_argument("--version", help="model version (default: the first version of the model on the topic)")
    b.add_argument("--events", type=int, default=5000, help="predictions in the reference (default 5000)")
    b.set_defaults(func=cmd_drift_baseline)


def cmd_drift_baseline(args) -> int:
    from loopline.streams.settings import Settings

    try:
        if args.events < 1:
            raise BaselineFailure("--events must be at least 1")
        settings = Settings()
        if not settings.kafka_bootstrap:
            raise BaselineFailure("no Kafka to read from: set LOOPLINE_KAFKA_BOOTSTRAP=host:port")
        profile, stats = build_baseline(settings, args.from_topic, args.model, args.version, args.events,
                                        progress=sys.stderr)
        out = Path(args.out)
        try:
            profile.save(out)
        except OSError as exc:
            raise BaselineFailure(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaselineFailure as exc:
        print(f"loopline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out}: model {profile.model_name} version {profile.model_version}, {profile.n_events} events, "
          f"{len(profile.signals)} signals, fingerprint {profile.fingerprint} "
          f"({stats['records']} records read, {stats['skipped']} skipped)")
    return 0


def baseline_consumer_config(settings, timeout: float) -> dict:
    """The librdkafka configuration `loopline drift baseline` reads predictions with (a throw-away group)."""
    from loopline.streams.kafka_security import client_config

    return client_config(settings, {"group.id": f"loopline-baseline-{time.time_ns()}", "enable.auto.commit": False,
                                    "socket.timeout.ms": int(timeout * 1000)})


def build_baseline(settings, topic: str, model: str | None, version: str | None, n_events: int,
                   progress=None, timeout: float = 10.0):
    """Read ``topic`` to its current end and return ``(ReferenceProfile, stats)``; raise BaselineFailure."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from loopline.processors.drift.baseline import BaselineBuilder
    from loopline.processors.errors import LooplineError
    from loopline.processors.wire.frame import frame_from_batch, frames_from_events
    from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH
    from loopline.streams.confluent import build_serde
    from loopline.streams.drift.extension import drift_config

    serde = build_serde(settings)
    c = Consumer(baseline_consumer_config(settings, timeout))
    stats = {"records": 0, "skipped": 0, "predictions": 0}
    builder = None
    try:
        try:
            md = c.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise BaselineFailure(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BaselineFailure(f"topic {topic!r} does not exist on {settings.kafka_bootstrap}")
        ends = {}
        for p in meta.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if hi > lo:
                ends[p] = hi
        if not ends:
            raise BaselineFailure(f"topic {topic!r} is empty")
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        total = sum(ends.values())
        last_print, idle_since = 0.0, time.monotonic()
        while ends:
            msgs = c.consume(2000, 0.5)
            if not msgs and time.monotonic() - idle_since > timeout:
                raise BaselineFailure(f"reading {topic!r} stalled: no records for {timeout:.0f}s")
            frames, singles = [], []
            for m in msgs:
                if m.error() is not None:
                    continue
                idle_since = time.monotonic()
                stats["records"] += 1
                if m.partition() in ends and m.offset() + 1 >= ends[m.partition()]:
                    del ends[m.partition()]
                try:
                    name, obj = serde.decode(m.value())
                except LooplineError:
                    stats["skipped"] += 1
                    continue
                if name == PREDICTION_BATCH:
                    frames.append(frame_from_batch(obj))
                elif name == PREDICTION:
                    singles.append(obj)
                else:
                    stats["skipped"] += 1
            frames += frames_from_events(singles) if singles else []
            for f in frames:
                if builder is None and (model is None or f.model_name == model) and (
                        version is None or f.model_version == version):
                    builder = BaselineBuilder(f.model_name, f.model_version, n_events,
                                              config=drift_config(settings))
                if builder is not None:
                    builder.update(f)
                    if f.model_name == builder.model_name and f.model_version == builder.model_version:
                        stats["predictions"] += f.n
            if progress is not None and time.monotonic() - last_print > 1.0:
                last_print = time.monotonic()
                print(f"read {stats['records']:,}/{total:,} records, {stats['predictions']:,} predictions "
                      f"of the model", file=progress, flush=True)
    finally:
        c.close()
    if builder is None:
        which = " ".join(x for x in (model and f"model {model!r}", version and f"version {version!r}") if x)
        raise BaselineFailure(f"no predictions{' of ' + which if which else ''} on {topic!r} "
                              f"({stats['records']} records, {stats['skipped']} not predictions)")
    return builder.profile(), stats



def main(argv: list[str] | None = None) -> int:
    """``python -m loopline.connectors.cli.drift drift baseline ...`` (the same as ``loopline drift baseline ...``)."""
    import argparse

    p = argparse.ArgumentParser(prog="loopline")
    add_drift_commands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
