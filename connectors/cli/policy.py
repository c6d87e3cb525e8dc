"""``loopline policy apply|status|check`` and ``loopline stats``: operators talk to running workers over HTTP.

Workers are named by their base URL (``--worker http://127.0.0.1:6066``,
repeatable); the default is this machine's ``LOOPLINE_WEB_PORT``.

Exit codes: 0 done; 1 a worker refused or could not be reached (the sentence
says which); 2 bad input (an invalid policy file is refused here, before any
worker sees it).
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

EXIT_OK, EXIT_WORKER, EXIT_USAGE = 0, 1, 2


def _workers(args) -> list[str]:
    if args.worker:
        return [w.rstrip("/") for w in args.worker]
    from loopline.streams.settings import Settings

    s = Settings()
    return [f"http://{s.web_host}:{s.web_port}"]


def _request(url: str, data: bytes | None = None, timeout: float = 10.0, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "text/plain; charset=utf-8"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",  # noqa: S310 (http(s) URL of a worker named by the operator)
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (same URL)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}


def _read_policy(path: str) -> str:
    from loopline.processors.errors import ConfigError
    from loopline.processors.policy.policy import Policy

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(_fail(f"cannot read the policy file {path}: {exc}"))
    try:
        Policy.from_toml(text, source=path)
    except ConfigError as exc:
        raise SystemExit(_fail(f"the policy file is invalid, nothing was applied: {exc}"))
    return text


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"loopline: {message}", file=sys.stderr)
    return code


def cmd_policy_check(args) -> int:
    from loopline.processors.policy.policy import Policy

    policy = Policy.from_toml(_read_policy(args.file), source=args.file)
    print(f"{args.file}: valid, version {policy.version!r}, models: {', '.join(sorted(policy.spec.models)) or '-'}")
    return EXIT_OK


def cmd_policy_example(args) -> int:
    """Print a policy file shipped with the package (a starting point: ``loopline policy example > policy.toml``)."""
    from importlib import resources

    sys.stdout.write((resources.files("loopline.policies") / f"{args.name}.toml").read_text(encoding="utf-8"))
    return EXIT_OK


def control_token(token_file: str | None) -> str | None:
    """The bearer token for state-changing worker requests: ``--token-file`` (the file holds the
    token alone), else ``LOOPLINE_CONTROL_TOKEN``; None when neither is set."""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(_fail(f"cannot read the token file {token_file}: {exc.__class__.__name__}"))
        if not token or len(token.split()) != 1:
            raise SystemExit(_fail(f"the token file {token_file} must hold one token and nothing else"))
        return token
    from loopline.streams.settings import Settings

    secret = Settings().control_token
    return secret.get_secret_value().strip() or None if secret is not None else None


def cmd_policy_apply(args) -> int:
    text = _read_policy(args.file).encode()
    token = control_token(args.token_file)
    if token is None:  # every worker would answer 401: say it once instead of once per worker
        print("loopline: no control token: set LOOPLINE_CONTROL_TOKEN or pass --token-file "
              "(workers refuse policy changes without one)", file=sys.stderr)
        return EXIT_USAGE
    code = EXIT_OK
    for w in _workers(args):
        try:
            status, body = _request(f"{w}/policy", data=text, token=token)
        except (urllib.error.URLError, OSError) as exc:
            print(f"{w}: unreachable ({exc}); its policy is unchanged", file=sys.stderr)
            code = EXIT_WORKER
            continue
        if status == 200:
            what = "applied" if body.get("changed") else "already in force"
            print(f"{w}: {what}: {body.get('old_version')} -> {body.get('new_version')}")
        else:
            print(f"{w}: refused ({status}): {body.get('error')}", file=sys.stderr)
            code = EXIT_WORKER
    return code


def cmd_policy_status(args) -> int:
    code = EXIT_OK
    for w in _workers(args):
        try:
            _, policy = _request(f"{w}/policy")
            _, stats = _request(f"{w}/stats")
        except (urllib.error.URLError, OSError) as exc:
            print(f"{w}: unreachable ({exc})", file=sys.stderr)
            code = EXIT_WORKER
            continue
        print(format_status(w, policy, stats))
    return code


def format_status(url: str, policy: dict, stats: dict) -> str:
    """Plain-text policy status of one worker: version, thresholds, overlays, recent changes."""
    lines = [f"worker {policy.get('worker')} ({url})",
             f"  policy {policy.get('version')} (base {policy.get('base_version')} from {policy.get('source')})"]
    for name, m in (policy.get("models") or {}).items():
        by_class = ", ".join(f"{k}>={v:g}" for k, v in m["min_confidence_by_class"].items())
        lines.append(f"  model {name}: auto if confidence>={m['min_confidence']:g}"
                     f"{' (' + by_class + ')' if by_class else ''}, audit rate {m['audit_rate']:g}"
                     + (f", review if override risk>{m['max_override_risk']:g}" if m.get("max_override_risk") else ""))
    for o in policy.get("overlays") or []:
        ev = ", ".join(f"{k}={v:.4g}" for k, v in o["evidence"].items())
        lines.append(f"  overlay {o['name']} on {o['model']}: min_confidence={o['min_confidence']} "
                     f"delta={o['min_confidence_delta']:+g} audit_rate={o['audit_rate']} "
                     f"delta={o['audit_rate_delta']:+g}" + (f" [{ev}]" if ev else ""))
    for c in (policy.get("recent_changes") or [])[-5:]:
        lines.append(f"  change {c['kind']}: {c['old_version']} -> {c['new_version']} ({c['source']}"
                     + (f" by {c['actor']})" if c.get("actor") else ")")
                     + (f": {c['detail']}" if c.get("detail") else ""))
    extra = stats.get("calibration")
    if extra is not None:
        try:
            from loopline.connectors.cli.policy_status import policy_status

            lines.append(policy_status(stats))
        except ImportError:
            lines.append(f"  calibration: {json.dumps(extra)[:500]}")
    return "\n".join(lines)


def cmd_stats(args) -> int:
    """Merge the exact statistics of every worker (``/stats?format=state``) and print the cluster report."""
    from loopline.processors.stats.tier_stats import TierStats

    parts, code = [], EXIT_OK
    for w in _workers(args):
        try:
            status, body = _request(f"{w}/stats?format=state")
        except (urllib.error.URLError, OSError) as exc:
            print(f"{w}: unreachable ({exc}); totals exclude it", file=sys.stderr)
            code = EXIT_WORKER
            continue
        if status == 200 and body.get("tier_stats_state"):
            parts.append(TierStats.from_state(body["tier_stats_state"]))
    merged = TierStats.merged(parts) if parts else TierStats()
    snap = merged.snapshot()
    if args.json:
        print(json.dumps({"workers": len(parts), "tiers": snap}, indent=2))
    else:
        from loopline.connectors.cli.stats_table import stats_table

        print(stats_table(snap, len(parts)))
    return code


def add_policy_commands(sub) -> None:
    p = sub.add_parser("policy", help="check, apply or inspect the routing policy of running workers")
    ps = p.add_subparsers(dest="policy_command", required=True)
    worker_help = "worker base URL (repeatable; default http://LOOPLINE_WEB_HOST:LOOPLINE_WEB_PORT)"
    c = ps.add_parser("check", help="validate a policy file (exit 2 with the bad field)")
    c.add_argument("file")
    c.set_defaults(func=cmd_policy_check)
    e = ps.add_parser("example", help="print a policy file shipped with Loopline (every option, commented)")
    e.add_argument("name", nargs="?", default="example", choices=["example", "demo"],
                   help="example: every option documented; demo: the policy the demo runs")
    e.set_defaults(func=cmd_policy_example)
    a = ps.add_parser("apply", help="validate FILE, then make it the policy of each worker")
    a.add_argument("file")
    a.add_argument("--worker", action="append", help=worker_help)
    a.add_argument("--token-file", help="file holding the control bearer token (default: LOOPLINE_CONTROL_TOKEN)")
    a.set_defaults(func=cmd_policy_apply)
    s = ps.add_parser("status", help="policy version, thresholds, overlays and recent changes per worker")
    s.add_argument("--worker", action="append", help=worker_help)
    s.set_defaults(func=cmd_policy_status)
    st = sub.add_parser("stats", help="per-model, per-tier statistics merged across workers (a table; --json for machines)")
    st.add_argument("--worker", action="append", help=worker_help)
    st.add_argument("--json", action="store_true", help="the full report (windows, histograms, intervals)")
    st.set_defaults(func=cmd_stats)
