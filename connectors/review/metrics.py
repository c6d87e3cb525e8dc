"""Prometheus metrics of the review server: counters of answers, logins and second opinions, and queue gauges
read from the task store at scrape time (``_StoreCollector``)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from loopline.connectors.review.settings import QUEUES, TIER_OF_QUEUE
from loopline.connectors.review.store import ReviewStore


class ReviewMetrics:
    """Metrics on an injected ``CollectorRegistry``; queue gauges and store counters read at scrape."""

    def __init__(self, registry: CollectorRegistry, store: ReviewStore) -> None:
        self.registry = registry
        self.reviews = Counter("loopline_review_reviews_total", "answers published", ["tier", "action"],
                               registry=registry)
        self.latency = Histogram("loopline_review_latency_seconds", "claim to answer", ["tier"], registry=registry,
                                 buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
        self.bad_records = Counter("loopline_review_bad_records_total", "undecodable records on review topics",
                                   registry=registry)
        self.logins = Counter("loopline_review_logins_total",
                              "login attempts by method (form, basic) and outcome (success, failure, throttled)",
                              ["method", "outcome"], registry=registry)
        self.lockouts = Counter("loopline_review_lockouts_total",
                                "failed-login locks started, by scope (account, address)", ["scope"], registry=registry)
        self.second_opinions = Counter("loopline_review_second_opinions_total",
                                       "analyst corrections of confident predictions sent to a senior for a second "
                                       "opinion (LOOPLINE_REVIEW_CONFIRM_OVERRIDES_ABOVE)", registry=registry)
        registry.register(_StoreCollector(store))


class _StoreCollector:
    def __init__(self, store: ReviewStore) -> None:
        self.store = store

    def describe(self):
        return []

    def collect(self):
        now = time.time()
        stats = self.store.queue_stats(now)
        late = self.store.past_due(now)
        depth = GaugeMetricFamily("loopline_review_queue_depth", "tasks waiting (unleased)", labels=["tier"])
        leased = GaugeMetricFamily("loopline_review_leased_tasks", "tasks under a lease", labels=["tier"])
        oldest = GaugeMetricFamily("loopline_review_oldest_waiting_seconds", "age of the oldest waiting task",
                                   labels=["tier"])
        past_due = GaugeMetricFamily("loopline_review_tasks_past_due", "waiting (unleased) tasks past their due_by",
                                     labels=["tier"])
        for q in QUEUES:  # label tier: the worker's tier names (review, escalate), not the queue names
            tier = TIER_OF_QUEUE[q]
            depth.add_metric([tier], stats[q]["waiting"])
            leased.add_metric([tier], stats[q]["leased"])
            oldest.add_metric([tier], stats[q]["oldest_age_seconds"])
            past_due.add_metric([tier], late[q])
        yield from (depth, leased, oldest, past_due)
        yield CounterMetricFamily("loopline_review_lease_expiries", "leases that expired unanswered",
                                  value=self.store.counter("lease_expiries"))
        dropped = CounterMetricFamily("loopline_review_dropped_tasks",
                                      "tasks dropped by the store bounds (ttl, overflow) or retired when the "
                                      "Kafka cluster was replaced (broker_gone)", labels=["reason"])
        dropped.add_metric(["ttl"], self.store.counter("dropped_ttl"))
        dropped.add_metric(["overflow"], self.store.counter("dropped_overflow"))
        dropped.add_metric(["broker_gone"], self.store.counter("dropped_broker_gone"))
        yield dropped
