"""Worker log lines: plain text or JSON, the activity line at the default level (issue #22)."""
from __future__ import annotations

import io
import json
import logging
import logging.config

from loopline.streams.worker_logging import ACTIVITY_LOGGER, JsonFormatter, logging_config


def _emit(fmt: str) -> str:
    stream = io.StringIO()
    config = logging_config("warn", fmt)
    config["handlers"]["stderr"]["stream"] = stream
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(config)
        logging.getLogger("loopline.route").info("hidden at the default level")
        logging.getLogger("loopline.route").warning("a warning")
        logging.getLogger(ACTIVITY_LOGGER).info("last 60 s: 5 predictions routed")
    finally:
        root.handlers[:], root.level = saved
    return stream.getvalue()


def test_text_lines_are_plain_and_the_activity_line_shows_at_warn():
    out = _emit("text")
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert "WARNING loopline.route: a warning" in lines[0]
    assert "INFO loopline.activity: last 60 s: 5 predictions routed" in lines[1]
    assert "\x1b" not in out  # no colour or cursor codes


def test_json_lines_parse():
    lines = [json.loads(line) for line in _emit("json").splitlines()]
    assert [(r["level"], r["logger"]) for r in lines] == [("warning", "loopline.route"), ("info", "loopline.activity")]
    assert lines[1]["message"] == "last 60 s: 5 predictions routed"


def test_json_formatter_keeps_the_traceback_in_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exc"]
