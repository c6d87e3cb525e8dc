"""``loopline`` command line. Every failure ends with one sentence and a non-zero exit code."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


def _settings(**overrides):
    from loopline.streams.settings import Settings

    s = Settings()
    return s.model_copy(update=overrides) if overrides else s


def fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"loopline: {message}", file=sys.stderr)
    raise SystemExit(code)


def _require_bootstrap(settings) -> None:
    if not settings.kafka_bootstrap:
        fail("no Kafka to talk to: set LOOPLINE_KAFKA_BOOTSTRAP=host:port, or use `loopline up` "
             "to start the embedded broker")


# ---------------------------------------------------------------- commands
def cmd_broker(args) -> int:
    from loopline.connectors.broker import EmbeddedBroker, create_topics
    from loopline.processors.errors import BrokerError

    settings = _settings()
    port = args.port if args.port is not None else settings.broker_port
    stop = _install_stop_handlers()  # before anything is announced, so an early SIGTERM still stops cleanly
    try:
        broker = EmbeddedBroker(settings.broker_host, port, storage_dir=_broker_storage(settings)).start()
    except BrokerError as exc:
        fail(str(exc))
    try:
        created = create_topics(broker.bootstrap, settings.topics.all(), settings.partitions,
                                compacted=settings.topics.compacted())
        print(f"embedded broker on {broker.bootstrap} ({len(created)} topics created, "
              f"{settings.partitions} partitions each); {_storage_line(broker)}; log: {broker.log_path}", flush=True)
        print(f"export LOOPLINE_KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
        while not stop["now"]:
            time.sleep(0.1)
    except BrokerError as exc:
        fail(str(exc))
    finally:
        broker.stop()
        print("embedded broker stopped", flush=True)
    return 0


def _kafka_security(settings) -> dict:
    """The librdkafka security entries of ``settings``; a bad combination ends the command (exit 2)."""
    from loopline.processors.errors import ConfigError
    from loopline.streams.kafka_security import kafka_security

    try:
        return kafka_security(settings).librdkafka()
    except ConfigError as exc:
        fail(str(exc))


def _install_stop_handlers() -> dict:
    stop = {"now": False}

    def handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_topics(args) -> int:
    from loopline.connectors.broker import create_topics
    from loopline.processors.errors import BrokerError

    settings = _settings()
    _require_bootstrap(settings)
    try:
        created = create_topics(settings.kafka_bootstrap, settings.topics.all(), settings.partitions,
                                settings.replication_factor, compacted=settings.topics.compacted(),
                                security=_kafka_security(settings))
    except BrokerError as exc:
        fail(str(exc))
    print(f"{len(created)} topics created, {len(settings.topics.all()) - len(created)} existed already")
    return 0


def cmd_worker(args) -> int:
    from loopline.processors.errors import LooplineError
    from loopline.streams.app import run_worker

    settings = _settings()
    _require_bootstrap(settings)
    try:
        settings.agent_set
        from loopline.streams.app import build_policy
        from loopline.streams.drift.extension import check_drift_settings

        build_policy(settings)
        check_drift_settings(settings)
        from loopline.streams.control import ControlTokens
        from loopline.streams.kafka_security import kafka_security

        kafka_security(settings).faust_credentials()  # also loads the TLS files: a bad one is a sentence here

        ControlTokens.from_settings(settings)
        from loopline.streams.secrets import refuse_public_key

        refuse_public_key(settings)
    except (ValueError, LooplineError) as exc:
        fail(str(exc))
    run_worker(settings)
    return 0


def cmd_up(args) -> int:
    from loopline.connectors.broker import EmbeddedBroker, create_topics
    from loopline.processors.errors import BrokerError

    settings = _settings()
    if "LOOPLINE_AGENTS" not in os.environ:  # one process runs everything, including the (single) learner
        settings = settings.model_copy(update={"agents": "route,feedback,drift,learn"})
    broker = None
    if not settings.kafka_bootstrap and settings.kafka_security_protocol != "PLAINTEXT":
        fail("the embedded broker speaks PLAINTEXT only: unset LOOPLINE_KAFKA_SECURITY_PROTOCOL "
             "or set LOOPLINE_KAFKA_BOOTSTRAP to a secured cluster")
    from loopline.processors.errors import ConfigError
    from loopline.streams.secrets import refuse_public_key

    try:
        refuse_public_key(settings)  # an external broker configured: production mode
    except ConfigError as exc:
        fail(str(exc))
    if not settings.kafka_bootstrap:
        try:
            broker = EmbeddedBroker(settings.broker_host, settings.broker_port,
                                    storage_dir=_broker_storage(settings)).start()
        except BrokerError as exc:
            fail(str(exc))
        settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    try:
        create_topics(settings.kafka_bootstrap, settings.topics.all(), settings.partitions,
                      settings.replication_factor, compacted=settings.topics.compacted(),
                      security=_kafka_security(settings))
        from loopline.connectors.review.embedded import start_review_server

        review, _ = start_review_server(settings)
        print(f"Loopline is up. Kafka: {settings.kafka_bootstrap}"
              f"{f' (embedded; {_storage_line(broker)})' if broker else ''}\n"
              f"  metrics  http://{settings.web_host}:{settings.web_port}/metrics\n"
              f"  health   http://{settings.web_host}:{settings.web_port}/healthz  /readyz\n"
              f"  review   {review.url}  (add reviewers with `loopline reviewers add NAME --role analyst`)\n"
              f"  data     {Path(settings.data_dir).resolve()}  (LOOPLINE_DATA_DIR; the same for every command)\n"
              f"  send predictions: LOOPLINE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} loopline produce FILE.jsonl",
              flush=True)
        watch = _broker_watch(broker, settings) if broker else None
        try:
            code = _supervise_worker(settings, watch)
        finally:
            review.stop()
        if code:
            fail("the worker kept crashing and was not restarted again (see the lines above)", code)
    except BrokerError as exc:
        fail(str(exc))
    finally:
        if broker:
            broker.stop()
    return 0


PRODUCE_HELP = """\
Input: one JSON object per line (JSON lines), one prediction each; blank lines are skipped.
FILE "-" reads standard input.

Fields (the PredictionEvent schema; `loopline schemas --type PredictionEvent`):
  event_id              string, required: unique per prediction; the key of everything downstream
  model_name            string, required
  model_version         string, required
  emitted_at            required: when the model predicted. Epoch milliseconds (integer, UTC), or an
                        ISO 8601 string with a time zone, e.g. "2026-12-01T04:30:00Z" or
                        "2026-12-01T05:30:00.250+01:00" (a string without zone is refused).
                        At most LOOPLINE_MAX_CLOCK_SKEW_SECONDS in the future.
  predicted_label       string, required
  confidence            number in [0, 1], required
  features_numeric      object of finite numbers (default {})
  features_categorical  object of strings (default {})
  class_probabilities   object label -> probability, or null (default null)
  risk                  object of numbers (e.g. {"amount": 1200.0}), or null
  context               object of strings, or null
  trace_id              string or null
Unknown fields are refused. Each bad line is reported as FILE:LINE: reason on stderr and skipped.
Exit code: 0 all sent, 1 some lines rejected or not delivered, 2 usage error.

Example line:
  {"event_id": "e-1", "model_name": "fraud", "model_version": "v3", "emitted_at": "2026-12-01T04:30:00Z",
   "predicted_label": "legit", "confidence": 0.93, "features_numeric": {"amount": 42.0}}
"""


def parse_time(value):
    """``emitted_at`` from JSON: epoch milliseconds as is, an ISO 8601 string with a zone as milliseconds."""
    if not isinstance(value, str):
        return value
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"emitted_at: {value!r} is neither epoch milliseconds nor an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"emitted_at: {value!r} has no time zone (add Z or +hh:mm)")
    return round(parsed.timestamp() * 1000)


def _broker_storage(settings) -> Path | None:
    """The embedded broker's data folder (``LOOPLINE_BROKER_STORAGE=disk``), or None for memory."""
    return Path(settings.data_dir) / "broker" if settings.broker_storage == "disk" else None


def _storage_line(broker) -> str:
    if broker.durable:
        return f"data kept in {broker.storage_dir}"
    return "memory storage: everything is lost when it stops (LOOPLINE_BROKER_STORAGE=disk keeps it)"


def _broker_watch(broker, settings):
    """A check for ``_supervise_worker``: start the embedded broker again when it stopped.

    Same address. With disk storage it is started again with its data and the same cluster id;
    the worker and the review server reconnect by themselves. With memory storage it kept nothing:
    the worker is killed first (stopping cleanly it would write its old state into the new broker),
    then the broker is started and the topics created, then the worker starts afresh; the review
    server notices the new cluster id by itself and retires the tasks of the old broker.
    """
    import threading

    from loopline.connectors.broker import create_topics
    from loopline.processors.errors import BrokerError

    pending = threading.Event()  # a restart was asked for and has not started the broker yet

    def start_broker() -> None:
        pending.clear()
        broker.stop()  # closes the old log handle
        for attempt in range(5):
            try:
                broker.start()
                break
            except BrokerError as exc:
                print(f"loopline up: the broker did not start ({exc}); retrying", flush=True)
                time.sleep(2 ** attempt)
        else:
            print("loopline up: the embedded broker could not be started again; the worker will fail",
                  flush=True)
            return
        create_topics(settings.kafka_bootstrap, settings.topics.all(), settings.partitions,
                      settings.replication_factor, compacted=settings.topics.compacted())

    def check(supervisor) -> None:
        if broker.running or pending.is_set():
            return  # running, or being started again by the supervisor thread
        pending.set()
        if broker.durable:  # the data is on disk: the worker and the review server reconnect by themselves
            print(f"loopline up: the embedded broker stopped (exit code {broker.stopped_code()}); starting it again "
                  f"on {broker.bootstrap} with its data ({broker.storage_dir})", flush=True)
            threading.Thread(target=start_broker, name="broker-restart", daemon=True).start()
            return
        print(f"loopline up: the embedded broker stopped (exit code {broker.stopped_code()}); starting it again "
              f"on {broker.bootstrap}. It kept everything in memory: topics, offsets, tables and waiting review "
              f"tasks are gone", flush=True)
        supervisor.restart("the embedded broker was started again", hard=True, before_start=start_broker)

    return check


def _supervise_worker(settings, watch=None) -> int:
    """Run ``loopline worker`` as a child, restarted when it exits, until SIGINT/SIGTERM (0) or the cap (3).

    ``watch(supervisor)``, when given, runs about twice a second (``loopline up``: the broker watch).
    """
    import threading

    from loopline.connectors.processes import loopline_exe, settings_env
    from loopline.connectors.supervise import Supervisor

    stop = _install_stop_handlers()
    supervisor = Supervisor([loopline_exe(), "worker"], env=settings_env(settings), name="worker")
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()), name="supervisor", daemon=True)
    thread.start()
    checked = 0.0
    while thread.is_alive() and not stop["now"]:
        time.sleep(0.1)
        if watch is not None and time.monotonic() - checked >= 0.5:
            checked = time.monotonic()
            watch(supervisor)
    supervisor.stop()
    thread.join(60)
    return 3 if result and result[0] else 0


def cmd_produce(args) -> int:
    from loopline.connectors.producer import PredictionProducer

    settings = _settings()
    _require_bootstrap(settings)
    from_stdin = args.file == "-"
    path = Path(args.file)
    if not from_stdin and not path.is_file():
        fail(f"{path} does not exist or is not a file")
    label = "<stdin>" if from_stdin else str(path)
    bad = good = 0
    try:
        producer = PredictionProducer(settings, batch_size=args.batch_size)
    except ValueError as exc:
        fail(str(exc))
    fh = sys.stdin if from_stdin else path.open(encoding="utf-8")
    with producer:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as exc:
                    print(f"{label}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})", file=sys.stderr)
                    bad += 1
                    continue
                try:
                    if isinstance(event, dict) and "emitted_at" in event:
                        event["emitted_at"] = parse_time(event["emitted_at"])
                    producer.send(event)
                    good += 1
                except ValueError as exc:
                    print(f"{label}:{lineno}: {exc}", file=sys.stderr)
                    bad += 1
        finally:
            if not from_stdin:
                fh.close()
    undelivered = producer.failed_events
    print(f"{good} predictions sent to {settings.topics.predictions}, {bad} lines rejected"
          f"{f', {undelivered} not delivered' if undelivered else ''}")
    return EXIT_BAD_INPUT if bad or undelivered else 0


def cmd_demo(args) -> int:
    from loopline.connectors.demo.run import run_demo

    return run_demo(args)


def cmd_bench(args) -> int:
    from loopline.connectors.bench.run import run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loopline", description="Human-in-the-loop feedback pipeline for ML models.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("broker", help="run the embedded Kafka-compatible broker and create every topic")
    b.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: LOOPLINE_BROKER_PORT or free)")
    b.set_defaults(func=cmd_broker)
    t = sub.add_parser("topics", help="manage Loopline topics")
    t.add_argument("action", choices=["create"], help="create: create every Loopline topic and wait for the result")
    t.set_defaults(func=cmd_topics)
    w = sub.add_parser("worker", help="run a worker against LOOPLINE_KAFKA_BOOTSTRAP")
    w.set_defaults(func=cmd_worker)
    u = sub.add_parser("up", help="embedded broker (unless LOOPLINE_KAFKA_BOOTSTRAP is set) + topics + worker")
    u.set_defaults(func=cmd_up)
    pr = sub.add_parser("produce", help="send predictions from a JSON-lines file (or - for stdin)",
                        description=PRODUCE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("file", help='JSON-lines file of predictions, or "-" for standard input')
    pr.add_argument("--batch-size", type=int, default=None, help="predictions per Kafka record (1 = single events)")
    pr.set_defaults(func=cmd_produce)
    d = sub.add_parser("demo", help="end-to-end demo on the embedded broker with simulated traffic and reviewers")
    d.add_argument("--events", type=int, default=200_000)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--duration", type=float, default=None, help="seconds to spread the traffic over")
    d.add_argument("--out", default="out/demo", help="report folder")
    d.add_argument("--keep-running", action="store_true", help="leave broker and worker up after the report")
    d.add_argument("--reviewer-speedup", type=float, default=720.0,
                   help="simulated reviewers work on a clock this many times faster than the event time decided "
                        "(default 720: the six reviewers' 1,140 answers per simulated hour are about 6%% of "
                        "the demo's events at ~4,000 events/s)")
    d.set_defaults(func=cmd_demo)
    be = sub.add_parser("bench", help="throughput benchmark on the embedded broker")
    be.add_argument("--events", type=int, default=200_000)
    be.add_argument("--partitions", type=int, default=4)
    be.add_argument("--quick", action="store_true")
    be.add_argument("--json", action="store_true", help="print one JSON object per row instead of the table")
    be.add_argument("--broker-port", type=int, default=0, help="port of the bench's embedded broker (0: a free one)")
    be.add_argument("--trial-seconds", type=float, default=60.0,
                    help="length of each paced trial of the deployment rows (--quick: 15)")
    be.add_argument("--answer-share", type=float, default=0.10,
                    help="share of review tasks the simulated reviewers answer in the default-deployment row")
    be.set_defaults(func=cmd_bench)
    from loopline.connectors.audit.cli import add_audit_commands
    from loopline.connectors.cli.drift import add_drift_commands
    from loopline.connectors.cli.model import add_model_commands
    from loopline.connectors.cli.policy import add_policy_commands
    from loopline.connectors.review.cli import add_review_commands

    add_review_commands(sub)
    add_policy_commands(sub)
    add_model_commands(sub)
    add_drift_commands(sub)
    add_audit_commands(sub)
    from loopline.connectors.cli.replay import add_dead_letter_commands
    from loopline.connectors.cli.schemas import add_schemas_commands
    from loopline.connectors.cli.tail import add_tail_commands

    add_schemas_commands(sub)
    add_tail_commands(sub)
    add_dead_letter_commands(sub)
    from loopline.connectors.cli.help import describe_all

    return describe_all(p)


def settings_error(exc) -> str:
    """One sentence per invalid LOOPLINE_* variable (pydantic's ValidationError)."""
    parts = []
    for err in exc.errors():
        name = "LOOPLINE_" + "_".join(str(x) for x in err["loc"]).upper()
        parts.append(f"{name}={err.get('input')!r}: {err['msg']}")
    return "invalid setting: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from loopline.connectors.cli.errors import run

    args = build_parser().parse_args(argv)
    try:
        return run(args, args.func)
    except ValidationError as exc:
        print(f"loopline: {settings_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
