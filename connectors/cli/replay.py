"""``loopline dead-letters replay``: send selected dead letters back to the topic they came from.

    loopline dead-letters replay [--dry-run] [--class C ...] [--source-topic T] [--max N] [--idle S]

For after a fix (a schema the workers now know, a policy that no longer rejects,
a task that now exists): reads the dead-letter topic from the start (outside any
consumer group), selects records by error class and source topic, and publishes
each one's **original bytes** (key, value, original headers; Loopline's error
headers dropped) to its ``loopline.source.topic``, with a ``loopline.replay.of``
header naming the dead letter (``topic/partition/offset``). A record that fails
again is dead-lettered again, carrying that header, so repeats are visible.
Only Loopline topics of the configured namespace are replay targets; other
sources are counted and left alone. ``--dry-run`` prints the counts only.
Replaying twice sends twice: the dead-letter topic is not changed by a replay.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from loopline.connectors.cli.tail import TailFailure, headers_of, read

EXIT_USAGE = 2
#: headers Loopline adds to a dead letter; everything else is the original record's
ERROR_HEADER_PREFIXES = ("loopline.error.", "loopline.source.", "loopline.failed_at", "loopline.worker",
                         "loopline.replay.of")


def replay_headers(msg) -> list[tuple[str, bytes]]:
    kept = [(k, v) for k, v in (msg.headers() or []) if not k.startswith(ERROR_HEADER_PREFIXES)]
    kept.append(("loopline.replay.of", f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()))
    return kept


def select(msgs, classes: set[str] | None, source_topic: str | None, targets: set[str], limit: int | None):
    """(to replay: list of (message, target topic), counts by (class, topic), skipped by reason)."""
    chosen, counts, skipped = [], Counter(), Counter()
    for m in msgs:
        h = headers_of(m)
        cls, src = h.get("loopline.error.class", ""), h.get("loopline.source.topic", "")
        if classes and cls not in classes:
            continue
        if source_topic and src != source_topic:
            continue
        if src not in targets:
            skipped["source is not a Loopline topic"] += 1
            continue
        if m.value() is None:
            skipped["no value"] += 1
            continue
        if limit is not None and len(chosen) >= limit:
            break
        chosen.append((m, src))
        counts[(cls, src)] += 1
    return chosen, counts, skipped


def add_dead_letter_commands(subparsers) -> None:
    """Add ``dead-letters replay`` to the ``loopline`` parser's subcommands."""
    d = subparsers.add_parser("dead-letters", help="replay dead letters after a fix")
    sub = d.add_subparsers(dest="dead_letters_command", required=True)
    r = sub.add_parser("replay", help="re-publish selected dead letters' original bytes to their source topic",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--dry-run", action="store_true", help="count what would be replayed; send nothing")
    r.add_argument("--class", dest="classes", action="append",
                   help="only this error class (repeatable), e.g. unknown_schema, orphan, bad_magic")
    r.add_argument("--source-topic", help="only dead letters from this topic")
    r.add_argument("--max", type=int, default=None, help="replay at most N records")
    r.add_argument("--idle", type=float, default=3.0, help="stop reading after S seconds without a record (default 3)")
    r.set_defaults(func=cmd_replay)


def cmd_replay(args) -> int:
    from confluent_kafka import Producer

    from loopline.streams.settings import Settings

    s = Settings()
    if not s.kafka_bootstrap:
        print("loopline: no Kafka to talk to: set LOOPLINE_KAFKA_BOOTSTRAP=host:port", file=sys.stderr)
        return EXIT_USAGE
    if args.max is not None and args.max < 1:
        print("loopline: --max must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    targets = set(s.topics.all()) - {s.topics.dead_letter}
    try:
        msgs = list(read(s.kafka_bootstrap, [s.topics.dead_letter], True, args.idle))
    except TailFailure as exc:
        print(f"loopline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    chosen, counts, skipped = select(msgs, set(args.classes or []) or None, args.source_topic, targets, args.max)
    verb = "would replay" if args.dry_run else "replaying"
    print(f"{len(msgs)} dead letters read; {verb} {len(chosen)}")
    for (cls, src), n in sorted(counts.items()):
        print(f"  {n:>7}  {cls or '(no class)':<24} -> {src}")
    for why, n in sorted(skipped.items()):
        print(f"  {n:>7}  skipped: {why}")
    if args.dry_run or not chosen:
        return 0
    failed: list[str] = []
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "enable.idempotence": True,
                  "partitioner": "murmur2_random"})

    def report(err, msg):
        if err is not None:
            failed.append(str(err))

    for m, target in chosen:
        p.produce(target, value=m.value(), key=m.key(), headers=replay_headers(m), on_delivery=report)
        p.poll(0)
    left = p.flush(30)
    sent = len(chosen) - len(failed) - left
    print(f"replayed {sent} of {len(chosen)}")
    if failed or left:
        print(f"loopline: {len(failed) + left} records were not delivered ({(failed or ['timeout'])[0]})",
              file=sys.stderr)
        return EXIT_USAGE
    return 0
