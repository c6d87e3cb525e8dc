"""Supervisor: restarts an exiting child with backoff, gives up at the cap, stops cleanly."""
from __future__ import annotations

import io
import sys
import threading
import time

from loopline.connectors.supervise import Supervisor


def test_restarts_a_crashing_child_then_gives_up_at_the_cap():
    log = io.StringIO()
    sup = Supervisor([sys.executable, "-c", "import sys; sys.exit(3)"], max_restarts=2, window_seconds=60,
                     backoff_start=0.01, log=log)
    assert sup.run() == 1
    assert sup.restarts == 2 and sup.exit_codes == [3, 3, 3]
    lines = log.getvalue().splitlines()
    assert len(lines) == 3  # one line per restart, one for giving up
    assert lines[0].startswith("loopline up: the worker exited with code 3; restart 1 in 0.0s")
    assert "giving up" in lines[-1]


def test_a_child_that_recovers_keeps_being_restarted_after_a_quiet_window():
    log = io.StringIO()
    ticks = iter(range(0, 10_000, 100))  # every start/exit is 100 "seconds" after the previous one
    sup = Supervisor([sys.executable, "-c", "import sys; sys.exit(1)"], max_restarts=1, window_seconds=50,
                     backoff_start=0.01, log=log, clock=lambda: next(ticks))
    t = threading.Thread(target=sup.run)
    t.start()
    deadline = time.monotonic() + 20
    while sup.restarts < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    sup.stop()
    t.join(20)
    assert sup.restarts >= 4 and "giving up" not in log.getvalue()


def test_stop_terminates_the_child_and_does_not_restart_it():
    sup = Supervisor([sys.executable, "-c", "import time; time.sleep(60)"], backoff_start=0.01, log=io.StringIO())
    result = []
    t = threading.Thread(target=lambda: result.append(sup.run()))
    t.start()
    deadline = time.monotonic() + 10
    while sup.pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sup.pid is not None
    started = time.monotonic()
    sup.stop()
    t.join(10)
    assert result == [0] and sup.restarts == 0 and time.monotonic() - started < 10


def test_restart_kills_the_child_runs_the_hook_first_and_is_not_a_crash():
    log = io.StringIO()
    order: list[str] = []
    sup = Supervisor([sys.executable, "-c", "import time; time.sleep(60)"], max_restarts=0, backoff_start=0.01,
                     log=log)
    t = threading.Thread(target=sup.run)
    t.start()
    deadline = time.monotonic() + 20
    while sup.pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first = sup.pid
    sup.restart("the broker was replaced", hard=True, before_start=lambda: order.append(f"hook, child {sup.pid}"))
    while (sup.pid is None or sup.pid == first) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = sup.pid
    sup.stop()
    t.join(20)
    assert second is not None and second != first
    assert order == ["hook, child None"]  # the old child was gone before the hook, the new one not started yet
    assert sup.restarts == 0 and sup.exit_codes == []  # max_restarts=0: a crash would have given up
    assert "restarted the worker: the broker was replaced" in log.getvalue()
