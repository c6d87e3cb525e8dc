"""``loopline review-server``, ``loopline reviewers add|list|remove`` and ``loopline review``.

Hook into the main parser with ``add_review_commands(subparsers)``. Failures print one
sentence on stderr: exit 1 for a refused input (unknown reviewer, bad role), 2 for usage
or environment (no Kafka, server unreachable).
"""
from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
import urllib.error
import urllib.request

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> int:
    print(f"loopline: {message}", file=sys.stderr)
    return code


def _review_settings(**overrides):
    from loopline.connectors.review.settings import ReviewSettings
    from loopline.streams.settings import Settings

    return ReviewSettings.from_settings(Settings(), **overrides)


def _store(rs):
    from loopline.connectors.review.pg_store import open_store

    return open_store(rs)


# ---------------------------------------------------------------- server
def cmd_review_server(args) -> int:
    from loopline.connectors.review.app import run_review_server, server_ssl_context
    from loopline.connectors.review.service import ReviewError

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    rs = _review_settings(**overrides)
    if not rs.bootstrap:
        return _fail("no Kafka to talk to: set LOOPLINE_KAFKA_BOOTSTRAP=host:port", EXIT_USAGE)
    from loopline.processors.errors import ConfigError
    from loopline.streams.secrets import refuse_public_key
    from loopline.streams.settings import Settings

    try:
        refuse_public_key(Settings())  # the session key is the snapshot key: public = forgeable sessions
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    store = _store(rs)
    if not store.reviewers():
        print("note: no reviewers yet; add one with `loopline reviewers add NAME --role analyst`", file=sys.stderr)
    store.close()
    try:
        server_ssl_context(rs)  # a bad TLS setting is one sentence, before anything starts
    except ReviewError as exc:
        return _fail(str(exc), EXIT_USAGE)
    run_review_server(rs)
    return 0


# ---------------------------------------------------------------- reviewers
def cmd_reviewers(args) -> int:
    from loopline.connectors.review.service import ReviewError, add_reviewer

    rs = _review_settings()
    store = _store(rs)
    try:
        if args.reviewers_cmd == "add":
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"password for {args.name}: ")
                if getpass.getpass("again: ") != password:
                    return _fail("the two passwords differ; nothing was changed", EXIT_BAD_INPUT)
            try:
                add_reviewer(store, args.name, args.role, args.pii_clearance, password, rs.min_password_length)
            except ReviewError as exc:
                return _fail(str(exc), EXIT_BAD_INPUT)
            print(f"reviewer {args.name} saved ({args.role}{', pii clearance' if args.pii_clearance else ''}) "
                  f"in {rs.db_path}")
        elif args.reviewers_cmd == "list":
            for r in store.reviewers():
                print(f"{r['name']}\t{r['role']}\t{'pii_clearance' if r['pii_clearance'] else '-'}")
        elif args.reviewers_cmd == "remove":
            if not store.remove_reviewer(args.name):
                return _fail(f"there is no reviewer named {args.name!r}", EXIT_BAD_INPUT)
            print(f"reviewer {args.name} removed")
        return 0
    finally:
        store.close()


# ---------------------------------------------------------------- terminal reviewer
class ApiClient:
    """The review server's JSON API with HTTP Basic auth."""

    def __init__(self, server: str, user: str, password: str) -> None:
        self.server = server.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,  # noqa: S310 (the review server URL the user named)
                                     headers={"Authorization": self.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (same URL)
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read())
            except json.JSONDecodeError:
                return exc.code, {"error": f"HTTP {exc.code}"}


def show_task(task: dict, labels: list[str], out, guidelines: str = "") -> None:
    """The task as readable lines (see :func:`loopline.connectors.review.format.task_lines`)."""
    import time

    from loopline.connectors.review.format import task_lines

    print("", file=out)
    for line in task_lines(task, labels, time.time() * 1000, guidelines):
        print(line, file=out)


class Keys:
    """One keystroke at a time: raw (no Enter) on a terminal, the first character of a line otherwise.

    Free text (a note) is always a whole line.
    """

    def __init__(self, inp) -> None:
        self.inp = inp
        try:
            self.tty = inp.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    def key(self, out) -> str:
        if not self.tty:
            return (self.inp.readline() or "q").strip()[:1].lower()
        import termios
        import tty

        fd = self.inp.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            ch = os.read(fd, 1).decode(errors="replace")
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
        print(ch if ch.isprintable() else "", file=out, flush=True)
        return "q" if ch in ("", "\x04", "\x03") else ch.lower()

    def line(self) -> str:
        return self.inp.readline().strip()


def review_loop(api: ApiClient, queue: str, inp, out) -> int:
    """Claim the next task, show it, answer with one keystroke; repeat until q or the queue is empty.

    ``n`` first attaches a note (a line of text) to the answer that follows.
    """
    answered = 0
    keys_in = Keys(inp)
    while True:
        status, body = api.call("GET", "/api/queues")
        if status != 200:
            return _fail(body.get("error", f"HTTP {status}"), EXIT_USAGE if status >= 500 else EXIT_BAD_INPUT)
        print("  ".join(f"{q}: {s['waiting']} waiting, oldest {s['oldest_age_seconds']:.0f}s"
                        for q, s in body["queues"].items()), file=out)
        status, claimed = api.call("GET", f"/api/next?tier={queue}")  # the most urgent task, leased to us
        if status == 204:
            print(f"Nothing waiting in the {queue} queue. {answered} answered.", file=out)
            return 0
        if status != 200:
            return _fail(claimed.get("error", f"HTTP {status}"), EXIT_USAGE if status >= 500 else EXIT_BAD_INPUT)
        task, labels = claimed["task"], claimed["labels"]
        show_task(task, labels, out, claimed.get("guidelines", ""))
        predicted = task["prediction"]["predicted_label"]
        numbered = "  ".join(f"[{i}] {lb}" for i, lb in enumerate(labels[:9], 1) if lb != predicted)
        keys = ("[a]pprove  correct to: " + numbered + "  [u]nsure " + ("[e]scalate " if task["queue"] == "analyst"
                                                                       else "") + "[n]ote [q]uit")
        note = None
        while True:
            print(keys + " > ", end="", file=out, flush=True)
            key = keys_in.key(out)
            body: dict = {"source": "cli"}
            if key == "n":
                print("note > ", end="", file=out, flush=True)
                note = keys_in.line() or None
                continue
            if key == "q":
                status, _ = api.call("POST", f"/api/tasks/{urllib.request.quote(task['task_id'], safe='')}/release")
                print(f"{answered} answered; the open task went back to the queue." if status == 200 else
                      f"{answered} answered; the open task returns to the queue when its lease ends.", file=out)
                return 0
            if key.isdigit() and 1 <= int(key) <= min(9, len(labels)):
                if labels[int(key) - 1] == predicted:
                    print(f"{predicted} is the predicted label: press a to approve it", file=out)
                    continue
                body.update(action="correct", corrected_label=labels[int(key) - 1])
                if note:
                    body["note"] = note
                break
            if key == "a":
                body["action"] = "approve"
            elif key == "u":
                body["action"] = "unsure"
            elif key == "e" and task["queue"] == "analyst":
                body["action"] = "escalate"
            elif key == "c":
                others = [lb for lb in labels if lb != predicted]
                if not others:
                    print("no other label is known for this model", file=out)
                    continue
                print("  ".join(f"{i}) {lb}" for i, lb in enumerate(others, 1)) + " > ", end="", file=out, flush=True)
                choice = keys_in.key(out) if len(others) < 10 else keys_in.line()
                if not choice.isdigit() or not 1 <= int(choice) <= len(others):
                    print("pick one of the numbers", file=out)
                    continue
                body.update(action="correct", corrected_label=others[int(choice) - 1])
            else:
                continue
            if note:
                body["note"] = note
            break
        status, resp = api.call("POST", f"/api/tasks/{urllib.request.quote(task['task_id'], safe='')}/submit", body)
        if status == 200:
            answered += 1
            c = resp["correction"]
            print(f"published {c['action']}{' ' + c['corrected_label'] if c['corrected_label'] else ''} "
                  f"for {c['event_id']}", file=out)
        else:
            print(f"not published: {resp.get('error')}", file=out)


def cmd_review(args) -> int:
    password = os.environ.get("LOOPLINE_REVIEWER_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
    api = ApiClient(args.server, args.user, password)
    try:
        return review_loop(api, args.queue, sys.stdin, sys.stdout)
    except urllib.error.URLError as exc:
        return _fail(f"cannot reach the review server at {args.server} ({exc.reason})", EXIT_USAGE)


# ---------------------------------------------------------------- parser
def add_review_commands(subparsers) -> None:
    """Add ``review-server``, ``reviewers`` and ``review`` to the ``loopline`` parser."""
    p = subparsers.add_parser("review-server", help="web review queue + JSON API on the review topics")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None, help="default 6070")
    p.set_defaults(func=cmd_review_server)

    p = subparsers.add_parser("reviewers", help="manage reviewer accounts of the review server")
    sub = p.add_subparsers(dest="reviewers_cmd", required=True)
    a = sub.add_parser("add", help="add or replace a reviewer")
    a.add_argument("name")
    a.add_argument("--role", choices=("analyst", "senior"), required=True)
    a.add_argument("--pii-clearance", action="store_true", help="may see personal features unmasked")
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    sub.add_parser("list", help="list reviewers")
    r = sub.add_parser("remove", help="remove a reviewer (their sessions end)")
    r.add_argument("name")
    p.set_defaults(func=cmd_reviewers)

    p = subparsers.add_parser("review", help="review tasks in the terminal through the review server")
    p.add_argument("--server", default="http://127.0.0.1:6070")
    p.add_argument("--user", required=True)
    p.add_argument("--queue", choices=("analyst", "escalation"), default="analyst")
    p.set_defaults(func=cmd_review)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m loopline.connectors.review.cli``) until the lead wires the main parser."""
    parser = argparse.ArgumentParser(prog="loopline")
    add_review_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
