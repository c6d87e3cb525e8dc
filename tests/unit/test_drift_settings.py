"""Drift settings and the pinned reference file: bad values stop the worker at start with a sentence."""
from __future__ import annotations

import pytest

from loopline.processors.drift.baseline import BaselineBuilder
from loopline.processors.errors import ConfigError
from loopline.processors.testing import make_events
from loopline.streams.drift.extension import drift_config, load_references
from loopline.streams.settings import Settings


def test_drift_settings_from_environment_and_invalid_values_named(monkeypatch):
    from pydantic import ValidationError

    from loopline.connectors.cli.main import settings_error

    monkeypatch.setenv("LOOPLINE_DRIFT_BUCKET_MS", "2000")
    monkeypatch.setenv("LOOPLINE_DRIFT_IDLE_SECONDS", "12.5")
    s = Settings()
    assert s.drift_idle_seconds == 12.5
    assert drift_config(s).bucket_ms == 2000 and drift_config(s).reference_events == 5000
    for bad in ("soon", "0"):
        monkeypatch.setenv("LOOPLINE_DRIFT_BUCKET_MS", bad)
        with pytest.raises(ValidationError) as info:
            Settings()
        assert settings_error(info.value).startswith(f"invalid setting: LOOPLINE_DRIFT_BUCKET_MS={bad!r}")


def test_a_bad_setting_is_one_sentence_and_exit_2(monkeypatch, capsys):
    from loopline.connectors.cli.main import main

    monkeypatch.setenv("LOOPLINE_DRIFT_AGENT", "maybe")
    assert main(["topics", "create"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loopline: invalid setting: LOOPLINE_DRIFT_AGENT='maybe'") and "Traceback" not in err


def test_reference_file_one_profile_or_a_list(tmp_path):
    b = BaselineBuilder("fraud", "v1", 200)
    b.update(make_events(300, start_ms=0))
    one = tmp_path / "one.json"
    b.profile().save(one)
    assert [p.model_version for p in load_references(str(one))] == ["v1"]
    assert load_references(None) == []
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "x"}')
    with pytest.raises(ConfigError, match="bad.json"):
        load_references(str(bad))
    with pytest.raises(ConfigError, match="missing.json"):
        load_references(str(tmp_path / "missing.json"))


def test_check_drift_settings_names_the_bad_value(monkeypatch):
    from loopline.streams.drift.extension import check_drift_settings

    monkeypatch.setenv("LOOPLINE_DRIFT_POLICY", '{"fraud": {"mode": "retrain", "cooldown": 5}}')
    check_drift_settings(Settings(agents="route"))  # drift not run: nothing to check
    with pytest.raises(ConfigError, match="drift policy of 'fraud': unknown option"):
        check_drift_settings(Settings(agents="route,drift"))
    monkeypatch.delenv("LOOPLINE_DRIFT_POLICY")
    check_drift_settings(Settings(agents="route,drift"))
