"""``loopline audit-sink`` (the sink process) and ``loopline audit history|export`` (questions)."""
from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path


def _fail(message: str, code: int = 2) -> None:
    print(f"loopline: {message}", file=sys.stderr)
    raise SystemExit(code)


def _settings():
    from loopline.streams.settings import Settings

    return Settings()


def _install_stop_handlers() -> dict:
    import signal

    stop = {"now": False}

    def handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _open_db(settings):
    """The audit database for a read-only question; one sentence and exit 2 when there is none yet."""
    from loopline.connectors.audit.db import AuditDB, AuditDBError, sqlite_path
    from loopline.connectors.audit.migrations import current_version

    url = settings.audit_url
    try:
        if url.startswith("sqlite:") and not sqlite_path(url).is_file():
            _fail(f"no audit database at {sqlite_path(url)} (start `loopline audit-sink`, or set LOOPLINE_AUDIT_DB_URL)")
        db = AuditDB(url)
    except AuditDBError as exc:
        _fail(str(exc))
    try:
        current_version(db)
    except Exception:  # noqa: BLE001 - no schema_migrations table: the sink never ran against it
        db.close()
        _fail("the audit database has no audit tables yet (start `loopline audit-sink` against it first)")
    return db


def _iso_ms(text: str, flag: str) -> int:
    """Epoch ms of an ISO 8601 time (naive = UTC)."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{flag} {text!r} is not an ISO 8601 time such as 2026-12-01T04:00:00Z")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _when(ms) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def cmd_audit_sink(args) -> int:
    from loopline.connectors.audit.db import AuditDBError
    from loopline.connectors.audit.sink import AuditSink, serve_http
    settings = _settings()
    if not settings.kafka_bootstrap:
        _fail("no Kafka to read from: set LOOPLINE_KAFKA_BOOTSTRAP=host:port")
    stop = _install_stop_handlers()
    try:
        sink = AuditSink(settings)
    except AuditDBError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - a database that refuses the migrations: one sentence, exit 2
        _fail(f"cannot prepare the audit database: {type(exc).__name__}: {exc}".splitlines()[0])
    try:
        server = serve_http(sink, settings.web_host, settings.audit_port)
    except OSError as exc:
        _fail(f"cannot serve the audit sink's metrics on {settings.web_host}:{settings.audit_port}: {exc.strerror}")
    db_kind = sink.db.dialect
    print(f"audit sink: {', '.join(sorted(sink.role_of))} -> {db_kind}; "
          f"metrics http://{settings.web_host}:{settings.audit_port}/metrics", flush=True)
    try:
        sink.run(lambda: stop["now"])
    finally:
        server.shutdown()
    print(f"audit sink stopped: {sink.records_seen} records, {sink.rows_written} new rows", flush=True)
    return 0


def _print_history(h: dict) -> None:
    d = h["decision"]
    print(f"event {h['event_id']}")
    if d is None:
        print("  decision: none recorded")
    else:
        print(f"  decided  {_when(d['decided_at'])}  tier={d['tier']} reason={d['reason']} "
              f"policy={d['policy_version']} model={d['model_name']}@{d['model_version']} "
              f"predicted={d['predicted_label']} confidence={d['confidence']:.3f}"
              f"{' audited' if d['audited'] else ''}")
        print(f"  served   {d['served_label']} by {d['served_by']}")
    for t in h["review_tasks"]:
        print(f"  task     {_when(t['created_at'])}  {t['task_id']} queue={t['queue']} priority={t['priority']} "
              f"due={_when(t['due_by'])}")
    for a in h["answers"]:
        print(f"  answer   {_when(a['reviewed_at'])}  {a['correction_id']} reviewer={a['reviewer_id']} "
              f"action={a['action']} label={a['corrected_label'] or '-'} ({a['review_seconds']:.1f}s)")
    for x in h["training_examples"]:
        print(f"  training {_when(x['reviewed_at'])}  {x['correction_id']} effective_label={x['effective_label'] or '-'} "
              f"answers_so_far={x['answers_so_far']}")
    if not (d or h["review_tasks"] or h["answers"] or h["training_examples"]):
        print("  nothing recorded for this event_id")


def cmd_audit_history(args) -> int:
    from loopline.connectors.audit.queries import history

    db = _open_db(_settings())
    try:
        h = history(db, args.event_id)
    finally:
        db.close()
    if args.json:
        print(json.dumps(h, indent=2, sort_keys=True))
    else:
        _print_history(h)
    found = h["decision"] or h["review_tasks"] or h["answers"] or h["training_examples"]
    return 0 if found else 1


def cmd_audit_export(args) -> int:
    from loopline.connectors.audit.queries import export_csv

    start, end = _iso_ms(args.start, "--from"), _iso_ms(args.end, "--to")
    if end <= start:
        _fail(f"--to {args.end} is not after --from {args.start}")
    db = _open_db(_settings())
    try:
        n = export_csv(db, start, end, Path(args.out))
    except OSError as exc:
        _fail(f"cannot write {args.out}: {exc.strerror}")
    finally:
        db.close()
    if args.json:
        print(json.dumps({"rows": n, "out": str(args.out), "from_ms": start, "to_ms": end}))
    else:
        print(f"{n} rows (decisions with their answers, {args.start} .. {args.end}) written to {args.out}")
    return 0


def add_audit_commands(sub) -> None:
    """Add ``audit-sink`` and ``audit history|export`` to the ``loopline`` parser."""
    s = sub.add_parser("audit-sink", help="write decisions, tasks, answers, policy/model/drift events to the audit database")
    s.set_defaults(func=cmd_audit_sink)
    a = sub.add_parser("audit", help="questions to the audit database (LOOPLINE_AUDIT_DB_URL)")
    asub = a.add_subparsers(dest="audit_command", required=True)
    h = asub.add_parser("history", help="decision, review tasks, answers and training examples of one event")
    h.add_argument("event_id")
    h.add_argument("--json", action="store_true", help="print JSON instead of a table")
    h.set_defaults(func=cmd_audit_history)
    e = asub.add_parser("export", help="CSV of the decisions (with their answers) decided in a time range")
    e.add_argument("--from", dest="start", required=True, help="ISO 8601 start (inclusive), e.g. 2026-12-01T00:00:00Z")
    e.add_argument("--to", dest="end", required=True, help="ISO 8601 end (exclusive)")
    e.add_argument("--out", required=True, help="CSV file to write")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=cmd_audit_export)
