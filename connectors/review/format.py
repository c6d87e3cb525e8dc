"""Readable insights for reviewers: human labels, numbers for people, contributions with direction.

Shared by the web pages and the terminal reviewer, so both say the same thing:

>>> label("online_prediction"), label("account_age_days"), label("override_risk")
('Online model predicts', 'Account age (days)', 'Chance a reviewer overrides')
>>> value("amount", 10720.0), value("confidence", 0.8123), value("support_tickets", 3.0)
('$10,720.00', '81.2%', '3')
>>> contribution({"feature": "support_tickets", "contribution": -2.676}, {"support_tickets": 0.0}, "fraud", "legit")
'Support tickets = 0: −2.68, pushes towards legit'
>>> drift_words("drifting: tenure_months (rank_cusum 2e-09, 1.4x threshold)")
'Drift alarm active: tenure (months) (rank_cusum score 2e-09, 1.4 × its threshold)'
>>> drift_words("stable")
'No drift detected'
"""
from __future__ import annotations

import math
import re

LABELS = {
    "rule": "Routing rule", "reason": "Routing rule", "override_risk": "Chance a reviewer overrides",
    "drift_status": "Drift", "online_prediction": "Online model predicts", "confidence": "Model confidence",
    "predicted_label": "Predicted label", "priority": "Priority", "due_by": "Due", "created_at": "Created",
    "model_version": "Model version", "policy_version": "Policy version", "sampling_propensity": "Sampling propensity",
    "audit": "Audit sample",
}
_UNITS = {"days": "days", "months": "months", "years": "years", "hours": "hours", "minutes": "minutes",
          "seconds": "seconds", "ms": "ms", "pct": "%", "usd": "$", "eur": "€"}
MONEY_KEYS = ("amount", "price", "balance", "revenue", "spend", "income", "salary", "payment", "charge", "cost",
              "value_usd", "total")
PROBABILITY_KEYS = ("confidence", "override_risk", "probability", "sampling_propensity", "risk_score", "share", "rate")
MINUS = "\u2212"


def label(key: str) -> str:
    """A human label for a field name: known names from :data:`LABELS`, else words with the unit apart."""
    if key in LABELS:
        return LABELS[key]
    words = [w for w in re.split(r"[_\s]+", str(key)) if w]
    if not words:
        return str(key)
    unit = _UNITS.get(words[-1].lower()) if len(words) > 1 else None
    if unit:
        words = words[:-1]
    text = " ".join(words)
    text = text[:1].upper() + text[1:]
    return f"{text} ({unit})" if unit else text


def _is_money(key: str) -> bool:
    k = key.lower()
    return any(k == m or k.endswith("_" + m) or k.startswith(m + "_") for m in MONEY_KEYS)


def _is_probability(key: str) -> bool:
    k = key.lower()
    return any(k == p or k.endswith("_" + p) for p in PROBABILITY_KEYS)


def number(v: float) -> str:
    """A number for people: whole numbers without decimals, thousands separated, 3 significant digits."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 0.01:
        return f"{v:.3g}"
    return f"{v:.2g}"


def value(key: str, v: object) -> str:
    """``v`` formatted for the field ``key``: money with a currency sign, probabilities as %, else :func:`number`."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)) and math.isfinite(v):
        if _is_money(key):
            return f"{MINUS if v < 0 else ''}${abs(v):,.2f}"
        if _is_probability(key) and 0.0 <= v <= 1.0:
            return percent(v)
        return number(v)
    return str(v)


def percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def signed(x: float) -> str:
    return f"{MINUS if x < 0 else '+'}{abs(x):.3g}" if abs(x) < 0.01 else f"{MINUS if x < 0 else '+'}{abs(x):.2f}"


def towards(c: float, predicted: str, other: str | None) -> str:
    """Where a contribution pushes: positive -> towards the predicted label; negative -> towards the
    other class of a two-class model, else away from the predicted label."""
    if c > 0:
        return f"towards {predicted}"
    if c < 0:
        return f"towards {other}" if other else f"away from {predicted}"
    return "neither way"


def contribution(c: dict, features: dict | None, predicted: str, other: str | None) -> str:
    """One contribution as a sentence part: feature = its value: signed weight, pushes towards class."""
    name = c.get("feature", "")
    shown = label(name)
    if features and name in features:
        shown += f" = {value(name, features[name])}"
    w = float(c.get("contribution") or 0.0)
    return f"{shown}: {signed(w)}, pushes {towards(w, predicted, other)}"


_DRIFT = re.compile(r"([^,(]+?) \((\S+) ([^,)\s]+)(?:, ([\d.]+)x threshold)?\)")


def drift_words(status: object) -> str:
    """The drift status in words, with each signal's score relative to its threshold when known."""
    if status is None or status == "":
        return ""
    s = str(status)
    if s == "stable":
        return "No drift detected"
    if not s.startswith("drifting:"):
        return s
    parts = []
    for m in _DRIFT.finditer(s[len("drifting:"):]):
        signal, detector, score, ratio = m.group(1).strip(), m.group(2), m.group(3), m.group(4)
        rel = f", {ratio} × its threshold" if ratio else ""
        parts.append(f"{label(signal).lower() if signal != signal.upper() else signal} ({detector} score {score}{rel})")
    more = re.search(r"\+(\d+) more", s)
    text = "Drift alarm active: " + "; ".join(parts or [s[len("drifting:"):].strip()])
    return text + (f" and {more.group(1)} more signals" if more else "")


def other_label(labels: list[str] | tuple[str, ...], predicted: str) -> str | None:
    """The single other class of a two-class model (None when there are more or fewer)."""
    others = [lb for lb in labels if lb != predicted]
    return others[0] if len(others) == 1 else None


def insight_rows(ins: dict, labels: list[str] | tuple[str, ...], predicted: str) -> list[tuple[str, str]]:
    """(label, text) rows of the insights block; empty values are left out."""
    rows = []
    if ins.get("rule"):
        rows.append((label("rule"), str(ins["rule"])))
    if ins.get("override_risk") is not None:
        rows.append((label("override_risk"), percent(float(ins["override_risk"]))))
    if ins.get("online_prediction"):
        agree = "agrees" if ins["online_prediction"] == predicted else "disagrees"
        rows.append((label("online_prediction"), f"{ins['online_prediction']} ({agree} with the model)"))
    words = drift_words(ins.get("drift_status"))
    if words:
        rows.append((label("drift_status"), words))
    return rows


def _map_line(title: str, values: dict | None) -> str:
    if not values:
        return ""
    return f"{title}: " + ", ".join(f"{label(str(k))} {value(str(k), v)}" for k, v in sorted(values.items()))


def task_lines(task: dict, labels: list[str], now_ms: float, contract_guidelines: str = "") -> list[str]:
    """The terminal reviewer's view of a task: escalation context and notes first, then the case,
    with the same labels and number formats as the web page; empty parts left out."""
    p, ins = task["prediction"], task.get("insights") or {}
    predicted = p["predicted_label"]
    lines = []
    esc = task.get("escalation")
    if esc:
        ago = max(0, int((now_ms - esc.get("at", now_ms)) / 60000))
        lines.append(f"!! escalated by {esc.get('by', '')} {ago} min ago — original reason {esc.get('original_reason', '')}"
                     f" (priority {esc.get('original_priority', '')})")
        if esc.get("note"):
            lines.append(f'!! note: "{esc["note"]}"')
    for n in task.get("notes") or []:
        if not esc or n.get("text") != esc.get("note"):
            lines.append(f"   note by {n.get('by', '')}: {n.get('text', '')}")
    due_s = (task["due_by"] - now_ms) / 1000
    due = f"overdue {int(-due_s // 60)} min" if due_s < 0 else f"due in {int(due_s // 60)} min"
    age = max(0, int((now_ms - p.get("emitted_at", now_ms)) / 60000))
    lines.append(f"== {task['event_id']} · {task['queue']} queue · {task['model_name']} {task['model_version']} · "
                 f"priority {task['priority']} · {due} · prediction {age} min old"
                 + (" · audit sample" if task.get("audit") else ""))
    lines.append(f"predicted {predicted} at {percent(p['confidence'])} confidence · reason: {task['reason']}")
    probs = p.get("class_probabilities") or {}
    if probs:
        lines.append("class probabilities: " + ", ".join(f"{k} {percent(v)}" for k, v in
                                                         sorted(probs.items(), key=lambda kv: -kv[1])))
    lines += [f"{k}: {v}" for k, v in insight_rows(ins, labels, predicted)]
    other = other_label(labels, predicted)
    for c in ins.get("top_contributions") or []:
        lines.append("  why: " + contribution(c, p.get("features_numeric"), predicted, other))
    for title, key in (("features", "features_numeric"), ("categories", "features_categorical"), ("risk", "risk"),
                       ("context", "context")):
        line = _map_line(title, p.get(key))
        if line:
            lines.append(line)
    if contract_guidelines:
        lines.append("guidelines: " + contract_guidelines)
    return lines
