"""The exposition of a worker and of the review server against the metric catalogue of
docs/operations.md: every exported name is documented, every documented name is exported,
no ``*_created`` series, and the process collectors are there (issue #22).

The worker is built as in test_persisted_names (every agent, nothing connects to the broker).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from loopline.streams.app import LooplineWorker
from loopline.streams.conventions import RATIO_RENAMES, apply_conventions
from loopline.streams.settings import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def catalogue_names(text: str) -> set[str]:
    """Backticked names in the first column of the tables under "### Metric catalogue"."""
    section = text.split("### Metric catalogue", 1)[1].split("\n### ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([a-z_:][a-z0-9_:]*)`", line.split("|")[1]))
    return names


def exposition_names(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


@pytest.fixture(scope="module")
def worker_text() -> str:
    worker = LooplineWorker(Settings(kafka_bootstrap="127.0.0.1:1", agents="route,feedback,drift,learn",
                                     expected_workers=3))
    return generate_latest(worker.metrics.registry).decode()


@pytest.fixture(scope="module")
def review_text() -> str:
    from loopline.connectors.review.metrics import ReviewMetrics
    from loopline.connectors.review.store import ReviewStore

    registry = CollectorRegistry()
    apply_conventions(registry)
    ReviewMetrics(registry, ReviewStore(":memory:"))
    return generate_latest(registry).decode()


def test_every_exported_name_is_documented_and_every_documented_name_exported(worker_text, review_text):
    documented = catalogue_names(OPERATIONS.read_text(encoding="utf-8"))
    exported = exposition_names(worker_text) | exposition_names(review_text)
    assert sorted(exported - documented) == [], "exported but not in docs/operations.md's metric catalogue"
    assert sorted(documented - exported) == [], "in the catalogue but not exported"


def test_no_created_series_and_process_collectors(worker_text, review_text):
    for text in (worker_text, review_text):
        assert "_created" not in text
        assert re.search(r"^process_resident_memory_bytes \d", text, re.M)
        assert re.search(r"^python_gc_collections_total\{", text, re.M)
    assert re.search(r"^loopline_expected_workers 3\.0$", worker_text, re.M)


def test_ratio_names_carry_the_same_values():
    """Old and ``_ratio`` names side by side, equal, for every renamed gauge."""
    from prometheus_client import Gauge

    registry = CollectorRegistry()
    apply_conventions(registry)
    for i, old in enumerate(RATIO_RENAMES):
        Gauge(old, "x", ["model"], registry=registry).labels("fraud").set(0.1 * (i + 1))
    for i, (old, new) in enumerate(RATIO_RENAMES.items()):
        assert new.endswith("_ratio")
        assert registry.get_sample_value(old, {"model": "fraud"}) == pytest.approx(0.1 * (i + 1))
        assert registry.get_sample_value(new, {"model": "fraud"}) == pytest.approx(0.1 * (i + 1))


def test_the_catalogue_check_can_fail(worker_text):
    documented = catalogue_names(OPERATIONS.read_text(encoding="utf-8"))
    assert "loopline_predictions_total" in documented
    assert exposition_names(worker_text + "# TYPE loopline_undocumented gauge\n") - documented == {"loopline_undocumented"}


def test_lag_in_predictions_follows_the_events_per_record_the_route_agent_saw():
    """Records lag times the moving average of predictions per record (offsets given in
    place of a running consumer's; the arithmetic is what is under test)."""
    from types import SimpleNamespace

    from loopline.streams.lag import ConsumerLagCollector
    from loopline.streams.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    batch = SimpleNamespace(by_model_tier={("fraud", "auto"): 1000}, dead_by_class={}, outputs=[],
                            latencies_ms=[], predictions=1000)
    metrics.record_route("loopline.predictions", 4, batch)  # 4 PredictionBatch records, 250 each

    class Fixed(ConsumerLagCollector):
        def offsets(self):
            return {("loopline.predictions", 0): (110, 100), ("loopline.corrections", 1): (7, 4)}

    registry = CollectorRegistry()
    registry.register(Fixed(None, metrics.per_record.mean))
    get = registry.get_sample_value
    assert get("loopline_consumer_lag", {"topic": "loopline.predictions", "partition": "0"}) == 10
    assert get("loopline_consumer_lag_predictions", {"topic": "loopline.predictions", "partition": "0"}) == 2500
    assert get("loopline_consumer_lag_predictions", {"topic": "loopline.corrections", "partition": "1"}) == 3
