"""Issue #19 item 5: emitted_at conversion is exact and never guesses a time zone."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from loopline.connectors.producer import normalise_prediction, to_millis

ZONES = ("UTC", "America/New_York", "Asia/Shanghai", "Australia/Lord_Howe", "Pacific/Kiritimati")


@pytest.fixture(params=ZONES)
def host_zone(request, monkeypatch):
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_naive_datetime_refused_naming_emitted_at(host_zone):
    with pytest.raises(ValueError, match="emitted_at is a naive datetime"):
        normalise_prediction({"event_id": "e1", "emitted_at": dt.datetime.now()})


def test_aware_datetimes_exact_in_any_host_zone(host_zone):
    exact = dt.datetime(2004, 4, 22, 3, 25, 29, 495000, tzinfo=dt.UTC)
    assert int(exact.timestamp() * 1000) == 1082604329494  # the float path the issue reproduced: 1 ms early
    assert to_millis(exact) == 1082604329495
    shanghai = exact.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert to_millis(shanghai) == 1082604329495
    assert to_millis(dt.datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=dt.UTC)) == -1  # floored, not truncated
    assert normalise_prediction({"emitted_at": exact})["emitted_at"] == 1082604329495
    assert to_millis(1082604329495) == 1082604329495


def test_every_millisecond_of_a_year_sample_is_exact(host_zone):
    base = dt.datetime(2004, 1, 1, tzinfo=dt.UTC)
    base_ms = 1072915200000
    for k in range(0, 366 * 86_400_000, 86_400_000 // 7 + 13):
        assert to_millis(base + dt.timedelta(milliseconds=k)) == base_ms + k
