"""Every ``loopline`` command against an unreachable broker, a taken port and no stdin:
exactly one line on stderr and the documented exit code (issue #22).

Real child processes of the installed console script, no broker anywhere: the bootstrap
address 127.0.0.1:1 refuses connections, the web/review/broker ports are held by a
listening socket of this test, stdin is /dev/null. Exit codes as documented:
2 for every failure of the environment (docs/operations.md "Commands"), 1 for input
rejected (``reviewers remove`` of an unknown name; ``policy apply|status`` and ``stats``
when a worker is unreachable, docs/policy.md), 0 for the commands that need nothing.
"""
from __future__ import annotations

import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loopline.connectors.cli.errors import DEFAULT_BOOTSTRAP, CommandFailed, check_broker, run, sentence
from loopline.connectors.cli.main import build_parser
from loopline.connectors.processes import loopline_exe

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "policies" / "example.toml")
DEAD_WORKER = "http://127.0.0.1:1"

# command -> (exit code, what the one line says)
CASES: dict[tuple[str, ...], tuple[int, str]] = {
    ("broker",): (2, "already taken"),
    ("topics", "create"): (2, "does not answer within 10 s"),
    ("worker",): (2, "already in use"),
    ("up",): (2, "already in use"),
    ("produce", EXAMPLE): (2, "does not answer within 10 s"),
    ("produce", "/nonexistent.jsonl"): (2, "does not exist"),
    ("demo", "--events", "100"): (2, "does not answer within 10 s"),
    ("bench", "--quick"): (2, "does not answer within 10 s"),
    ("review-server",): (2, "already in use"),
    ("reviewers", "add", "bob", "--role", "analyst"): (2, "no terminal"),
    ("reviewers", "list"): (0, ""),
    ("reviewers", "remove", "bob"): (1, "no reviewer named"),
    ("review", "--user", "bob"): (2, "no terminal"),
    ("policy", "check", "/etc/hostname"): (2, "invalid"),
    ("policy", "example"): (0, ""),
    ("policy", "apply", EXAMPLE, "--worker", DEAD_WORKER): (2, "no control token"),
    ("schemas",): (0, ""),
    ("tail", "decisions"): (2, "does not answer within 10 s"),
    ("dead-letters", "replay", "--dry-run"): (2, "does not answer within 10 s"),
    ("audit-sink",): (2, "does not answer within 10 s"),
    ("audit", "history", "ev-1"): (2, "audit"),
    ("audit", "export", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z", "--out", "/tmp/never.csv"): (2, "audit"),
    ("policy", "status", "--worker", DEAD_WORKER): (1, "unreachable"),
    ("stats", "--worker", DEAD_WORKER): (1, "unreachable"),
    ("model", "list"): (2, "does not answer within 10 s"),
    ("model", "show", "churn"): (2, "does not answer within 10 s"),
    ("model", "promote", "churn"): (2, "does not answer within 10 s"),
    ("model", "rollback", "churn"): (2, "does not answer within 10 s"),
    ("drift", "baseline", "--from-topic", "x", "--out", "/tmp/never-written.json"): (2, "does not answer"),
}


def leaf_commands(parser=None, prefix=()) -> set[tuple[str, ...]]:
    """Every runnable command path of the parser (``("model", "show")``, ...)."""
    import argparse

    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    if not subs:
        return {prefix}
    out = set()
    for action in subs:
        for name, sub in action.choices.items():
            out |= leaf_commands(sub, (*prefix, name))
    return out


def _command_path(args: tuple[str, ...], leaves: set[tuple[str, ...]]) -> tuple[str, ...]:
    return max((leaf for leaf in leaves if args[:len(leaf)] == leaf), key=len)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = str(held.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(LOOPLINE_KAFKA_BOOTSTRAP="127.0.0.1:1", LOOPLINE_WEB_PORT=port, LOOPLINE_REVIEW_PORT=port,
               LOOPLINE_BROKER_PORT=port, LOOPLINE_DATA_DIR=str(tmp_path_factory.mktemp("cli")))

    def one(args):
        return args, subprocess.run([loopline_exe(), *args], env=env, capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL, timeout=120)
    try:
        with ThreadPoolExecutor(4) as pool:
            return dict(pool.map(one, CASES))
    finally:
        held.close()


def test_every_command_is_covered():
    leaves = leaf_commands()
    covered = {_command_path(args, leaves) for args in CASES}
    assert leaves - covered == set()


@pytest.mark.parametrize("args", list(CASES), ids=lambda a: " ".join(a[:3]))
def test_one_line_and_the_documented_exit_code(results, args):
    code, says = CASES[args]
    r = results[args]
    lines = r.stderr.splitlines()
    assert r.returncode == code, r.stderr
    if code == 0:
        assert lines == [], r.stderr
    else:
        assert len(lines) == 1, r.stderr
        assert says in lines[0], lines[0]
        assert "\x1b" not in r.stderr and "Traceback" not in r.stderr


def test_a_closed_pipe_is_one_sentence():
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([loopline_exe(), "policy", "example"], stdout=write, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr.splitlines()) == (2, ["loopline: the output was closed before everything was "
                                                         "written (broken pipe)"])


def test_the_error_path_maps_the_usual_escapes(capsys):
    class Args:
        command = "policy"

    for exc, says in ((EOFError(), "no input to read"), (BrokenPipeError(), "broken pipe"),
                      (OSError(98, "Address already in use"), "address already in use"),
                      (RuntimeError("boom\nsecond line"), "unexpected RuntimeError: boom")):
        def raises(args, exc=exc):
            raise exc
        if isinstance(exc, BrokenPipeError):
            assert sentence(exc)[1] == 2  # run() would point this test's stdout at /dev/null
            continue
        assert run(Args(), raises) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and says in err[0], err


def test_a_silent_broker_is_given_up_on_in_the_stated_time():
    """A listener that never accepts (backlog full) stands for a broker behind a black hole."""
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the accept backlog so further connects hang
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(server.getsockname())
            fillers.append(s)
        host, port = server.getsockname()
        t = time.monotonic()
        with pytest.raises(CommandFailed, match="does not answer within 0.5 s"):
            check_broker(f"{host}:{port}", 0.5)
        assert time.monotonic() - t < 5
    finally:
        for s in fillers:
            s.close()
        server.close()


def test_one_default_broker_address_for_every_client_command():
    from loopline.connectors.cli.errors import OWN_BROKER, apply_default_bootstrap

    for command in ("model", "topics", "worker", "produce", "drift", "review-server", "stats", "policy"):
        env: dict[str, str] = {}
        apply_default_bootstrap(command, env)
        assert env == {"LOOPLINE_KAFKA_BOOTSTRAP": DEFAULT_BOOTSTRAP}, command
    for command in OWN_BROKER:  # these start the embedded broker when nothing is set
        env = {}
        apply_default_bootstrap(command, env)
        assert env == {}, command
    env = {"LOOPLINE_KAFKA_BOOTSTRAP": "kafka:9092"}
    apply_default_bootstrap("model", env)
    assert env == {"LOOPLINE_KAFKA_BOOTSTRAP": "kafka:9092"}
