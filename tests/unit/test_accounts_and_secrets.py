"""Issue #19 item 6: password length, a data directory independent of the working directory, no public key in production."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from loopline.processors.errors import ConfigError
from loopline.processors.wire.names import DEV_KEY
from loopline.streams.secrets import default_data_dir, is_production, refuse_public_key
from loopline.streams.settings import Settings


def _cli(args: list[str], cwd, env: dict, stdin: str = "") -> subprocess.CompletedProcess:
    code = "import sys; from loopline.connectors.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, input=stdin, text=True,
                          capture_output=True, timeout=60)


@pytest.fixture
def clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_") and k != "XDG_DATA_HOME"}
    env["HOME"] = str(tmp_path / "home")
    return env


def test_short_password_refused_and_account_lands_in_the_stable_data_dir(tmp_path, clean_env):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    short = _cli(["reviewers", "add", "ana", "--role", "analyst", "--password-stdin"], a, clean_env, "x\n")
    assert short.returncode == 1
    assert short.stderr.startswith("loopline: the password has 1 characters; at least 12 are needed")
    ok = _cli(["reviewers", "add", "ana", "--role", "analyst", "--password-stdin"], a, clean_env,
              "correct horse battery\n")
    assert ok.returncode == 0, ok.stderr
    listed = _cli(["reviewers", "list"], b, clean_env)  # another working directory: the same accounts
    assert listed.returncode == 0 and listed.stdout.startswith("ana\tanalyst")
    assert (tmp_path / "home" / ".local" / "share" / "loopline" / "review.sqlite3").exists()
    assert not (a / ".loopline").exists() and not (b / ".loopline").exists()
    longer = dict(clean_env, LOOPLINE_REVIEW_MIN_PASSWORD_LENGTH="30")
    refused = _cli(["reviewers", "add", "bob", "--role", "analyst", "--password-stdin"], a, longer,
                   "correct horse battery\n")
    assert refused.returncode == 1 and "at least 30" in refused.stderr


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "loopline"
    monkeypatch.chdir(tmp_path)
    assert Settings().data_dir == tmp_path / "xdg" / "loopline"
    monkeypatch.setenv("LOOPLINE_DATA_DIR", "/srv/loopline")
    assert str(Settings().data_dir) == "/srv/loopline"


@pytest.mark.parametrize("bootstrap, production", [
    (None, False), ("127.0.0.1:9092", False), ("localhost:9092", False), ("[::1]:9092", False),
    ("kafka:9092", True), ("127.0.0.1:9092,broker-2.internal:9092", True),
])
def test_production_mode_is_a_broker_on_another_host(bootstrap, production):
    assert is_production(bootstrap) is production


def test_production_refuses_public_keys_unless_allowed():
    for key in (DEV_KEY, "change-me"):
        s = Settings(kafka_bootstrap="kafka:9092", snapshot_hmac_key=SecretStr(key))
        with pytest.raises(ConfigError, match="LOOPLINE_SNAPSHOT_HMAC_KEY is a public development value"):
            refuse_public_key(s)
        refuse_public_key(s.model_copy(update={"allow_dev_key": True}))
    refuse_public_key(Settings(kafka_bootstrap="kafka:9092", snapshot_hmac_key=SecretStr("s3cr3t-" * 5)))
    refuse_public_key(Settings(kafka_bootstrap="127.0.0.1:9092"))  # development: the embedded broker


def test_worker_command_refuses_the_dev_key_with_an_external_broker(tmp_path, clean_env):
    env = dict(clean_env, LOOPLINE_KAFKA_BOOTSTRAP="kafka.example.internal:9092")
    out = _cli(["worker"], tmp_path, env)
    assert out.returncode == 2 and "LOOPLINE_SNAPSHOT_HMAC_KEY is a public development value" in out.stderr
