"""``loopline tail``: look at Loopline's topics without writing code.

    loopline tail decisions|decision-events|tasks|corrections|training|dead-letters
                  [--model M] [--event-id ID] [--json] [--from-beginning] [--max N] [--idle S]

Reads outside any consumer group (nothing is committed, no worker is disturbed).
Without ``--from-beginning`` it starts at the end and follows new records until
Ctrl-C, ``--max`` rows or ``--idle`` seconds without a record; with it, it reads
from the start and stops after ``--idle`` seconds (default 3) without a record.
``DecisionBatch`` records are expanded to one row per prediction. ``--json``
prints one JSON object per line (times as epoch milliseconds, as on the wire);
the default is a table with UTC times. Dead letters show their error headers,
the source topic/partition/offset and, with ``--json``, the original bytes in
base64. A record that cannot be decoded is shown as such, never skipped silently.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator

EXIT_USAGE = 2

KINDS = ("decisions", "decision-events", "tasks", "corrections", "training", "dead-letters")

COLUMNS: dict[str, list[tuple[str, str, int]]] = {  # kind -> (field, heading, width)
    "decisions": [("event_id", "EVENT_ID", 24), ("model", "MODEL", 10), ("tier", "TIER", 8),
                  ("confidence", "CONF", 6), ("predicted_label", "LABEL", 10), ("audited", "AUDIT", 5),
                  ("reason", "REASON", 26), ("decided_at", "DECIDED_AT (UTC)", 23)],
    "tasks": [("task_id", "TASK_ID", 30), ("model", "MODEL", 10), ("tier", "TIER", 8), ("priority", "PRIO", 4),
              ("confidence", "CONF", 6), ("reason", "REASON", 26), ("audit", "AUDIT", 5),
              ("due_by", "DUE_BY (UTC)", 23)],
    "corrections": [("correction_id", "CORRECTION_ID", 24), ("event_id", "EVENT_ID", 24), ("model", "MODEL", 10),
                    ("action", "ACTION", 8), ("corrected_label", "LABEL", 10), ("tier", "TIER", 8),
                    ("reviewer_id", "REVIEWER", 12), ("reviewed_at", "REVIEWED_AT (UTC)", 23)],
    "training": [("event_id", "EVENT_ID", 24), ("model", "MODEL", 10), ("tier", "TIER", 8),
                 ("predicted_label", "PREDICTED", 10), ("label", "LABEL", 10), ("correction_id", "CORRECTION_ID", 24)],
    "dead-letters": [("at", "DL P@OFFSET", 11), ("error_class", "CLASS", 22), ("source", "SOURCE", 30),
                     ("bytes", "BYTES", 6), ("failed_at", "FAILED_AT (UTC)", 23), ("message", "MESSAGE", 60)],
}
COLUMNS["decision-events"] = COLUMNS["decisions"]
TIME_FIELDS = {"decided_at", "due_by", "reviewed_at", "failed_at", "created_at"}


class TailFailure(Exception):
    """A sentence for the user; the command exits with code 2."""


def topics_of(kind: str, names) -> list[str]:
    return {"decisions": [names.decisions], "decision-events": [names.decision_events],
            "tasks": [names.review_analyst, names.review_escalation], "corrections": [names.corrections],
            "training": [names.training], "dead-letters": [names.dead_letter]}[kind]


def iso(ms) -> str:
    if not isinstance(ms, int):
        return "" if ms is None else str(ms)
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def headers_of(msg) -> dict[str, str]:
    return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in (msg.headers() or [])}


def rows_of(kind: str, msg, serde) -> list[dict]:
    """The rows one Kafka record shows as (a DecisionBatch is many rows)."""
    from loopline.processors.errors import DecodeError
    from loopline.processors.routing.router import iter_decisions

    if kind == "dead-letters":
        return [dead_letter_row(msg, serde)]
    try:
        if kind in ("decisions", "decision-events"):
            return [{**d, "model": d["model_name"]} for d in iter_decisions(serde, msg.value())]
        name, obj = serde.decode(msg.value())
    except DecodeError as exc:
        return [{"undecodable": str(exc), "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}]
    row = dict(obj)
    row["model"] = obj.get("model_name")
    if kind == "tasks":
        row["confidence"] = obj["prediction"]["confidence"]
    elif kind == "training":
        row["predicted_label"] = obj.get("prediction", {}).get("predicted_label")
    return [row]


def dead_letter_row(msg, serde) -> dict:
    h = headers_of(msg)
    value = msg.value() or b""
    row = {"offset": msg.offset(), "partition": msg.partition(), "error_class": h.get("loopline.error.class", ""),
           "error_type": h.get("loopline.error.type", ""), "message": h.get("loopline.error.message", ""),
           "source_topic": h.get("loopline.source.topic", ""),
           "source_partition": _int(h.get("loopline.source.partition")),
           "source_offset": _int(h.get("loopline.source.offset")),
           "failed_at": _int(h.get("loopline.failed_at")), "worker": h.get("loopline.worker", ""),
           "bytes": len(value), "key": (msg.key() or b"").decode("utf-8", "replace")}
    row["source"] = f"{row['source_topic']}[{row['source_partition']}]@{row['source_offset']}"
    row["at"] = f"{row['partition']}@{row['offset']}"
    if "loopline.source.batch_index" in h:
        row["batch_index"] = _int(h["loopline.source.batch_index"])
    if "loopline.replay.of" in h:
        row["replay_of"] = h["loopline.replay.of"]
    try:  # model and event id, when the original bytes still decode (for the filters)
        _, obj = serde.decode(value)
        row["model"] = obj.get("model_name") if isinstance(obj, dict) else None
        row["event_id"] = obj.get("event_id") if isinstance(obj, dict) else None
    except Exception:  # noqa: S110 (undecodable originals are what dead letters often are)
        pass
    row["value_base64"] = base64.b64encode(value).decode()
    return row


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def keep(row: dict, model: str | None, event_id: str | None) -> bool:
    if model is not None and row.get("model") != model:
        return False
    if event_id is not None and row.get("event_id") != event_id and row.get("key") != event_id:
        return False
    return True


def table_line(kind: str, row: dict) -> str:
    if "undecodable" in row:
        return f"(undecodable {row['topic']}[{row['partition']}]@{row['offset']}: {row['undecodable']})"
    cells = []
    for fieldname, _, width in COLUMNS[kind]:
        v = row.get(fieldname)
        if fieldname in TIME_FIELDS:
            v = iso(v)
        elif isinstance(v, float):
            v = f"{v:.3f}"
        elif isinstance(v, bool):
            v = "yes" if v else "no"
        text = "" if v is None else str(v)
        cells.append(text[:width].ljust(width))
    return "  ".join(cells).rstrip()


def table_header(kind: str) -> str:
    return "  ".join(h.ljust(w) for _, h, w in COLUMNS[kind]).rstrip()


def json_line(row: dict) -> str:
    out = {k: v for k, v in row.items() if k != "model"}
    return json.dumps(out, default=lambda b: base64.b64encode(b).decode() if isinstance(b, bytes) else str(b))


def read(bootstrap: str, topics: list[str], from_beginning: bool, idle: float | None,
         stop: Callable[[], bool] = lambda: False) -> Iterator:
    """Records of ``topics`` (all partitions, no group), until ``idle`` seconds pass without one."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"loopline-tail-{time.time_ns()}",
                  "enable.auto.commit": False, "socket.timeout.ms": 10000})
    try:
        assignment = []
        for t in topics:
            try:
                md = c.list_topics(t, timeout=10)
            except KafkaException as exc:
                raise TailFailure(f"cannot reach Kafka at {bootstrap} ({exc.args[0].str()})") from None
            tm = md.topics.get(t)
            if tm is None or tm.error is not None or not tm.partitions:
                raise TailFailure(f"topic {t} does not exist (run `loopline topics create`)")
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            assignment += [TopicPartition(t, p, start) for p in tm.partitions]
        c.assign(assignment)
        last = time.monotonic()
        while not stop():
            msgs = c.consume(500, 0.3)
            got = [m for m in msgs if m.error() is None]
            if got:
                last = time.monotonic()
                yield from got
            elif idle is not None and time.monotonic() - last >= idle:
                return
    finally:
        c.close()


def add_tail_commands(subparsers) -> None:
    """Add ``tail`` to the ``loopline`` parser's subcommands."""
    import argparse

    p = subparsers.add_parser("tail", help="print decisions, review tasks, corrections, training examples or "
                              "dead letters as a table or JSON lines",
                              description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--model", help="only rows of this model")
    p.add_argument("--event-id", help="only rows of this prediction event_id")
    p.add_argument("--json", action="store_true", help="one JSON object per line (epoch-millisecond times)")
    p.add_argument("--from-beginning", action="store_true", help="read the topic from its start")
    p.add_argument("--max", type=int, default=None, help="stop after N rows")
    p.add_argument("--idle", type=float, default=None,
                   help="stop after S seconds without a record (default 3 with --from-beginning, else follow)")
    p.set_defaults(func=cmd_tail)


def cmd_tail(args) -> int:
    from loopline.streams.confluent import build_serde
    from loopline.streams.settings import Settings

    settings = Settings()
    if not settings.kafka_bootstrap:
        print("loopline: no Kafka to talk to: set LOOPLINE_KAFKA_BOOTSTRAP=host:port", file=sys.stderr)
        return EXIT_USAGE
    if args.max is not None and args.max < 1:
        print("loopline: --max must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    idle = args.idle if args.idle is not None else (3.0 if args.from_beginning else None)
    serde = build_serde(settings)
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *a: stop.__setitem__("now", True))
    shown = 0
    try:
        for msg in read(settings.kafka_bootstrap, topics_of(args.kind, settings.topics), args.from_beginning, idle,
                        lambda: stop["now"]):
            for row in rows_of(args.kind, msg, serde):
                if not keep(row, args.model, args.event_id):
                    continue
                if shown == 0 and not args.json:
                    print(table_header(args.kind), flush=True)
                print(json_line(row) if args.json else table_line(args.kind, row), flush=True)
                shown += 1
                if args.max is not None and shown >= args.max:
                    return 0
    except TailFailure as exc:
        print(f"loopline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.json:
        print(f"({shown} row{'' if shown == 1 else 's'})", file=sys.stderr)
    return 0
