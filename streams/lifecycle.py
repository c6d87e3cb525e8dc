"""How a worker process ends: a clean stop exits 0, a crash exits non-zero with one sentence.

Faust (via ``mode``) logs a crash as a long traceback and exits 1. A
supervisor (``loopline up``, systemd, Kubernetes) only needs to know *that*
the worker stopped and why in one line; the worker keeps no state a restart
would miss (tables come back from their changelogs, input from the committed
offsets). So :func:`run_faust_worker` prints ``loopline: the worker stopped:
<reason>; ...`` on stderr and exits with :data:`EXIT_WORKER_FAILED`.
Tracebacks of Faust's own crash logs are kept only at ``LOOPLINE_LOG_LEVEL=debug``.
"""
from __future__ import annotations

import logging
import sys

import faust

#: Exit code of a worker that stopped on an error (restart it); 0 = stopped on request.
EXIT_WORKER_FAILED = 3


class _OneLineCrashes(logging.Filter):
    """Drops the traceback of ERROR records from ``mode``/``faust`` loggers (keeps one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno >= logging.ERROR and record.name.split(".")[0] in ("mode", "faust"):
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} [{type(exc).__name__}: {one_line(exc)}]"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def one_line(exc: BaseException | None) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    if exc is None:
        return "unknown reason"
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def run_faust_worker(app: faust.App, settings) -> None:
    """Run ``app`` until SIGINT/SIGTERM (exit 0) or a crash (one sentence, exit 3).

    Logging as ``streams.worker_logging`` sets it up (text or JSON lines, no spinner off a terminal).
    """
    from faust.worker import Worker as FaustWorker

    from loopline.streams.worker_logging import _isatty, logging_config

    loglevel = settings.log_level
    debug = loglevel.lower() == "debug"

    class LooplineFaustWorker(FaustWorker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            if not debug:
                for handler in logger.handlers:
                    handler.addFilter(_OneLineCrashes())

    worker = LooplineFaustWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                                 logging_config=logging_config(loglevel, settings.log_format))
    if not _isatty(worker.stdout):
        worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        reason = worker.crash_reason
        print(f"loopline: the worker stopped: {type(reason).__name__ if reason else 'error'}: "
              f"{one_line(reason)}; restart it (tables recover from their changelogs, input resumes "
              f"from the committed offsets)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_WORKER_FAILED) from None
    except BaseException as exc:  # mode re-raises the crash reason after shutdown
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(f"loopline: the worker stopped: {type(exc).__name__}: {one_line(exc)}; restart it (tables "
              f"recover from their changelogs, input resumes from the committed offsets)",
              file=sys.stderr, flush=True)
        raise SystemExit(EXIT_WORKER_FAILED) from None
