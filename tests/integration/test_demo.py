"""`loopline demo` end to end, small: every event decided, corrections published, report written."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from loopline.connectors.processes import loopline_exe

pytestmark = pytest.mark.integration


def test_demo_small_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env["LOOPLINE_WEB_PORT"] = "0"  # any free port
    out = tmp_path / "demo"
    r = subprocess.run([loopline_exe(), "demo", "--events", "20000", "--duration", "8", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "sent   20,000" in r.stdout and "decided   20,000" in r.stdout
    assert "[demo] review queue: http://127.0.0.1:" in r.stdout and "(login: demo / " in r.stdout
    report = (out / "report.md").read_text()
    assert "| analyst workload vs reviewing everything | -60% |" in report
    for png in ("workload.png", "drift_ground_truth.png", "errors_vs_budget.png", "drift_scores.png",
                "f1_cycles.png"):
        assert (out / png).stat().st_size > 10_000
    # the whole loop ran: drift detected after the injected feature shift, the learner's models in use
    assert "| time from drift start to detection | (report) | feature shift: " in report
    assert "feature shift: not detected" not in report
    assert "| feedback-to-model latency | months (ticket-driven retraining) | p50 " in report
    assert "| F1 of the online model over three correction cycles | 0.72 -> 0.84 | online " in report
    assert "not measured yet" not in report
    figures = json.loads((out / "report.json").read_text())  # issue #17: figures per event, next to report.md
    assert {"human_share", "errors_answered_share", "errors_served_share", "served_f1_by_cycle",
            "producer_f1_by_cycle", "served_fp_change", "detection_delay_events", "false_alarms_per_100k",
            "seed"} <= set(figures)
    assert 0 < figures["human_share"] < 1 and figures["events"] == 20_000
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[") and "answered" in ln]
    assert int(lines[-1].split("answered")[1].split()[0].replace(",", "")) > 0
