"""The review server publishes an answer before it records the task answered (issue #16).

The publisher here is an in-process stand-in that can fail or "crash" on demand: the
fault (a broker refusing, a process dying between two steps) is what is under test, and
it cannot be produced on demand with a real broker. The real publisher is covered by
tests/integration/test_review_api.py.
"""
from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from loopline.connectors.review.metrics import ReviewMetrics
from loopline.connectors.review.service import ReviewError, ReviewService
from loopline.connectors.review.settings import ReviewSettings
from loopline.connectors.review.store import ReviewStore
from tests.unit.test_review_store import NOW, task

REVIEWER = {"name": "ana", "role": "analyst", "pii_clearance": True}


class Crash(BaseException):
    """The process dies here (not an ``Exception``: nothing in the service may catch it)."""


class Publisher:
    def __init__(self) -> None:
        self.published: list[dict] = []
        self.fail_next = 0
        self.crash_after_publish = False

    def publish(self, correction: dict) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("broker unavailable")
        self.published.append(correction)
        if self.crash_after_publish:
            self.crash_after_publish = False
            raise Crash()


def service(path, publisher: Publisher) -> ReviewService:
    store = ReviewStore(path, lease_seconds=300, task_ttl_seconds=10 * 365 * 86400)
    return ReviewService(ReviewSettings(db_path=path), store, publisher, ReviewMetrics(CollectorRegistry(), store))


def submit(svc: ReviewService, action: str = "approve") -> dict:
    return asyncio.run(svc.submit("e1:review", REVIEWER, action))


@pytest.fixture
def db(tmp_path):
    return tmp_path / "review.sqlite3"


def claimed(db, publisher: Publisher) -> ReviewService:
    svc = service(db, publisher)
    t = task(1)
    t["prediction"]["confidence"] = 0.7
    svc.store.add_task(t, NOW)
    svc.claim("e1:review", REVIEWER)
    return svc


def test_normal_path_publishes_once_and_then_refuses_a_second_answer(db):
    pub = Publisher()
    svc = claimed(db, pub)
    first = submit(svc)
    with pytest.raises(ReviewError) as err:
        submit(svc)
    assert err.value.status == 409 and "answered already" in str(err.value)
    assert pub.published == [first]


def test_failed_publish_answers_503_and_the_resubmit_succeeds(db):
    pub = Publisher()
    svc = claimed(db, pub)
    pub.fail_next = 1
    with pytest.raises(ReviewError) as err:
        submit(svc)
    assert err.value.status == 503 and pub.published == []
    answer = submit(svc)
    assert pub.published == [answer]


def test_crash_between_publish_and_record_loses_nothing_and_resubmit_is_the_same_answer(db):
    pub = Publisher()
    svc = claimed(db, pub)
    pub.crash_after_publish = True
    with pytest.raises(Crash):
        submit(svc)
    svc.store.close()
    restarted = service(db, pub)  # same SQLite file: the lease survived, the task is not answered
    again = submit(restarted)
    assert len(pub.published) == 2
    # the same correction_id: the feedback join drops the second copy as a duplicate
    assert pub.published[0]["correction_id"] == again["correction_id"]
    with pytest.raises(ReviewError) as err:
        submit(restarted)
    assert err.value.status == 409


def test_a_second_submit_while_publishing_is_refused(db):
    pub = Publisher()
    svc = claimed(db, pub)
    svc.store.begin_answer("e1:review", "ana", time.time())
    with pytest.raises(ReviewError) as err:
        submit(svc)
    assert err.value.status == 409 and "being published" in str(err.value)
    svc.store.end_answer("e1:review", published=False)
    submit(svc)
    assert len(pub.published) == 1
