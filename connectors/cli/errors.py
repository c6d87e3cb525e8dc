"""One error path for the whole ``loopline`` command line.

Every failure ends as ONE sentence on stderr (``loopline: ...``) and exit code 2; exit
code 1 is kept for "input rejected" (the commands return it themselves, e.g. ``produce``
with invalid lines). :func:`run` wraps a parsed command:

- before it runs, :func:`preflight` checks what would otherwise end in a wall of text:
  the Kafka broker must accept a connection within ``LOOPLINE_BROKER_TIMEOUT_SECONDS``
  (10 s; librdkafka would log a ``FAIL ... Connection refused`` line per retry), and the
  HTTP port a server is about to bind must be free;
- while it runs, :func:`sentence` turns the usual escapes into one sentence: no terminal
  (or closed stdin) for a prompt (``EOFError``), a reader that closed the pipe
  (``BrokenPipeError``, e.g. ``| head``), an address in use, a Loopline error, a bad
  setting; anything else is one sentence naming the exception type (the traceback
  only with ``LOOPLINE_LOG_LEVEL=debug``).

Every command that talks to Kafka uses the same default broker address,
:data:`DEFAULT_BOOTSTRAP`, when ``LOOPLINE_KAFKA_BOOTSTRAP`` is unset — except the
commands that start their own embedded broker (:data:`OWN_BROKER`).
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

EXIT_BAD_INPUT = 1
EXIT_FAILURE = 2
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
# commands that start the embedded broker when LOOPLINE_KAFKA_BOOTSTRAP is unset
OWN_BROKER = frozenset({"up", "broker", "demo", "bench"})
# commands that need the broker before they do anything (OWN_BROKER ones too, but `broker`,
# when LOOPLINE_KAFKA_BOOTSTRAP names one)
NEEDS_BROKER = frozenset({"topics", "worker", "produce", "model", "review-server", "drift", "tail",
                          "dead-letters", "audit-sink"})


class CommandFailed(Exception):
    """A failure already phrased as one sentence."""


def apply_default_bootstrap(command: str, environ=os.environ) -> None:
    """The one default broker address for every command that does not start its own broker."""
    if command not in OWN_BROKER and not environ.get("LOOPLINE_KAFKA_BOOTSTRAP"):
        environ["LOOPLINE_KAFKA_BOOTSTRAP"] = DEFAULT_BOOTSTRAP


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip().rsplit("://", 1)[-1]
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise CommandFailed(f"LOOPLINE_KAFKA_BOOTSTRAP={bootstrap!r} is not a host:port list")
        out.append((host.strip("[]"), int(port)))
    return out


def check_broker(bootstrap: str, timeout: float) -> None:
    """Raise :class:`CommandFailed` unless some bootstrap address accepts a TCP connection
    within ``timeout`` seconds (all addresses share the time)."""
    deadline = time.monotonic() + timeout
    reasons = []
    for host, port in _hosts(bootstrap):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=left):
                return
        except TimeoutError:
            reasons.append("no answer")
        except OSError as exc:
            reasons.append(exc.strerror or type(exc).__name__)
    why = ", ".join(sorted(set(reasons))) or "no answer"
    default = " (the default; set LOOPLINE_KAFKA_BOOTSTRAP=host:port)" if bootstrap == DEFAULT_BOOTSTRAP \
        else " (LOOPLINE_KAFKA_BOOTSTRAP)"
    raise CommandFailed(f"the Kafka broker at {bootstrap}{default} does not answer within {timeout:g} s ({why})")


def check_port_free(host: str, port: int, variable: str) -> None:
    """Raise :class:`CommandFailed` when ``host:port`` cannot be bound (e.g. a second worker)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind it
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandFailed(f"port {port} on {host} is already in use (another Loopline process?): "
                                    f"set {variable} to a free port") from None
            raise CommandFailed(f"cannot listen on {host}:{port} ({exc.strerror}): check {variable}") from None


def has_terminal() -> bool:
    """Whether a password prompt can reach a terminal (getpass uses /dev/tty, else stdin)."""
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return sys.stdin is not None and sys.stdin.isatty()


def preflight(args, settings) -> None:
    """The checks a command needs before it starts (see the module docstring)."""
    command = args.command
    if command == "produce" and not Path(args.file).is_file():
        return  # the command says which file is missing (input first, broker second)
    if command in ("worker", "up") or command in NEEDS_BROKER:
        # settings that cannot work are named before the broker is tried (a bad SASL/TLS
        # combination or a TLS file that does not load; a public HMAC key in production mode)
        from loopline.streams.kafka_security import kafka_security
        from loopline.streams.secrets import refuse_public_key

        kafka_security(settings).faust_credentials()
        if command in ("worker", "up"):
            refuse_public_key(settings)
    if command == "worker":
        from loopline.streams.app import build_policy
        from loopline.streams.drift.extension import check_drift_settings

        settings.agent_set  # noqa: B018 (validates LOOPLINE_AGENTS)
        build_policy(settings)
        check_drift_settings(settings)
        check_port_free(settings.web_host, settings.web_port, "LOOPLINE_WEB_PORT")
    if command == "review-server":
        port = getattr(args, "port", None) or settings.review_port
        check_port_free(getattr(args, "host", None) or settings.review_host, port, "LOOPLINE_REVIEW_PORT (or --port)")
    if command == "reviewers" and getattr(args, "reviewers_cmd", None) == "add" and not args.password_stdin \
            and not has_terminal():
        raise CommandFailed("no terminal to ask for the password: pipe it in with --password-stdin")
    if command == "review" and not os.environ.get("LOOPLINE_REVIEWER_PASSWORD") and not has_terminal():
        raise CommandFailed("no terminal to ask for the password: set LOOPLINE_REVIEWER_PASSWORD")
    if command == "up":
        check_port_free(settings.web_host, settings.web_port, "LOOPLINE_WEB_PORT")
    if (command in NEEDS_BROKER or command in OWN_BROKER - {"broker"}) and settings.kafka_bootstrap:
        check_broker(settings.kafka_bootstrap, settings.broker_timeout_seconds)


def sentence(exc: BaseException) -> tuple[str, int]:
    """One sentence and the exit code for an exception that escaped a command."""
    from pydantic import ValidationError

    from loopline.processors.errors import LooplineError

    if isinstance(exc, CommandFailed):
        return str(exc), EXIT_FAILURE
    if isinstance(exc, EOFError):
        return ("no input to read: stdin is closed or not a terminal (for a password use a terminal, "
                "or --password-stdin with the password on stdin)"), EXIT_FAILURE
    if isinstance(exc, BrokenPipeError):
        return "the output was closed before everything was written (broken pipe)", EXIT_FAILURE
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"address already in use ({exc.strerror}): choose a free port", EXIT_FAILURE
    if isinstance(exc, ValidationError):
        bad = "; ".join(f"LOOPLINE_{'_'.join(str(x) for x in e['loc']).upper()}={e.get('input')!r}: {e['msg']}"
                        for e in exc.errors())
        return f"invalid setting: {bad}", EXIT_FAILURE
    if isinstance(exc, (LooplineError, ValueError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__, EXIT_FAILURE
    first = str(exc).splitlines()[0] if str(exc) else ""
    return (f"unexpected {type(exc).__name__}{': ' + first if first else ''} "
            f"(run with LOOPLINE_LOG_LEVEL=debug for the traceback)"), EXIT_FAILURE


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run(args, command: Callable[[object], int | None]) -> int:
    """Run ``command(args)`` through the one error path; returns the exit code."""
    from loopline.streams.settings import Settings

    apply_default_bootstrap(args.command)
    try:
        preflight(args, Settings())
        return command(args) or 0
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise  # the commands' own fail(): already one sentence and a code
    except BaseException as exc:  # noqa: BLE001 - the one place every failure becomes a sentence
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
        message, code = sentence(exc)
        if os.environ.get("LOOPLINE_LOG_LEVEL", "").lower() == "debug":
            traceback.print_exc()
        try:
            print(f"loopline: {message}", file=sys.stderr)
        except (BrokenPipeError, OSError):
            pass
        return code
