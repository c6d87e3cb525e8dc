"""The alert rules in ops/prometheus/alerts.yml, checked and unit-tested with ``promtool``.

``promtool`` comes with Debian's ``prometheus`` package (``dev.py`` installs it for the
tests); these tests are skipped only when it is absent. Besides running the promtool
unit tests (ops/prometheus/tests/*.yml), they prove the unit tests can fail: with every
``for:`` removed the "stays quiet" cases must fail for every alert, and with every
expression replaced by one that never fires the "fires" cases must fail for every alert.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((REPO / "ops" / "prometheus" / "tests").glob("*.yml"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
PROMETHEUS_CONFIG = REPO / "ops" / "prometheus" / "prometheus.yml"
DEFAULT_RUNBOOK_BASE = "https://github.com/loopline-dev/loopline/blob/main/docs"
# Absolute link from the external label ``runbook_base`` (the upstream docs when unset).
RUNBOOK_URL = ("{{ with $externalLabels.runbook_base }}{{ . }}{{ else }}" + DEFAULT_RUNBOOK_BASE
               + "{{ end }}/runbooks.md#runbook-%s")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


# ------------------------------------------------------------------ helpers (also used by the integration test)
def load_rules(path: Path = RULES) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


PARTS_GROUP = "loopline-parts"


def without_parts(rules: dict) -> dict:
    """``rules`` without the "part going missing" group: for a test Prometheus that scrapes one
    job only, those rules would fire for every job it does not scrape (promtool covers them)."""
    return {**rules, "groups": [g for g in rules["groups"] if g["name"] != PARTS_GROUP]}


def duration_seconds(text: str) -> float:
    """'1h30m' -> 5400.0"""
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        assert m.start() == pos, f"bad duration {text!r}"
        total += int(m.group(1)) * _SECONDS[m.group(2)]
        pos = m.end()
    assert pos == len(text) and pos, f"bad duration {text!r}"
    return total


def format_duration(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scale_rules(rules: dict, factor: float, min_seconds: float = 0.0) -> dict:
    """A copy of ``rules`` with every time constant divided by ``factor``: ``for:``, ``keep_firing_for:``, range
    selectors ``[5m]``, subquery steps and ``offset``. Lets a real Prometheus show in seconds
    what the production rules do in minutes; durations never go below ``min_seconds``
    (e.g. a few scrape intervals, so a rate window still holds samples)."""
    def scaled(text: str) -> str:
        return format_duration(max(min_seconds, duration_seconds(text) / factor))

    def scale_expr(expr: str) -> str:
        expr = re.sub(r"\[([0-9a-z]+)(?::([0-9a-z]*))?\]",
                      lambda m: "[" + scaled(m.group(1)) + (":" + (scaled(m.group(2)) if m.group(2) else "")
                                                           if m.group(0).count(":") else "") + "]", expr)
        return re.sub(r"\boffset\s+([0-9a-z]+)", lambda m: "offset " + scaled(m.group(1)), expr)

    out = yaml.safe_load(yaml.safe_dump(rules))
    for group in out["groups"]:
        for rule in group["rules"]:
            rule["expr"] = scale_expr(rule["expr"])
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = scaled(rule[key])
    return out


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def failing_alerts(output: str) -> set[str]:
    """Alert names of the failed cases in ``promtool test rules`` output."""
    return set(re.findall(r"alertname: (\w+), time:", output))


def run_unit_tests_against(rules: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the promtool unit tests with ``rules`` in place of alerts.yml."""
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    for path in RULE_TESTS:
        shutil.copy(path, tests_dir / path.name)
    return run_promtool("test", "rules", *[p.name for p in RULE_TESTS], cwd=tests_dir)


# ------------------------------------------------------------------ tests
@needs_promtool
def test_rules_file_is_valid():
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass():
    assert RULE_TESTS, "no promtool unit tests in ops/prometheus/tests"
    result = run_promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_summary_description_and_a_runbook_anchor():
    anchors = set(re.findall(r'<a id="([^"]+)"', RUNBOOKS.read_text(encoding="utf-8")))
    rules = alert_rules(load_rules())
    assert len(rules) >= 9
    for rule in rules:
        ann = rule.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            assert ann.get(key), f"{rule['alert']}: no {key}"
        assert ann["runbook_url"] == RUNBOOK_URL % rule["alert"].lower(), \
            f"{rule['alert']}: runbook_url must be built from $externalLabels.runbook_base: {ann['runbook_url']}"
        anchor = ann["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no <a id=\"{anchor}\"> in docs/runbooks.md"
        assert rule.get("labels", {}).get("severity") in ("page", "ticket"), rule["alert"]


def test_prometheus_config_sets_the_runbook_base():
    labels = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["global"]["external_labels"]
    base = labels["runbook_base"]
    assert base.startswith("https://") and not base.endswith("/"), base
    assert base == DEFAULT_RUNBOOK_BASE, "keep the rules' fallback and the shipped config in step"


def test_promtool_cases_expect_the_expanded_runbook_url():
    """promtool renders the template without external labels, i.e. with the upstream base:
    each expected runbook_url in the rule tests is that absolute link (so a wrong template fails)."""
    seen = set()
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts") or []:
                    url = (alert.get("exp_annotations") or {}).get("runbook_url")
                    if url is not None:
                        expected = f"{DEFAULT_RUNBOOK_BASE}/runbooks.md#runbook-{check['alertname'].lower()}"
                        assert url == expected, (path.name, check["alertname"], url)
                        seen.add(check["alertname"])
    assert seen, "no promtool case asserts an expanded runbook_url"


def test_every_alert_has_a_firing_and_a_quiet_case():
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert spec["rule_files"] == ["../alerts.yml"], path
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules(load_rules())}
    assert names - fires == set(), "alerts without a case where they fire"
    assert names - quiet == set(), "alerts without a case where they stay quiet"


def split_and(expr: str) -> list[str]:
    """The operands of the top-level ``and`` operators of a PromQL expression (modifiers kept).

    >>> split_and("a > 0 and on (x) (b and c) and d")
    ['a > 0', 'on (x) (b and c)', 'd']
    """
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == '"':
            i = expr.index('"', i + 1)
        elif depth == 0 and re.match(r"(?<![\w])and(?![\w])", expr[i:i + 4]) and (i == 0 or not expr[i - 1].isalnum()):
            parts.append(expr[start:i].strip())
            start = i + 3
        i += 1
    parts.append(expr[start:].strip())
    return parts


@needs_promtool
def test_quiet_cases_fail_without_for(tmp_path):
    """The short-spike cases really depend on ``for:``: dropping it must break every such alert's tests."""
    rules = load_rules()
    names = {r["alert"] for r in alert_rules(rules) if "for" in r}
    assert len(names) >= 8
    for rule in alert_rules(rules):
        rule.pop("for", None)
    result = run_unit_tests_against(rules, tmp_path)
    assert failing_alerts(result.stdout + result.stderr) == names


@needs_promtool
def test_quiet_cases_fail_without_the_last_condition(tmp_path):
    """Every ``and`` guard (low traffic, second window, lag present) is exercised: dropping an
    alert's last ``and`` operand must break its tests."""
    rules = load_rules()
    names = set()
    for rule in alert_rules(rules):
        parts = split_and(rule["expr"])
        if len(parts) > 1:
            rule["expr"] = " and ".join(parts[:-1])
            names.add(rule["alert"])
    assert len(names) >= 7
    result = run_unit_tests_against(rules, tmp_path)
    assert failing_alerts(result.stdout + result.stderr) == names


@needs_promtool
def test_firing_cases_fail_when_nothing_fires(tmp_path):
    rules = load_rules()
    for rule in alert_rules(rules):
        rule["expr"] = "vector(1) == 0"
    result = run_unit_tests_against(rules, tmp_path)
    names = {r["alert"] for r in alert_rules(rules)}
    assert failing_alerts(result.stdout + result.stderr) == names


def test_scale_rules_divides_every_time_constant():
    rules = {"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": 'sum(rate(x_total[5m])) > 0 and max(y offset 10m) > 1 and max_over_time(z[1h:1m]) > 0',
         "for": "15m", "keep_firing_for": "30m"}]}]}
    out = scale_rules(rules, 60, min_seconds=2)
    rule = out["groups"][0]["rules"][0]
    assert rule["for"] == "15s" and rule["keep_firing_for"] == "30s"
    assert rule["expr"] == 'sum(rate(x_total[5s])) > 0 and max(y offset 10s) > 1 and max_over_time(z[60s:2s]) > 0'
    assert rules["groups"][0]["rules"][0]["for"] == "15m"  # the input is untouched


@needs_promtool
def test_scaled_real_rules_are_valid(tmp_path):
    path = tmp_path / "scaled.yml"
    path.write_text(yaml.safe_dump(scale_rules(load_rules(), 20, min_seconds=3)), encoding="utf-8")
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_drift_ownership_move_refires_without_keep_firing_for(tmp_path):
    """The "no re-firing when drift ownership moves" case depends on ``keep_firing_for``:
    without it the alert resolves while the new owner's detector is still at 0."""
    rules = load_rules()
    (drift,) = [r for r in alert_rules(rules) if r["alert"] == "LooplineDriftActive"]
    assert drift.pop("keep_firing_for")
    result = run_unit_tests_against(rules, tmp_path)
    assert failing_alerts(result.stdout + result.stderr) == {"LooplineDriftActive"}


def test_every_part_has_a_down_and_an_absent_alert():
    """Workers, review server, learner and audit sink: a known target not answering
    (``up == 0``) and a target gone from discovery (``absent(up{job=...})``)."""
    rules = {r["alert"]: r["expr"].strip() for r in alert_rules(load_rules())}
    jobs = {"loopline-worker": "LooplineWorker", "loopline-review": "LooplineReviewServer",
            "loopline-learner": "LooplineLearner", "loopline-audit-sink": "LooplineAuditSink"}
    for job, stem in jobs.items():
        down = rules.get(stem + "Down")
        absent = rules.get(stem + ("sAbsent" if job == "loopline-worker" else "Absent"))
        assert down == f'up{{job="{job}"}} == 0', (job, down)
        assert absent == f'absent(up{{job="{job}"}})', (job, absent)
    assert "loopline_expected_workers" in rules["LooplineWorkersBelowExpected"]
    scrape_jobs = {c["job_name"] for c in yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]}
    # the audit sink's scrape job comes with its compose service (issue #23)
    assert set(jobs) <= scrape_jobs, "every alerted job is scraped by the shipped config"
