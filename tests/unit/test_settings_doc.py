"""docs/configuration.md is generated from the settings' declarations and cannot go stale."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from loopline.connectors.review.settings import ReviewSettings
from loopline.streams.settings import Settings
from loopline.streams.settings_doc import REVIEW_SERVER_DERIVED, env_name, render_markdown

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "configuration.md"
REGENERATE = "python -m loopline.streams.settings_doc > docs/configuration.md"


def test_configuration_page_is_the_generated_one():
    assert PAGE.read_text(encoding="utf-8") == render_markdown(), f"docs/configuration.md is stale: run `{REGENERATE}`"


def test_every_settings_field_has_a_description_and_a_row():
    lines = render_markdown().splitlines()
    for name, info in Settings.model_fields.items():
        assert (info.description or "").strip(), f"Settings.{name} has no description"
        rows = [line for line in lines if line.startswith(f"| `{env_name(name)}` |")]
        assert len(rows) == 1, f"{env_name(name)} is not listed once"
        assert rows[0].rsplit(" | ", 1)[-1].strip(" |"), f"{env_name(name)}: empty meaning cell"


def test_secrets_are_never_printed():
    page = render_markdown()
    secrets = [n for n, i in Settings.model_fields.items() if i.annotation is SecretStr]
    assert secrets, "expected at least the snapshot HMAC key to be a secret"
    for name in secrets:
        default = Settings.model_fields[name].default
        if default.get_secret_value():  # an empty default has nothing to leak
            assert default.get_secret_value() not in page
        row = next(line for line in page.splitlines() if line.startswith(f"| `{env_name(name)}` |"))
        assert "`(secret)`" in row


def test_every_review_server_setting_is_documented():
    """Each ReviewSettings field is read from a ``review_*`` Settings field (listed with its
    variable) or named in REVIEW_SERVER_DERIVED: a new review-server knob fails here."""
    derived = {name for name, _ in REVIEW_SERVER_DERIVED}
    fields = {f.name for f in dataclasses.fields(ReviewSettings)}
    for name in fields:
        from_settings = f"review_{name}" in Settings.model_fields
        assert from_settings or name in derived, f"ReviewSettings.{name} is not documented"
        assert not (from_settings and name in derived), f"ReviewSettings.{name} documented twice"
    assert derived <= fields, f"REVIEW_SERVER_DERIVED names fields ReviewSettings no longer has: {derived - fields}"


def test_module_prints_the_page():
    out = subprocess.run([sys.executable, "-m", "loopline.streams.settings_doc"], capture_output=True,
                         text=True, timeout=60, check=True, cwd=REPO).stdout
    assert out == render_markdown()
