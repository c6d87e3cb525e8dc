"""``loopline policy status``: thresholds, evidence and last adjustments as text; the reliability diagram PNG.

:func:`policy_status` takes the JSON a worker serves at ``GET /stats`` (its
``calibration`` section, see :mod:`loopline.streams.quality`) and returns a plain
text report; :func:`plot_reliability` draws a reliability curve
(:meth:`loopline.processors.quality.reliability.CalibrationTracker.curve`) for the demo report.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _when(ms) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(header)] + [fmt(r) for r in rows]


def policy_status(stats: dict, last: int = 5, worst: int = 5) -> str:
    """Text for ``loopline policy status`` from one worker's ``GET /stats`` JSON."""
    cal = stats.get("calibration") or {}
    version = stats.get("policy_version") or cal.get("policy_version") or "-"
    lines = [f"worker: {stats.get('worker', '-')}   policy version: {version}"]
    auto = cal.get("autopilot") or {}
    curves = (cal.get("calibration") or {}).get("models") or {}
    models = sorted(set(auto) | set(curves))
    if not models:
        return "\n".join(lines + ["no calibration data (is the calibration runtime registered on this worker?)"])
    rows = []
    for m in models:
        a = auto.get(m) or {}
        ev = ((a.get("last") or {}).get("evidence") or {})
        spec = a.get("spec") or {}
        recent = (curves.get(m) or {}).get("recent") or {}
        state = "off" if a and not a.get("enabled", True) else ("on" if a else "-")
        rows.append([m, state, _num(a.get("threshold")), _num(a.get("policy_threshold")),
                     _pct(spec.get("error_budget")),
                     _pct(ev.get("estimate")), _pct(ev.get("upper")), _num(ev.get("n"), ".0f"),
                     _num(recent.get("ece")), (a.get("last") or {}).get("reason", "-")])
    lines += [""] + _table(["MODEL", "AUTOPILOT", "THRESHOLD", "POLICY", "BUDGET", "ERROR", "UPPER", "N", "ECE",
                            "LAST DECISION"], rows)
    for m in models:
        adj = (auto.get(m) or {}).get("adjustments") or []
        if adj:
            lines += ["", f"last adjustments of {m}:"]
            for a in adj[-last:]:
                e = a.get("evidence", {})
                where = f"  slice {a['slice']}" if a.get("slice") else ""
                lines.append(f"  {_when(a.get('at_ms'))}  {a['action']:<7} {a['old']:.3f} -> {a['new']:.3f}  "
                             f"{a['reason']:<15} error {_pct(e.get('estimate'))} "
                             f"[{_pct(e.get('lower'))}, {_pct(e.get('upper'))}] n={_num(e.get('n'), '.0f')}{where}")
    for m, dims in sorted(((cal.get("slices") or {}).get("models") or {}).items()):
        for dim, srows in dims.items():
            lines += ["", f"worst slices of {m} ({dim}):"]
            lines += ["  " + s for s in _table(
                ["SLICE", "EVENTS", "AUTO", "ERROR", "OVERRIDE", "COVERAGE", "ECE"],
                [[r["slice"], str(r["events"]), _pct((r.get("routed_share") or {}).get("auto")),
                  _pct(r.get("verified_error_rate")), _pct(r.get("override_rate")), _pct(r.get("label_coverage")),
                  _num(r.get("calibration_error"))] for r in srows[:worst]])]
    return "\n".join(lines)


def plot_reliability(curve: list[dict], path: str | Path, title: str = "Reliability diagram",
                     reference: list[dict] | None = None) -> Path:
    """Save a reliability diagram (verified accuracy vs mean confidence per bin, with intervals) as PNG.

    ``curve``: bins as returned by ``CalibrationTracker.curve``; ``reference``: an
    optional second curve (e.g. from ground truth) drawn dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfect calibration")
    if curve:
        x = [b["confidence"] for b in curve]
        y = [b["accuracy"] for b in curve]
        err = [[b["accuracy"] - b["ci"][0] for b in curve], [b["ci"][1] - b["accuracy"] for b in curve]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label="verified (IPW, 95% CI)")
    if reference:
        ax.plot([b["confidence"] for b in reference], [b["accuracy"] for b in reference], ls="--", marker="x",
                label="ground truth")
    lo = min([b["lo"] for b in (curve or []) + (reference or [])] or [0.0])
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(min(lo, min([b["accuracy"] for b in (curve or [])] or [lo])) - 0.02, 1.01)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
