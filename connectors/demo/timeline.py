"""The demo's view of the worker over time: drift scores, drift state and model quality from ``/metrics``.

The demo scrapes the worker once a second (as Prometheus would) and keeps, per
scrape, the events sent so far and the few series the report plots. Bounded:
one row per second of the run, a handful of series per row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

WANTED = ("loopline_drift_score", "loopline_drift_active", "loopline_online_f1", "loopline_feedback_to_model_seconds",
          "loopline_drift_detections")


@dataclass
class Timeline:
    t: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # (name, labels tuple) -> value

    def scrape(self, text: str, sent: int) -> None:
        row: dict = {}
        for fam in text_string_to_metric_families(text):
            if not fam.name.startswith(WANTED):
                continue
            for s in fam.samples:
                row[(s.name, tuple(sorted(s.labels.items())))] = s.value
        self.t.append(time.monotonic())
        self.sent.append(sent)
        self.rows.append(row)

    def series(self, name: str, **match) -> dict[tuple, np.ndarray]:
        """Every labelled series of ``name`` whose labels include ``match``: labels -> values (NaN when absent)."""
        keys = {k for row in self.rows for k in row if k[0] == name and all(dict(k[1]).get(a) == b
                                                                           for a, b in match.items())}
        return {k[1]: np.array([row.get(k, np.nan) for row in self.rows], dtype=float) for k in sorted(keys)}

    def first_active_after(self, sent_at: int, new_only: bool = False, **match) -> tuple[int, str] | None:
        # ``signals=(...)`` restricts to those signals
        """(events after ``sent_at``, signal) of the first drift alarm active after that point.

        ``new_only``: only alarms that *start* after it (a signal already drifting does not count).
        """
        sent = np.asarray(self.sent)
        best = None
        signals = match.pop("signals", None)
        for labels, v in self.series("loopline_drift_active", **match).items():
            if signals is not None and dict(labels).get("signal") not in signals:
                continue
            on = np.nan_to_num(v) > 0
            if new_only:
                on = on & ~np.concatenate([[False], on[:-1]])
            idx = np.flatnonzero(on & (sent >= sent_at))
            if len(idx) and (best is None or sent[idx[0]] < best[0]):
                best = (int(sent[idx[0]]), dict(labels).get("signal", "?"))
        return None if best is None else (best[0] - sent_at, best[1])

    def last(self, name: str, **match) -> float | None:
        """The newest non-NaN value of the first series of ``name`` matching ``match``."""
        for _, v in self.series(name, **match).items():
            ok = v[~np.isnan(v)]
            if len(ok):
                return float(ok[-1])
        return None

    def histogram_quantile(self, name: str, q: float, **match) -> float | None:
        """``q`` quantile of a histogram's last scrape, summed over matching label sets (linear in the bucket)."""
        if not self.rows:
            return None
        last = self.rows[-1]
        buckets: dict[float, float] = {}
        for (n, labels), v in last.items():
            d = dict(labels)
            if n == name + "_bucket" and all(d.get(a) == b for a, b in match.items()):
                le = float(dict(labels)["le"])
                buckets[le] = buckets.get(le, 0.0) + v
        if not buckets or max(buckets.values()) == 0:
            return None
        edges = sorted(buckets)
        counts = [buckets[e] for e in edges]
        target = q * counts[-1]
        prev_e, prev_c = 0.0, 0.0
        for e, c in zip(edges, counts):
            if c >= target:
                if e == float("inf"):
                    return prev_e
                return prev_e + (e - prev_e) * (target - prev_c) / max(c - prev_c, 1e-12)
            prev_e, prev_c = e, c
        return edges[-2] if len(edges) > 1 else None


def plot_drift_scores(tl: Timeline, change_points: dict[str, int], path: Path, top: int = 6) -> bool:
    """Drift score / threshold per signal over events sent, true change points marked. False if no data."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = tl.series("loopline_drift_score")
    if not scores:
        return False
    peak = sorted(scores.items(), key=lambda kv: -np.nan_to_num(kv[1]).max())[:top]
    x = np.asarray(tl.sent)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for labels, v in peak:
        d = dict(labels)
        ax.plot(x, v, label=f"{d.get('signal')} ({d.get('detector')})", lw=1.2)
    for name, at in change_points.items():
        ax.axvline(at, color="k", ls="--", lw=1)
        ax.text(at, ax.get_ylim()[1] * 0.95, f" {name}", va="top", fontsize=8)
    ax.set_xlabel("events sent")
    ax.set_ylabel("detector score")
    ax.set_title("Drift scores over the run (dashed: true change points)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_f1(tl: Timeline, change_points: dict[str, int], path: Path) -> bool:
    """Champion (the producer's model) vs the online challenger: rolling F1 on corrected events."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f1 = tl.series("loopline_online_f1")
    if not f1:
        return False
    x = np.asarray(tl.sent)
    fig, ax = plt.subplots(figsize=(9, 4))
    for labels, v in f1.items():
        d = dict(labels)
        ax.plot(x, v, label=f"{d.get('model')} {d.get('role')}", lw=1.4)
    for name, at in change_points.items():
        ax.axvline(at, color="k", ls="--", lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("events sent")
    ax.set_ylabel("F1 on corrected events (rolling)")
    ax.set_title("Champion vs online model over correction cycles")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def live_loop_line(tl: Timeline) -> str:
    """The loop's state for the live progress line: drifting signals and champion vs online F1."""
    row = tl.rows[-1] if tl.rows else {}
    drifting = sorted({dict(k[1]).get("signal", "?") for k, v in row.items()
                       if k[0] == "loopline_drift_active" and v > 0})
    f1 = {dict(k[1]).get("role"): v for k, v in row.items() if k[0] == "loopline_online_f1"}
    drift = f"drift: {','.join(drifting[:3])}" if drifting else "drift: none"
    if "champion" in f1 and "challenger" in f1:
        return f"{drift}  F1 champion {f1['champion']:.2f} online {f1['challenger']:.2f}"
    return drift


def loop_figures(tl: Timeline, summary: dict, stats: dict) -> dict:
    """Drift detection delays, F1 over three correction cycles and feedback-to-model latency, with table rows."""
    rate = summary["events"] / max(summary["duration"], 1e-9)
    out: dict = {"rate": rate}
    shift, drift = summary["shift_at"], summary["drift_at"]
    out["shift_detection"] = tl.first_active_after(shift)
    # a concept drift changes what the model outputs and how often humans disagree, not the inputs
    out["concept_detection"] = tl.first_active_after(drift, new_only=True, signals=("confidence", "class", "error"))
    out["error_stream_detection"] = tl.first_active_after(drift, signal="error")
    # three correction cycles: the corrected stream split in thirds by time; F1 at the end of each
    f1 = {}
    for role in ("champion", "challenger"):
        series = tl.series("loopline_online_f1", role=role)
        if series:
            v = next(iter(series.values()))
            cuts = [int(len(v) * k / 3) - 1 for k in (1, 2, 3)]
            f1[role] = [None if np.isnan(v[max(c, 0)]) else float(v[max(c, 0)]) for c in cuts]
    out["f1_cycles"] = f1
    out["feedback_p50"] = tl.histogram_quantile("loopline_feedback_to_model_seconds", 0.5, stage="in_use")
    out["feedback_p99"] = tl.histogram_quantile("loopline_feedback_to_model_seconds", 0.99, stage="in_use")

    def fmt_f1(xs):
        return " -> ".join("n/a" if x is None else f"{x:.2f}" for x in xs)

    def fmt_delay(d, what):
        if d is None:
            return f"{what}: not detected"
        events = d[0] if isinstance(d, tuple) else d
        sig = f" ({d[1]})" if isinstance(d, tuple) else ""
        return f"{what}: {events:,} events / {events / rate:.1f} s{sig}"

    rows = {}
    if f1.get("challenger"):
        rows["| F1 of the online model"] = (
            f"| F1 of the online model over three correction cycles | 0.72 -> 0.84 | online {fmt_f1(f1['challenger'])}"
            f" vs producer's model {fmt_f1(f1.get('champion', []))} (rolling F1 of the fraud class on corrected events) |")
    rows["| time from drift start to detection"] = (
        f"| time from drift start to detection | (report) | {fmt_delay(out['shift_detection'], 'feature shift')}; "
        f"{fmt_delay(out['concept_detection'], 'concept drift (confidence / class / error signals)')}; "
        f"{fmt_delay(out['error_stream_detection'], 'on the error stream of corrections')} |")
    if out["feedback_p50"] is not None:
        rows["| feedback-to-model latency"] = (
            f"| feedback-to-model latency | months (ticket-driven retraining) | p50 {out['feedback_p50']:.1f} s, "
            f"p99 {out['feedback_p99']:.1f} s (correction reviewed -> override-risk model in use by the router) |")
    out["rows"] = rows
    return out
