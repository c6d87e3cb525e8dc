"""report.json of the demo: figures per event from the observer's arrays (issue #17, item 5)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from loopline.connectors.demo.report_json import report_fields, write_report_json


def observer(n: int = 12):
    # events 0..11: auto(0) / review(1); producer says fraud on 0..3; truth fraud on 2..5
    tier = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0], dtype=np.int8)
    pred = np.zeros(n, bool)
    pred[:4] = True
    true = np.zeros(n, bool)
    true[2:6] = True
    reviewed = np.full(n, -1, np.int8)
    reviewed[1] = 0  # review answer fixes a false positive before it is served
    reviewed[5] = 1  # review answer fixes a false negative
    reviewed[0] = 0  # an audit of an auto decision: answered, but it was already served
    return SimpleNamespace(tier=tier, pred_fraud=pred, true_fraud=true, reviewed=reviewed, tasks=3)


def test_fields_count_answers_and_served_decisions(tmp_path):
    summary = {"events": 12, "seed": 7, "shift_at": 3, "drift_at": 6,
               "loop": {"shift_detection": (2, "feature"), "concept_detection": None, "error_stream_detection": 4}}
    r = report_fields(observer(), summary)
    # producer errors: 0, 1 (false positives), 4, 5 (false negatives) -> 4 errors
    assert r["human_share"] == 3 / 12
    assert r["errors_answered_share"] == 3 / 4  # 0 (audit), 1, 5
    assert r["errors_served_share"] == 2 / 4  # 0 (audited after serving) and 4 (never seen)
    assert r["producer_fp"] == 2 and r["served_fp"] == 1 and r["served_fp_change"] == -0.5
    assert r["detection_delay_events"]["feature_shift"]["drift_monitor"] == 2
    assert r["detection_delay_events"]["concept_change"] == {"drift_monitor": None, "error_stream": 4}
    assert set(r["served_f1_by_cycle"]) == {"feature_shift", "concept_change"} and r["seed"] == 7
    path = write_report_json(tmp_path, observer(), summary, team={"reviewers": 2})
    assert json.loads(path.read_text())["team"] == {"reviewers": 2}


def test_a_challenger_that_served_the_right_label_is_not_an_error_served_unchanged():
    summary = {"events": 12, "seed": 7, "shift_at": 3, "drift_at": 6, "loop": {}}
    obs = observer()
    obs.served_fraud = obs.pred_fraud.copy()
    obs.by_challenger = np.zeros(12, bool)
    obs.served_fraud[4] = True  # event 4 (auto, a producer false negative) served right by the challenger
    obs.by_challenger[[4, 6]] = True  # event 6: the challenger agreed with the producer
    r = report_fields(obs, summary)
    assert r["errors_served_share"] == 1 / 4  # only 0 (audited after it was served) is left
    assert r["served_by_challenger_share"] == 2 / 12
