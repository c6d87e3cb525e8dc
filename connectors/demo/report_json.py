"""``report.json``: the demo's effectiveness figures, measured per event against the simulator's ground truth.

Fields (issue #17), all from per-event arrays indexed by event position, never
from wall-clock moments:

* ``human_share`` — human tasks (audits included) per event sent;
* ``errors_answered_share`` — producer-model errors a human answered;
* ``errors_served_share`` — producer-model errors served unchanged: an
  auto-tier decision serves what its decision record says (``served_label``: the
  producer's prediction, or the promoted challenger's label), a review or
  escalation serves the human's answer when there is one (an audit checks an
  auto decision after it was served);
* ``served_by_challenger_share`` — decided events a promoted challenger served;
* ``served_f1_by_cycle`` / ``producer_f1_by_cycle`` — fraud F1 of the served and
  of the producer's decisions over three equal stretches of events after each
  change point (``feature_shift``, ``concept_change``);
* ``served_fp_change`` — false positives served vs the producer model's alone;
* ``detection_delay_events`` — per change point and signal, events from the
  change to the first alarm the worker exported (``None`` = not detected);
  the timeline samples metrics, so these are upper bounds by one sample;
* ``false_alarms_per_100k`` — drift alarms active before the first change,
  per 100k events (``None`` when the worker exported no drift series);
* ``seed``, ``events``, and the simulated team's stated capacity.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REVIEW, ESCALATE = 1, 2


def _f1(true: np.ndarray, pred: np.ndarray) -> float | None:
    if not len(true):
        return None
    tp = int((true & pred).sum())
    den = 2 * tp + int((~true & pred).sum()) + int((true & ~pred).sum())
    return 2 * tp / den if den else None


def _delay(d) -> int | None:
    if d is None:
        return None
    return int(d[0] if isinstance(d, tuple) else d)


def report_fields(obs, summary: dict, team: dict | None = None) -> dict:
    """The ``report.json`` dict of a finished demo run (``obs``: the :class:`Observer`)."""
    n = int(summary["events"])
    decided = obs.tier[:n] >= 0
    true = obs.true_fraud[:n]
    prod = obs.pred_fraud[:n]
    answered = obs.reviewed[:n] >= 0
    before_serving = answered & np.isin(obs.tier[:n], (REVIEW, ESCALATE))
    by_model = getattr(obs, "served_fraud", obs.pred_fraud)[:n]
    served = np.where(before_serving, obs.reviewed[:n] == 1, by_model)
    wrong = decided & (prod != true)
    shift, drift = int(summary["shift_at"]), int(summary["drift_at"])
    f1s: dict = {"served": {}, "producer": {}}
    for name, start, stop in (("feature_shift", shift, drift), ("concept_change", drift, n)):
        edges = np.linspace(start, stop, 4).astype(int)
        for key, pred in (("served", served), ("producer", prod)):
            f1s[key][name] = [_f1(true[a:b][decided[a:b]], pred[a:b][decided[a:b]]) for a, b in zip(edges, edges[1:])]
    fp_served = int((decided & served & ~true).sum())
    fp_prod = int((decided & prod & ~true).sum())
    loop = summary.get("loop") or {}
    return {
        "seed": summary["seed"], "events": n, "decided": int(decided.sum()),
        "team": team or {},
        "human_share": obs.tasks / max(n, 1),
        "errors_answered_share": float((wrong & answered).sum() / max(wrong.sum(), 1)),
        "errors_served_share": float((wrong & (served == prod)).sum() / max(wrong.sum(), 1)),
        "served_by_challenger_share": float((decided & getattr(obs, "by_challenger", np.zeros(n, bool))[:n]).sum()
                                            / max(int(decided.sum()), 1)),
        "served_f1_by_cycle": f1s["served"], "producer_f1_by_cycle": f1s["producer"],
        "served_fp": fp_served, "producer_fp": fp_prod,
        "served_fp_change": (fp_served - fp_prod) / fp_prod if fp_prod else None,
        "detection_delay_events": {
            "feature_shift": {"drift_monitor": _delay(loop.get("shift_detection"))},
            "concept_change": {"drift_monitor": _delay(loop.get("concept_detection")),
                               "error_stream": _delay(loop.get("error_stream_detection"))},
        },
        "false_alarms_per_100k": loop.get("false_alarms_per_100k"),
    }


def write_report_json(out: Path, obs, summary: dict, team: dict | None = None) -> Path:
    path = Path(out) / "report.json"
    path.write_text(json.dumps(report_fields(obs, summary, team), indent=1))
    return path
