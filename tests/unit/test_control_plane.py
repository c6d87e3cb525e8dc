"""Who may change a running worker: bearer tokens on every state-changing request (issue #24).

The worker's real Faust web app (its aiohttp application, with the control middleware and
the real views) is served by aiohttp's in-process test server on the loopback interface; no
broker runs, so the worker's Kafka output is captured in a list instead of published (the
policy event is still encoded with the real serde and decoded back).
"""
from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from loopline.processors.errors import ConfigError
from loopline.processors.wire.names import POLICY_EVENT
from loopline.streams.app import Worker
from loopline.streams.control import DISABLED, READ_METHODS, ControlTokens
from loopline.streams.settings import Settings

OPS = "0123456789abcdef-ops"
CI = "fedcba9876543210-ci"
NEW_POLICY = """version = "control-test-2"
[defaults.tiers.auto]
min_confidence = 0.0
audit_rate = 0.0
"""


def _worker(tmp_path, **kw) -> tuple[Worker, list]:
    w = Worker(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, agents="route", **kw))
    published: list = []

    async def capture(outputs) -> None:
        published.extend(outputs)

    w.publish = capture
    return w, published


def _run(worker: Worker, requests: list[tuple[str, str, dict, str]]) -> list[tuple[int, dict, dict]]:
    """Send (method, path, headers, body) requests in order; (status, headers, json) each."""
    async def go():
        out = []
        async with TestClient(TestServer(worker.app.web.web_app)) as client:
            for method, path, headers, body in requests:
                r = await client.request(method, path, headers=headers, data=body)
                try:
                    payload = await r.json(content_type=None)
                except ValueError:
                    payload = {}
                out.append((r.status, dict(r.headers), payload))
        return out
    return asyncio.run(go())


def _events(worker: Worker, published: list) -> list[dict]:
    out = []
    for o in published:
        name, event = worker.serde.decode(o.value)
        assert name == POLICY_EVENT and o.role == "policy_events"
        out.append(event)
    return out


def test_tokens_parse_check_and_refuse_bad_settings(tmp_path):
    tokens = ControlTokens.parse(f"ops:{OPS}, ci:{CI}")
    assert tokens.names == ("ops", "ci")
    assert tokens.check(f"Bearer {CI}").actor == "ci"
    assert tokens.check(f"bearer {OPS}").actor == "ops"
    assert tokens.check(None).status == 401 and tokens.check(f"Basic {OPS}").status == 401
    assert tokens.check(f"Bearer {OPS}x").status == 403 and tokens.check(f"Bearer {OPS[:-1]}").status == 403
    assert ControlTokens.parse("").check(f"Bearer {OPS}").error == DISABLED
    for bad in ("ops", f"ops:{OPS},ops:{CI}", "ops:short", f":{OPS}"):
        with pytest.raises(ConfigError) as err:
            ControlTokens.parse(bad)
        assert OPS not in str(err.value) and CI not in str(err.value)  # a message never echoes a token
    f = tmp_path / "tokens"
    f.write_text(f"# rotated 2026-12-01\nci:{CI}\n\n")
    both = ControlTokens.from_settings(Settings(control_tokens=SecretStr(f"ops:{OPS}"), control_token_file=f))
    assert both.names == ("ops", "ci")
    with pytest.raises(ConfigError, match="twice"):
        ControlTokens.from_settings(Settings(control_tokens=SecretStr(f"ci:{OPS}"), control_token_file=f))
    with pytest.raises(ConfigError, match="cannot read"):
        ControlTokens.from_settings(Settings(control_token_file=tmp_path / "missing"))


def test_unauthenticated_or_wrong_token_changes_nothing_right_token_names_the_actor(tmp_path, caplog):
    w, published = _worker(tmp_path, control_tokens=SecretStr(f"ops:{OPS},ci:{CI}"))
    before = w.policy.version
    caplog.set_level(logging.INFO, logger="loopline.policy")
    (no_header, wrong, basic, after_refusals, right, after, metrics, health) = _run(w, [
        ("POST", "/policy", {}, NEW_POLICY),
        ("POST", "/policy", {"Authorization": f"Bearer {OPS}-not"}, NEW_POLICY),
        ("POST", "/policy", {"Authorization": f"Basic {OPS}"}, NEW_POLICY),
        ("GET", "/policy", {}, ""),
        ("POST", "/policy", {"Authorization": f"Bearer {CI}"}, NEW_POLICY),
        ("GET", "/policy", {}, ""),
        ("GET", "/metrics", {}, ""),
        ("GET", "/healthz", {}, ""),
    ])
    assert no_header[0] == 401 and no_header[1]["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in no_header[2]["error"]
    assert wrong[0] == 403 and "not valid" in wrong[2]["error"]
    assert basic[0] == 401
    assert after_refusals[0] == 200 and after_refusals[2]["version"] == before  # nothing changed...
    assert after_refusals[2]["recent_changes"] == []
    # ...and the refusals published no policy event
    assert right[0] == 200 and right[2]["new_version"] == "control-test-2", right
    assert after[2]["version"] == "control-test-2" and w.policy.version == "control-test-2"
    events = _events(w, published)
    assert [(e["kind"], e["source"], e["actor"], e["new_version"]) for e in events] == [
        ("replace", "http", "ci", "control-test-2")]
    assert after[2]["recent_changes"][-1]["actor"] == "ci"
    assert any("by ci" in r.getMessage() and "control-test-2" in r.getMessage() for r in caplog.records)
    assert metrics[0] == 200 and health[0] == 200
    text = generate_metrics(w)
    assert 'loopline_control_refusals_total{reason="unauthenticated"} 2.0' in text
    assert 'loopline_control_refusals_total{reason="forbidden"} 1.0' in text


def test_no_token_configured_refuses_every_change(tmp_path):
    w, published = _worker(tmp_path)
    before = w.policy.version
    (anon, bearer, read) = _run(w, [
        ("POST", "/policy", {}, NEW_POLICY),
        ("POST", "/policy", {"Authorization": f"Bearer {OPS}"}, NEW_POLICY),
        ("GET", "/policy", {}, ""),
    ])
    assert anon[0] == bearer[0] == 403 and bearer[2]["error"] == DISABLED
    assert read[0] == 200 and read[2]["version"] == before and published == []


def test_every_state_changing_route_of_a_full_worker_is_guarded(tmp_path):
    """Whatever views the extensions register, no method but GET/HEAD/OPTIONS passes without a token."""
    w = Worker(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, agents="route,feedback,drift,learn",
                        control_tokens=SecretStr(f"ops:{OPS}")))
    routes = {(r.method, r.resource.canonical) for r in w.app.web.web_app.router.routes()}
    writes = sorted((m, p) for m, p in routes if m not in READ_METHODS)
    assert ("POST", "/policy") in writes
    reads = sorted((m, p) for m, p in routes if m == "GET")
    results = _run(w, [(m, p, {}, "") for m, p in writes] + [(m, p, {}, "") for m, p in reads
                                                           if p in ("/metrics", "/healthz", "/policy", "/stats")])
    assert [s for s, _, _ in results[:len(writes)]] == [401] * len(writes), writes
    assert all(s == 200 for s, _, _ in results[len(writes):])


def generate_metrics(w: Worker) -> str:
    from prometheus_client import generate_latest

    return generate_latest(w.metrics.registry).decode()


def test_policy_apply_takes_its_token_from_the_file_or_the_environment(tmp_path, monkeypatch, capsys):
    from loopline.connectors.cli.policy import control_token

    monkeypatch.delenv("LOOPLINE_CONTROL_TOKEN", raising=False)
    assert control_token(None) is None
    monkeypatch.setenv("LOOPLINE_CONTROL_TOKEN", OPS)
    assert control_token(None) == OPS
    f = tmp_path / "token"
    f.write_text(f"{CI}\n")
    assert control_token(str(f)) == CI  # the file wins over the environment
    f.write_text(f"{CI} {OPS}\n")
    with pytest.raises(SystemExit) as exit_:
        control_token(str(f))
    assert exit_.value.code == 2 and OPS not in capsys.readouterr().err
