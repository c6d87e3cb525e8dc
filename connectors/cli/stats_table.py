"""The readable table ``loopline stats`` prints by default (``--json`` keeps the full report).

One row per model and tier (all-time figures): decisions, routed share, audits done
vs expected (auto tier), answered corrections, override rate, review latency p50 and
the auto tier's IPW error-rate estimate with its 95% interval. Rates are
percentages with one decimal; ``-`` where a rate has no denominator yet.

>>> snap = {"all_time": {"fraud": {"events": 4, "tiers": {"auto": {"events": 3, "routed_share": 0.75,
...     "audited": 1, "expected_audited": 0.06, "outcomes": {"answered": 1, "override_rate": 1.0,
...     "review_latency_seconds": {"p50": 30.0}}, "error_rate_ipw": {"estimate": 1.0, "ci95": [0.2, 1.0]}}}}}}
>>> print(stats_table(snap, workers=1))
MODEL  TIER  DECISIONS  SHARE  AUDITED (EXP)  ANSWERED  OVERRIDE  P50 REVIEW  AUTO ERROR (95% CI)
fraud  auto          3  75.0%        1 (0.1)         1    100.0%       30.0s  100.0% [20.0%, 100.0%]
1 worker(s), all-time figures; `loopline stats --json` for windows, histograms and intervals
"""
from __future__ import annotations


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def stats_table(snap: dict, workers: int) -> str:
    head = ["MODEL", "TIER", "DECISIONS", "SHARE", "AUDITED (EXP)", "ANSWERED", "OVERRIDE", "P50 REVIEW",
            "AUTO ERROR (95% CI)"]
    rows = []
    for model, m in sorted(snap.get("all_time", {}).items()):
        for tier in ("auto", "review", "escalate"):
            t = m["tiers"].get(tier)
            if t is None:
                continue
            out = t.get("outcomes", {})
            exp = t.get("expected_audited")
            audited = f"{t.get('audited', 0)} ({exp:.1f})" if exp is not None else "-"
            p50 = (out.get("review_latency_seconds") or {}).get("p50")
            ipw = t.get("error_rate_ipw")
            err = "-"
            if ipw and ipw.get("estimate") is not None:
                lo, hi = ipw.get("ci95") or (None, None)
                err = f"{_pct(ipw['estimate'])} [{_pct(lo)}, {_pct(hi)}]"
            rows.append([model, tier, str(t["events"]), _pct(t.get("routed_share")), audited,
                         str(out.get("answered", 0)), _pct(out.get("override_rate")),
                         "-" if p50 is None else f"{p50:.1f}s", err])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 4, 5, 6, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    text = [line(head)] + [line(r) for r in rows]
    if not rows:
        text.append("(no decisions yet)")
    text.append(f"{workers} worker(s), all-time figures; `loopline stats --json` for windows, histograms and intervals")
    return "\n".join(text)
