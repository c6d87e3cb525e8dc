"""Pure parts of ``loopline tail`` / ``dead-letters replay`` / ``produce``: rows, filters, table lines, selection."""
from __future__ import annotations

import calendar

import pytest

from loopline.connectors.cli.main import build_parser, parse_time
from loopline.connectors.cli.replay import replay_headers, select
from loopline.connectors.cli.tail import dead_letter_row, keep, rows_of, table_header, table_line
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, PREDICTION, AvroSerde

SERDE = AvroSerde(SchemaCatalogue.load())


class Msg:
    """The part of confluent_kafka.Message the commands read."""

    def __init__(self, value, key=None, headers=None, topic="loopline.dead-letter", partition=0, offset=0):
        self._v, self._k, self._h, self._t, self._p, self._o = value, key, headers, topic, partition, offset

    def value(self):
        return self._v

    def key(self):
        return self._k

    def headers(self):
        return self._h

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o


def dl(value, cls, src="loopline.predictions", offset=0, extra=()):
    return Msg(value, b"k", [("trace", b"t-1"), ("loopline.error.class", cls.encode()),
                             ("loopline.error.message", b"m"), ("loopline.source.topic", src.encode()),
                             ("loopline.source.partition", b"2"), ("loopline.source.offset", b"9"), *extra],
               offset=offset)


def test_parse_time_accepts_millis_and_zoned_iso_only():
    assert parse_time(1_800_000_000_000) == 1_800_000_000_000
    assert parse_time("2027-01-15T08:00:00Z") == calendar.timegm((2027, 1, 15, 8, 0, 0)) * 1000
    assert parse_time("2027-01-15T09:00:00.250+01:00") == parse_time("2027-01-15T08:00:00Z") + 250
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2027-01-15T08:00:00")
    with pytest.raises(ValueError, match="neither"):
        parse_time("yesterday")


def test_produce_help_documents_fields_and_time_formats():
    text = build_parser()._subparsers._group_actions[0].choices["produce"].format_help()
    for word in ("event_id", "emitted_at", "confidence", "ISO 8601", "Epoch milliseconds", '"-"', "standard input"):
        assert word in text


def test_dead_letter_rows_and_filters():
    e = make_events(1)[0]
    row = dead_letter_row(dl(SERDE.encode(PREDICTION, e), "invalid"), SERDE)
    assert row["error_class"] == "invalid" and row["source"] == "loopline.predictions[2]@9"
    assert row["event_id"] == e["event_id"] and keep(row, e["model_name"], e["event_id"])
    assert not keep(row, "other-model", None)
    garbage = dead_letter_row(dl(b"junk", "bad_magic"), SERDE)
    assert garbage["bytes"] == 4 and "event_id" not in garbage and keep(garbage, None, "k")
    line = table_line("dead-letters", garbage)
    assert "bad_magic" in line and "loopline.predictions[2]@9" in line
    assert table_header("dead-letters").startswith("DL P@OFFSET")


def test_rows_of_undecodable_record_is_shown_not_skipped():
    rows = rows_of("corrections", Msg(b"junk", topic="loopline.corrections", offset=4), SERDE)
    assert rows[0]["offset"] == 4 and "undecodable" in rows[0]
    assert "undecodable" in table_line("corrections", rows[0])


def test_replay_selects_by_class_and_known_source_and_keeps_original_headers():
    c = {"correction_id": "c1", "event_id": "e1", "model_name": "fraud", "model_version": "v1",
         "reviewer_id": "r", "action": "approve", "corrected_label": "legit", "tier": "review",
         "reviewed_at": 1, "review_seconds": 1.0, "note": None, "source": "t"}
    msgs = [dl(b"junk", "bad_magic", offset=0), dl(SERDE.encode(CORRECTION, c), "orphan", "loopline.corrections", 1),
            dl(b"x", "bad_magic", "someone.elses.topic", 2), dl(b"y", "bad_magic", offset=3)]
    targets = {"loopline.predictions", "loopline.corrections"}
    chosen, counts, skipped = select(msgs, {"bad_magic"}, None, targets, None)
    assert [m.offset() for m, _ in chosen] == [0, 3] and counts == {("bad_magic", "loopline.predictions"): 2}
    assert skipped == {"source is not a Loopline topic": 1}
    chosen, counts, _ = select(msgs, None, "loopline.corrections", targets, None)
    assert [(m.offset(), t) for m, t in chosen] == [(1, "loopline.corrections")]
    chosen, _, _ = select(msgs, None, None, targets, 2)
    assert len(chosen) == 2
    h = replay_headers(msgs[0])
    assert ("trace", b"t-1") in h and ("loopline.replay.of", b"loopline.dead-letter/0/0") in h
    assert not any(k.startswith("loopline.error.") or k.startswith("loopline.source.") for k, _ in h)
