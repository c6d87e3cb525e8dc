"""Prometheus conventions applied to every Loopline registry (worker, learner, review server).

- process, platform and GC collectors (``process_*``, ``python_*``): RSS, CPU, file
  descriptors, garbage collection of each server;
- no ``*_created`` series: :func:`disable_created_series` switches them off for the process
  (prometheus_client has no per-registry switch), halving the series of every counter and
  histogram;
- ``*_ratio`` names for the gauges that are ratios: :class:`RenamedSeries` exports each
  under its new name next to the old one (kept for one release, see docs/changelog.md);
- ``loopline_expected_workers``: the deployment's intended route-worker count
  (``LOOPLINE_EXPECTED_WORKERS``), read by the alert rules and the dashboard.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

import prometheus_client
from prometheus_client import CollectorRegistry, Gauge, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# old name -> new name; the old names stay exported for one release (docs/changelog.md)
RATIO_RENAMES: dict[str, str] = {
    "loopline_tier_override_rate": "loopline_tier_override_ratio",
    "loopline_auto_error_rate_estimate": "loopline_auto_error_estimate_ratio",
    "loopline_online_f1": "loopline_online_f1_ratio",
    "loopline_calibration_ece": "loopline_calibration_ece_ratio",
    "loopline_slice_error_rate": "loopline_slice_error_ratio",
}


def disable_created_series() -> None:
    """No ``*_created`` samples next to counters and histograms (process-wide; idempotent)."""
    prometheus_client.disable_created_metrics()


def add_process_collectors(registry: CollectorRegistry) -> None:
    """``process_*`` (RSS, CPU, fds, start time), ``python_info`` and ``python_gc_*`` on ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class RenamedSeries(Collector):
    """Re-exports metrics of ``registry`` under new names (``renames``: old -> new), at scrape time.

    Collects the registry once more per scrape (a guard stops the nested pass from
    collecting itself), so the copies always equal the originals.
    """

    def __init__(self, registry: CollectorRegistry, renames: Mapping[str, str]) -> None:
        self.registry = registry
        self.renames = dict(renames)
        self._busy = threading.local()
        registry.register(self)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            families = [m for m in self.registry.collect() if m.name in self.renames]
        finally:
            self._busy.on = False
        for family in families:
            new = self.renames[family.name]
            copy = Metric(new, family.documentation + f" (also exported as {family.name} until the next release)",
                          family.type, family.unit)
            copy.samples = [s._replace(name=new + s.name[len(family.name):]) for s in family.samples]
            yield copy


def apply_conventions(registry: CollectorRegistry, expected_workers: int | None = None) -> None:
    """Everything above on one server's registry (``expected_workers``: workers only)."""
    disable_created_series()
    add_process_collectors(registry)
    RenamedSeries(registry, RATIO_RENAMES)
    if expected_workers is not None:
        Gauge("loopline_expected_workers", "Route workers this deployment is meant to run (LOOPLINE_EXPECTED_WORKERS).",
              registry=registry).set(expected_workers)
