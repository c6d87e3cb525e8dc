"""Report of a demo run: ``report.md`` and PNG plots in the output folder."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loopline.connectors.demo.metrics import errors_vs_budget  # noqa: E402


def _rolling(x: np.ndarray, w: int) -> np.ndarray:
    if len(x) < w:
        w = max(len(x), 1)
    c = np.cumsum(np.insert(x.astype(float), 0, 0.0))
    return (c[w:] - c[:-w]) / w


def plot_workload(obs, path: Path, bucket: int = 5) -> None:
    secs = sorted(obs.per_second)
    if not secs:
        return
    last = secs[-1] // bucket + 1
    rows = np.zeros((last, 5))
    for s_ in secs:
        rows[s_ // bucket] += obs.per_second[s_]
    complete = max(1, (secs[-1] + 1) // bucket)  # a trailing partial bucket would plot as a false drop
    rows = rows[:complete]
    x = np.arange(complete) * bucket
    total = np.maximum(rows[:, :3].sum(axis=1), 1)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax.plot(x, rows[:, 1] / total * 100, color="#fdae6b", lw=2, label="review (analyst)")
    ax.plot(x, rows[:, 2] / total * 100, color="#e6550d", lw=2, label="escalate")
    ax.set_ylabel("% of decisions")
    ax.set_title(f"Routed share per tier ({bucket} s buckets)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    bx.plot(x, rows[:, 3] / bucket, color="#31a354", label="review tasks created / s")
    bx.plot(x, rows[:, 4] / bucket, color="#756bb1", label="corrections published / s (simulated team)")
    bx.plot(x, np.cumsum(rows[:, 3] - rows[:, 4]) / 100, color="grey", ls="--", label="backlog / 100")
    bx.set_xlabel("seconds since start")
    bx.set_ylabel("per second")
    bx.set_title("Human workload: tasks in, answers out")
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ground_truth_drift(obs, summary: dict, path: Path) -> None:
    decided = obs.tier >= 0
    idx = np.flatnonzero(decided)
    if len(idx) < 10:
        return
    err = (obs.pred_fraud[idx] != obs.true_fraud[idx]).astype(float)
    amount = np.log1p(obs.amount[idx].astype(float))
    w = max(len(idx) // 50, 200)
    x = idx[w - 1:] if len(idx) >= w else idx[-1:]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(x, _rolling(err, w) * 100, color="#e6550d", label=f"producer model error rate, % (rolling {w})")
    ax.set_ylabel("model error rate (%)")
    ax2 = ax.twinx()
    ax2.plot(x, _rolling(amount, w), color="#3182bd", alpha=0.7, label="mean log(1+amount)")
    ax2.set_ylabel("mean log(1+amount)")
    for at, label in ((summary["shift_at"], "feature shift"), (summary["drift_at"], "concept drift")):
        ax.axvline(at, color="k", ls="--", lw=1)
        ax.text(at, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=8, va="top")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_xlabel("event index")
    ax.set_title("Injected drift seen through ground truth (true change points dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors_vs_budget(obs, summary: dict, path: Path) -> None:
    decided = obs.tier >= 0
    conf = obs.confidence[decided].astype(float)
    err = obs.pred_fraud[decided] != obs.true_fraud[decided]
    if not err.any():
        return
    budgets = np.linspace(0, 1, 101)
    caught = errors_vs_budget(conf, err, budgets)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(budgets * 100, caught * 100, label="confidence-only routing (least confident first)")
    ax.plot([0, 100], [0, 100], color="grey", ls=":", label="random review")
    ax.scatter([summary["human_share"] * 100], [summary["errors_routed_share"] * 100], color="#e6550d", zorder=3,
               label="this run's policy")
    ax.set_xlabel("review budget: % of events sent to humans")
    ax.set_ylabel("% of producer-model errors reaching a human")
    ax.set_title("Errors caught vs review budget")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, obs, summary: dict, timeline=None, stats: dict | None = None) -> Path:
    from loopline.connectors.demo.timeline import plot_drift_scores, plot_f1

    plot_workload(obs, out / "workload.png")
    plot_ground_truth_drift(obs, summary, out / "drift_ground_truth.png")
    plot_errors_vs_budget(obs, summary, out / "errors_vs_budget.png")
    changes = {"feature shift": summary["shift_at"], "concept drift": summary["drift_at"]}
    plots = ["![workload](workload.png)", "![drift](drift_ground_truth.png)", "![errors vs budget](errors_vs_budget.png)"]
    missing = []
    if timeline is not None and plot_drift_scores(timeline, changes, out / "drift_scores.png"):
        plots.append("![drift scores](drift_scores.png)")
    else:
        missing.append("drift scores (the worker exported none)")
    if timeline is not None and plot_f1(timeline, changes, out / "f1_cycles.png"):
        plots.append("![champion vs online F1](f1_cycles.png)")
    else:
        missing.append("champion vs online F1 (no model update during the run)")
    if _plot_reliability(stats, out / "reliability.png"):
        plots.append("![reliability](reliability.png)")
    else:
        missing.append("reliability diagram (too few verified outcomes)")
    lines = [
        "# Loopline demo report", "",
        f"Seed {summary['seed']}, {summary['events']:,} events over {summary['duration']:.0f} s; feature shift at "
        f"event {summary['shift_at']:,}, concept drift at event {summary['drift_at']:,}.", "",
        f"- sent {summary['sent']:,}, decided {summary['decided']:,}, dead letters {summary['dead']:,}",
        f"- review tasks {summary['tasks']:,}, corrections published {summary['answered']:,}, joined by the "
        f"feedback agent into training examples {int(summary.get('joined', 0)):,}",
        f"- producer-model errors (ground truth) {summary['model_errors']:,}; routed to a human "
        f"{summary['errors_routed']:,}; fixed by an answer {summary['errors_fixed_by_answers']:,}", "",
        "## HITL effectiveness", "", *summary["table_lines"], "",
        "## Plots", "",
        *[line for p in plots for line in (p, "")],
        *([f"Not in this report: {'; '.join(missing)}.", ""] if missing else []),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _plot_reliability(stats: dict | None, path: Path) -> bool:
    """The producer model's reliability diagram from verified outcomes (``GET /stats`` calibration section)."""
    from loopline.connectors.cli.policy_status import plot_reliability

    try:
        models = stats["calibration"]["calibration"]["models"]
        curve = next(iter(models.values()))["all_time"]["curve"]
    except (KeyError, TypeError, StopIteration):
        return False
    if not curve:
        return False
    plot_reliability(curve, path)
    return True
