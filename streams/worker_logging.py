"""How a running worker logs: plain or JSON lines, never terminal escape codes, and one
activity line per interval at the default level.

- :func:`logging_config` replaces mode's coloured console logging with one stderr handler:
  ``LOOPLINE_LOG_FORMAT=text`` (``time level logger: message``) or ``json`` (one object per
  line: ``ts``, ``level``, ``logger``, ``message``, ``exc`` when there is a traceback).
- :func:`faust_worker` builds Faust's ``Worker`` with that config and without its progress
  spinner when stdout is not a terminal (the spinner writes ``ESC[?25l`` cursor codes).
- :func:`register_activity_log` logs, every ``LOOPLINE_ACTIVITY_LOG_SECONDS``, what the
  worker did since the last line (predictions routed, records read, dead letters,
  corrections) and its current lag, on the ``loopline.activity`` logger, which is set to
  INFO so the line shows at the default level (warn) too.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

ACTIVITY_LOGGER = "loopline.activity"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; no PII is added (the message is what the code logged)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(level: str, fmt: str) -> dict:
    """A ``logging.config.dictConfig`` dict: one plain stderr handler, root at ``level``."""
    formatter = ({"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"loopline": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "loopline",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": {"WARN": "WARNING"}.get(level.upper(), level.upper()), "handlers": ["stderr"]},
        "loggers": {ACTIVITY_LOGGER: {"level": "INFO"}},
    }


def faust_worker(app, settings):
    """Faust's ``Worker`` for ``app`` with Loopline's logging and no spinner off a terminal."""
    from faust.worker import Worker as FaustWorker

    worker = FaustWorker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                         logging_config=logging_config(settings.log_level, settings.log_format))
    if not _isatty(worker.stdout):
        worker.spinner = None
    return worker


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _total(metric) -> float:
    return sum(s.value for family in metric.collect() for s in family.samples if s.name.endswith("_total"))


class ActivityLog:
    """Formats the activity line from the worker's metrics (deltas since the previous line)."""

    def __init__(self, worker) -> None:
        from loopline.streams.lag import ConsumerLagCollector

        self.worker = worker
        self.lag = ConsumerLagCollector(worker.app, worker.metrics.per_record.mean)
        self.last = self._totals()
        self.last_at = time.monotonic()

    def _totals(self) -> dict[str, float]:
        m = self.worker.metrics
        return {"predictions": _total(m.predictions), "records": _total(m.input_records),
                "dead_letters": _total(m.dead_letters), "corrections": _total(m.corrections)}

    def line(self) -> str:
        now, totals = time.monotonic(), self._totals()
        delta = {k: int(totals[k] - self.last[k]) for k in totals}
        seconds = max(now - self.last_at, 1e-9)
        self.last, self.last_at = totals, now
        offsets = self.lag.offsets()
        lag_records = sum(max(0, high - done) for high, done in offsets.values())
        lag_events = sum(round(max(0, high - done) * self.lag.events_per_record(topic))
                         for (topic, _), (high, done) in offsets.items())
        return (f"last {seconds:.0f} s: {delta['predictions']} predictions routed from {delta['records']} records, "
                f"{delta['dead_letters']} dead letters, {delta['corrections']} corrections; "
                f"lag {lag_records} records (~{lag_events} predictions) on {len(offsets)} partitions")


def register_activity_log(worker, app, interval: float) -> ActivityLog | None:
    """Log :meth:`ActivityLog.line` every ``interval`` seconds (0 = never)."""
    if interval <= 0:
        return None
    activity = ActivityLog(worker)
    log = logging.getLogger(ACTIVITY_LOGGER)

    @app.timer(interval=interval)
    async def log_activity() -> None:
        try:
            log.info(activity.line())
        except Exception:  # the activity line must never stop a worker
            log.exception("activity line failed")

    return activity
