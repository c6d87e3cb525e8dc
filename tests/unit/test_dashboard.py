"""The Grafana dashboard and the alert rules only query metrics Loopline exports.

The exported names are built from the code: the collectors that can be built without a
broker are instantiated (WorkerMetrics, ReviewMetrics, the consumer-lag collector) and
every other metric constructor call in streams/, processors/ and connectors/ is read from
the source (agents that need a running app declare theirs there). ``IN_FLIGHT`` documents
names other issues were adding while this kit was written; once their code lands it is
found in the source too, and ``test_in_flight_names_have_landed`` reports which have not.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "dashboards" / "loopline.json"
DATASOURCES = REPO / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
SOURCE_DIRS = ("streams", "processors", "connectors")

# name -> type of metrics being added by parallel issues (drift, per-tier stats, learning).
IN_FLIGHT = {
    "loopline_drift_score": "gauge", "loopline_drift_active": "gauge", "loopline_drift_detections_total": "counter",
    "loopline_tier_override_rate": "gauge", "loopline_auto_error_rate_estimate": "gauge",
    "loopline_auto_error_budget": "gauge", "loopline_policy_changes_total": "counter",
    "loopline_feedback_to_model_seconds": "histogram", "loopline_model_updates_total": "counter",
    "loopline_online_f1": "gauge",
}
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for every target
_CONSTRUCTORS = {"Counter": "counter", "CounterMetricFamily": "counter", "Gauge": "gauge",
                 "GaugeMetricFamily": "gauge", "Histogram": "histogram", "HistogramMetricFamily": "histogram",
                 "BatchHistogram": "histogram", "Summary": "summary", "SummaryMetricFamily": "summary"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}


# ------------------------------------------------------------------ what Loopline exports
def sample_names(name: str, kind: str) -> set[str]:
    """Series names Prometheus stores for a metric family (as a PromQL query names them)."""
    base = name[:-len("_total")] if kind == "counter" and name.endswith("_total") else name
    return {"counter": {base + "_total", base + "_created"},
            "gauge": {name},
            "histogram": {name + "_bucket", name + "_count", name + "_sum", name + "_created"},
            "summary": {name, name + "_count", name + "_sum", name + "_created"}}.get(kind, {name})


def instantiated_families() -> dict[str, str]:
    """name -> type of the metrics of the collectors that can be built here."""
    from loopline.connectors.review.metrics import ReviewMetrics
    from loopline.connectors.review.store import ReviewStore
    from loopline.streams.lag import ConsumerLagCollector
    from loopline.streams.metrics import WorkerMetrics

    worker = WorkerMetrics()
    worker.registry.register(ConsumerLagCollector(app=None))
    review = CollectorRegistry()
    ReviewMetrics(review, ReviewStore(":memory:"))
    out = {}
    for registry in (worker.registry, review):
        for family in registry.collect():
            out[family.name] = family.type
    for family in ConsumerLagCollector(app=None).describe():
        out[family.name] = family.type
    return out


def source_families() -> dict[str, str]:
    """name -> type of every ``Counter("loopline_...")``-style constructor call in the source."""
    pattern = re.compile(r"\b(" + "|".join(_CONSTRUCTORS) + r")\(\s*\"(loopline_\w+)\"")
    out = {}
    for folder in SOURCE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            for ctor, name in pattern.findall(path.read_text(encoding="utf-8")):
                out[name] = _CONSTRUCTORS[ctor]
    return out


def exported_series() -> set[str]:
    names = set(PROMETHEUS_OWN)
    for name, kind in {**IN_FLIGHT, **source_families(), **instantiated_families()}.items():
        names |= sample_names(name, kind)
    return names


# ------------------------------------------------------------------ what a query names
def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and durations dropped).

    >>> sorted(metric_names('sum by (tier) (rate(a_total{x=~"b.+"}[5m])) / ignoring (tier) group_left '
    ...                     'sum(rate(a_total[$__rate_interval])) > 0.5 and on () up offset 1h'))
    ['a_total', 'up']
    """
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    expr = re.sub(r"\boffset\s+-?[0-9a-z]+", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", expr):
        word = m.group(0)
        if word.lower() in _KEYWORDS or re.match(r"\s*(\(|by\b|without\b)", expr[m.end():]):
            continue
        names.add(word)
    return names


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target, plus the template variables' metrics."""
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner["title"], target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.match(r"label_values\((\w+),\s*(\w+)\)", query or "")
        if m:
            out.append((f"${var['name']}", m.group(1)))
    return out


def unknown_metric_problems(queries: list[tuple[str, str]], exported: set[str]) -> list[str]:
    return [f"{where}: {name} is not a metric Loopline exports"
            for where, expr in queries for name in sorted(metric_names(expr) - exported)]


# ------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_series()


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_exported_names_come_from_the_code(exported):
    for name in ("loopline_predictions_total", "loopline_review_queue_depth", "loopline_consumer_lag",
                 "loopline_committed_offset", "loopline_review_tasks_past_due", "loopline_decision_latency_seconds_bucket",
                 "loopline_review_lease_expiries_total"):
        assert name in exported
    assert "loopline_predictions_total_total" not in exported


def test_dashboard_queries_only_exported_metrics(dashboard, exported):
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    assert unknown_metric_problems(queries, exported) == []


def test_alert_rules_query_only_exported_metrics(exported):
    assert unknown_metric_problems(alert_queries(), exported) == []


def test_the_name_check_catches_a_typo(dashboard, exported):
    broken = json.loads(json.dumps(dashboard))
    target = next(t for p in broken["panels"] for t in p.get("targets", []) if "loopline_predictions_total" in t["expr"])
    target["expr"] = target["expr"].replace("loopline_predictions_total", "loopline_prediction_total")
    problems = unknown_metric_problems(dashboard_queries(broken), exported)
    assert problems and "loopline_prediction_total" in problems[0]


def test_dashboard_covers_what_an_sre_needs(dashboard):
    text = " ".join(expr for _, expr in dashboard_queries(dashboard))
    needs = {
        "throughput": "loopline_predictions_total", "routed share per tier": "loopline_decisions_total",
        "queue depth": "loopline_review_queue_depth", "queue age": "loopline_review_oldest_waiting_seconds",
        "drift scores": "loopline_drift_score", "champion vs challenger": "loopline_online_f1",
        "dead letters": "loopline_dead_letters_total", "lag": "loopline_consumer_lag",
    }
    assert [what for what, metric in needs.items() if metric not in text] == []
    roles = [expr for _, expr in dashboard_queries(dashboard) if "loopline_online_f1" in expr]
    assert any("role" in expr for expr in roles), "champion vs challenger needs the role label"


def test_dashboard_structure(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", f"{panel['title']}: hard-coded datasource"
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_dashboard_queries_parse(dashboard, tmp_path):
    """Every panel query is valid PromQL (promtool parses it as a recording rule)."""
    rules = [{"record": f"loopline_dashboard:q{i}",
              "expr": expr.replace("$__rate_interval", "1m").replace("$model", ".*")}
             for i, (_, expr) in enumerate(dashboard_queries(dashboard))]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_in_flight_names_have_landed():
    """Every metric the alerts and dashboard were written against is exported by the code, with its type."""
    found = source_families()
    missing = sorted(set(IN_FLIGHT) - set(found))
    assert not missing, f"alerts/dashboard name metrics the code does not export: {', '.join(missing)}"
    for name, kind in IN_FLIGHT.items():
        assert found[name] == kind, f"{name} is a {found[name]} in the code, documented as a {kind}"


def test_review_server_exports_past_due_tasks():
    """loopline_review_tasks_past_due counts waiting tasks whose due_by has passed, per queue."""
    import time

    from loopline.connectors.review.metrics import ReviewMetrics
    from loopline.connectors.review.store import ReviewStore

    now = time.time()
    store = ReviewStore(":memory:")
    def task(i, tier, due_in_s):
        return {"task_id": f"e{i}:{tier}", "event_id": f"e{i}", "model_name": "m", "tier": tier, "priority": 1,
                "due_by": int((now + due_in_s) * 1000), "created_at": int(now * 1000) - 1000,
                "prediction": {"predicted_label": "legit"}}
    store.add_tasks([task(1, "review", -60), task(2, "review", -1), task(3, "review", 600),
                     task(4, "escalate", -5), task(5, "escalate", 60)], now)
    store.claim("e2:review", "ana", now)  # leased: not waiting
    registry = CollectorRegistry()
    ReviewMetrics(registry, store)
    value = lambda tier: registry.get_sample_value("loopline_review_tasks_past_due", {"tier": tier})  # noqa: E731
    assert (value("review"), value("escalate")) == (1, 1)  # the tier vocabulary of the worker
    assert store.past_due(now + 3600) == {"analyst": 2, "escalation": 2}


# ------------------------------------------------------------------ importable anywhere (issue #22)
def test_datasource_is_an_input_and_a_variable(dashboard):
    """Importing asks for the Prometheus (``__inputs``); file provisioning, which ignores
    ``__inputs``, resolves ``${DS_PROMETHEUS}`` through the datasource variable of that name.
    No uid of one Grafana is written anywhere."""
    (inp,) = [i for i in dashboard["__inputs"] if i["name"] == "DS_PROMETHEUS"]
    assert inp["type"] == "datasource" and inp["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    provisioned = {d["uid"] for d in yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]}
    text = DASHBOARD.read_text(encoding="utf-8")
    assert [uid for uid in provisioned if uid in text] == []


def panel_units(panel: dict) -> set[str]:
    fc = panel.get("fieldConfig") or {}
    units = {(fc.get("defaults") or {}).get("unit") or "none"}
    for override in fc.get("overrides") or []:
        units |= {p["value"] for p in override.get("properties", []) if p.get("id") == "unit"}
    return units


def test_one_unit_per_panel(dashboard):
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert len(panel_units(panel)) == 1, (panel["title"], panel_units(panel))
    lag = [p for p in dashboard["panels"] if any("loopline_consumer_lag" in t["expr"] for t in p.get("targets", []))]
    assert lag and all(panel_units(p) != {"short"} and panel_units(p) != {"none"} for p in lag), "lag panel needs its unit"


def test_the_unit_check_catches_a_mixed_panel(dashboard):
    broken = json.loads(json.dumps(dashboard))
    panel = next(p for p in broken["panels"] if p["type"] == "timeseries")
    panel["fieldConfig"]["overrides"] = [{"matcher": {"id": "byName", "options": "x"},
                                          "properties": [{"id": "unit", "value": "bytes"}]}]
    assert len(panel_units(panel)) == 2


def test_health_panels_for_every_part(dashboard):
    health = " ".join(expr for _, expr in dashboard_queries(dashboard))
    for job in ("loopline-worker", "loopline-review", "loopline-learner"):
        assert f'up{{job="{job}"}}' in health, f"no health panel for {job}"
    assert "loopline_expected_workers" in health, "workers up must be shown against the expected count"
