"""``loopline drift baseline``: a pinned drift reference profile built from a topic of predictions.

    loopline drift baseline --from-topic loopline.predictions --out fraud-v3.json [--model fraud]
                            [--version v3] [--events 5000]

Reads the topic from the beginning (outside any consumer group, nothing
committed) until polling finds no more records (not up to the broker's high
watermark, which may lag what it serves), applies the worker's own validation
(records and predictions the worker would dead-letter are skipped and counted
by error class), keeps the first
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
    from loopline.processors.errors import LooplineError
    from loopline.streams.settings import Settings

    try:
        if args.events < 1:
            raise BaselineFailure("--events must be at least 1")
        settings = Settings()
        if not settings.kafka_bootstrap:
            raise BaselineFailure("no Kafka to read from: set LOOPLINE_KAFKA_BOOTSTRAP=host:port")
        try:
            profile, stats = build_baseline(settings, args.from_topic, args.model, args.version, args.events,
                                            progress=sys.stderr)
        except (LooplineError, ValueError) as exc:  # unreadable input: one sentence, never a traceback
            raise BaselineFailure(f"cannot build a baseline from {args.from_topic!r}: {exc}") from exc
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
          f"({stats['records']} records read, {stats['skipped']} skipped{_classes(stats)})")
    return 0


def baseline_consumer_config(settings, timeout: float) -> dict:
    """The librdkafka configuration `loopline drift baseline` reads predictions with (a throw-away group)."""
    from loopline.streams.kafka_security import client_config

    return client_config(settings, {"group.id": f"loopline-baseline-{time.time_ns()}", "enable.auto.commit": False,
                                    "socket.timeout.ms": int(timeout * 1000)})


def _skip(stats: dict, error_class: str, predictions: bool = False) -> None:
    stats["skipped"] += 1
    by = stats["skipped_by_class"]
    by[error_class] = by.get(error_class, 0) + 1


def _classes(stats: dict) -> str:
    by = stats.get("skipped_by_class") or {}
    return (": " + ", ".join(f"{n} {k}" for k, n in sorted(by.items(), key=lambda kv: -kv[1]))) if by else ""


def build_baseline(settings, topic: str, model: str | None, version: str | None, n_events: int,
                   progress=None, timeout: float = 10.0, idle: float = 3.0):
    """Read ``topic`` to its end and return ``(ReferenceProfile, stats)``; raise BaselineFailure.

    Applies the router's validation (:func:`invalid_rows` / :func:`check_prediction`)
    and decoding: what the worker would dead-letter is counted in
    ``stats["skipped"]`` (by error class in ``stats["skipped_by_class"]``) and kept
    out of the profile. The end is reached when polling finds no record for
    ``idle`` seconds (``timeout`` before the first record).
    """
    import numpy as np
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from loopline.processors.drift.baseline import BaselineBuilder
    from loopline.processors.errors import LooplineError
    from loopline.processors.routing.frame_checks import invalid_rows
    from loopline.processors.routing.validation import check_prediction
    from loopline.processors.wire.frame import frame_from_batch, frames_from_events
    from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH
    from loopline.streams.confluent import build_serde
    from loopline.streams.drift.extension import drift_config

    serde = build_serde(settings)
    c = Consumer(baseline_consumer_config(settings, timeout))
    stats: dict = {"records": 0, "skipped": 0, "predictions": 0, "skipped_by_class": {}}
    builder = None
    try:
        try:
            md = c.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise BaselineFailure(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BaselineFailure(f"topic {topic!r} does not exist on {settings.kafka_bootstrap}")
        c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        # The end is where polling finds nothing more for ``idle`` seconds: a broker's high watermark
        # may lag the records it serves (the embedded one reports the last batch's base offset + 1).
        last_print, idle_since, started = 0.0, time.monotonic(), time.monotonic()
        now_ms = int(time.time() * 1000)
        max_skew_ms = int(settings.max_clock_skew_seconds * 1000)
        while True:
            msgs = c.consume(2000, 0.5)
            good = [m for m in msgs if m.error() is None]
            if not good:
                if time.monotonic() - idle_since > (idle if stats["records"] else timeout):
                    break
                continue
            idle_since = time.monotonic()
            frames, singles = [], []
            for m in good:
                stats["records"] += 1
                try:
                    name, obj = serde.decode(m.value())
                    if name == PREDICTION_BATCH:
                        frames.append(frame_from_batch(obj))
                    elif name == PREDICTION:
                        singles.append(obj)
                    else:
                        _skip(stats, "unexpected_type")
                except LooplineError as exc:
                    _skip(stats, exc.error_class)
                except ValueError:  # e.g. a label code outside the batch's dictionary: the router dead-letters it
                    _skip(stats, "truncated_payload")
            try:
                frames += frames_from_events(singles) if singles else []
            except ValueError:
                for ev in singles:  # one at a time, to skip only the bad ones
                    try:
                        frames += frames_from_events([ev])
                    except ValueError:
                        _skip(stats, "truncated_payload")
            for f in frames:
                bad = invalid_rows(f, now_ms, max_skew_ms)  # the router's own rules
                if bad.any():
                    for i in np.flatnonzero(bad).tolist():
                        err = check_prediction(f.row(i), now_ms, max_skew_ms)
                        _skip(stats, getattr(err, "error_class", "invalid"), predictions=True)
                    f = f.take(~bad)
                    if f.n == 0:
                        continue
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
                print(f"read {stats['records']:,} records in {time.monotonic() - started:.0f}s, "
                      f"{stats['predictions']:,} valid predictions of the model", file=progress, flush=True)
        if not stats["records"]:
            raise BaselineFailure(f"topic {topic!r} is empty")
    finally:
        c.close()
    if builder is None:
        which = " ".join(x for x in (model and f"model {model!r}", version and f"version {version!r}") if x)
        raise BaselineFailure(f"no predictions{' of ' + which if which else ''} on {topic!r} "
                              f"({stats['records']} records, {stats['skipped']} skipped as the worker would)")
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
