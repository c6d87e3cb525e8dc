"""One mergeable cell of per-tier statistics, and the estimators read from it.

A :class:`TierSummary` holds, for one (model, tier) in one window, only sums
and fixed-size arrays — counts, weighted sums, a fixed-edge confidence
histogram, a log-bucket latency histogram (:mod:`loopline.processors.stats.latency`) and
a bounded label count — so two summaries add up exactly (integers) or to
rounding (float sums), and memory never depends on the number of events.

**Auto-tier error rate.** Audited auto events are answered by reviewers; event
``i`` was audited with probability ``p_i`` (its recorded ``sampling_propensity``)
and gets weight ``w_i = 1 / p_i``; ``y_i = 1`` when the reviewer's label differs
from the predicted label. The estimate is the Hajek (self-normalised
inverse-propensity) estimator ``sum(w y) / sum(w)``, which is unbiased for
equal propensities and consistent for any mix. Its 95% interval is the Wilson
score interval computed on Kish's effective sample size
``n_eff = (sum w)^2 / sum(w^2)`` (the plain Wilson interval when all
propensities are equal; unlike the normal approximation it stays in [0, 1] and
is informative when no error was seen). ``std_error`` is the linearised
(sandwich) standard error ``sqrt(sum(w^2 (y - p)^2)) / sum(w)``. The all-time
figures add the Horvitz-Thompson estimate ``sum(w y) / N`` over the ``N`` auto
decisions with a positive propensity: exactly unbiased once every audit task is
answered, biased low while answers are pending.

Precision, recall and false-positive rate of the producer model use the
reviewers' labels as truth and the same weights, so the auto tier's figures
describe all auto events, not only the audited ones (review and escalate
events have weight 1).

>>> wilson(0.0, 100)[1] > 0
True
"""
from __future__ import annotations

import math

import numpy as np

from loopline.processors.stats.latency import LogBuckets
from loopline.processors.wire.names import OTHER as OTHER_LABEL

COUNTS = ("events", "audited", "unsampled", "corrections", "answered", "agree", "tp", "fp", "fn", "tn",
          "sla_breached", "ipw_n", "ipw_errors", "zero_propensity", "latency_n")
SUMS = ("confidence_sum", "propensity_sum", "w_tp", "w_fp", "w_fn", "w_tn", "ipw_w", "ipw_w2", "ipw_wy",
        "ipw_w2y", "latency_sum")
C = {name: i for i, name in enumerate(COUNTS)}
S = {name: i for i, name in enumerate(SUMS)}

Z95 = 1.959963984540054


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed on ``n`` (possibly fractional) trials."""
    if n <= 0:
        return (0.0, 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


class TierSummary:
    """Sums for one (model, tier) cell; ``add`` merges another cell into this one."""

    __slots__ = ("counts", "sums", "confidence", "latency", "classes")

    def __init__(self, conf_bins: int) -> None:
        self.counts = np.zeros(len(COUNTS), dtype=np.int64)
        self.sums = np.zeros(len(SUMS), dtype=np.float64)
        self.confidence = np.zeros(conf_bins, dtype=np.int64)
        self.latency: np.ndarray | None = None  # allocated with the first outcome
        self.classes: dict[str, int] = {}

    def add(self, other: TierSummary, max_classes: int) -> None:
        self.counts += other.counts
        self.sums += other.sums
        self.confidence += other.confidence
        if other.latency is not None:
            self.latency = other.latency.copy() if self.latency is None else self.latency + other.latency
        classes = self.classes
        for label, n in other.classes.items():
            if label not in classes and len(classes) >= max_classes:
                label = OTHER_LABEL  # bounded: labels beyond max_classes share one cell
            classes[label] = classes.get(label, 0) + n

    def to_state(self) -> dict:
        lat = None
        if self.latency is not None:
            nz = np.flatnonzero(self.latency)
            lat = [nz.tolist(), self.latency[nz].tolist()]
        return {"counts": self.counts.tolist(), "sums": self.sums.tolist(), "confidence": self.confidence.tolist(),
                "latency": lat, "classes": dict(self.classes)}

    @classmethod
    def from_state(cls, state: dict, latency_size: int) -> TierSummary:
        s = cls(len(state["confidence"]))
        s.counts[:] = state["counts"]
        s.sums[:] = state["sums"]
        s.confidence[:] = state["confidence"]
        if state["latency"] is not None:
            s.latency = np.zeros(latency_size, dtype=np.int64)
            s.latency[np.asarray(state["latency"][0], dtype=np.intp)] = state["latency"][1]
        s.classes = dict(state["classes"])
        return s

    def report(self, tier: str, model_events: int, buckets: LogBuckets, all_time: bool = False) -> dict:
        """JSON-able figures; rates are None when their denominator is 0."""
        c = dict(zip(COUNTS, self.counts.tolist()))
        x = dict(zip(SUMS, self.sums.tolist()))
        lat = self.latency if self.latency is not None else np.zeros(buckets.size, dtype=np.int64)
        answered = c["answered"]
        out = {
            "events": c["events"],
            "routed_share": ratio(c["events"], model_events),
            "audited": c["audited"],
            "expected_audited": x["propensity_sum"] if tier == "auto" else None,
            "mean_confidence": ratio(x["confidence_sum"], c["events"]),
            "confidence_histogram": self.confidence.tolist(),
            "classes": dict(sorted(self.classes.items())),
            "outcomes": {
                "corrections": c["corrections"],
                "answered": answered,
                "unlabelled": c["corrections"] - answered,
                "agreement_rate": ratio(c["agree"], answered),
                "override_rate": ratio(answered - c["agree"], answered),
                "confusion": {k: c[k] for k in ("tp", "fp", "fn", "tn")},
                "precision": ratio(x["w_tp"], x["w_tp"] + x["w_fp"]),
                "recall": ratio(x["w_tp"], x["w_tp"] + x["w_fn"]),
                "false_positive_rate": ratio(x["w_fp"], x["w_fp"] + x["w_tn"]),
                "zero_propensity": c["zero_propensity"],
                "review_latency_seconds": {
                    "count": c["latency_n"], "mean": ratio(x["latency_sum"], c["latency_n"]),
                    "p50": buckets.quantile(lat, 0.5), "p95": buckets.quantile(lat, 0.95),
                    "relative_error": buckets.alpha},
                "sla_breaches": c["sla_breached"],
                "sla_breach_rate": ratio(c["sla_breached"], c["corrections"]),
            },
        }
        if tier == "auto":
            out["error_rate_ipw"] = self.ipw_error(all_time)
        return out

    def ipw_error(self, all_time: bool = False) -> dict:
        """The auto tier's error rate from audit answers (see the module docstring)."""
        c, x = self.counts, self.sums
        n = int(c[C["ipw_n"]])
        w, w2, wy, w2y = (float(x[S[k]]) for k in ("ipw_w", "ipw_w2", "ipw_wy", "ipw_w2y"))
        out: dict = {"audited_outcomes": n, "errors": int(c[C["ipw_errors"]]), "estimate": None, "ci95": None,
                     "std_error": None, "effective_n": None,
                     "method": "Hajek IPW; 95% Wilson score interval on Kish effective n"}
        if n and w > 0:
            p = wy / w
            var = max(w2y * (1 - 2 * p) + p * p * w2, 0.0) / (w * w)
            n_eff = w * w / w2
            lo, hi = wilson(p, n_eff)
            out.update(estimate=p, ci95=[lo, hi], std_error=math.sqrt(var), effective_n=n_eff)
        if all_time:
            sampled = int(c[C["events"]] - c[C["unsampled"]])
            out["ht_estimate"] = ratio(wy, sampled) if n else None
        return out


def build_cells(g: np.ndarray, n_groups: int, conf_bins: int, counts: dict, sums: dict,
                bins: np.ndarray | None = None, label_codes: np.ndarray | None = None, labels: list | None = None,
                latency_cells: np.ndarray | None = None, latency_size: int = 0) -> list[TierSummary | None]:
    """One :class:`TierSummary` per group (None for an empty group) from per-row columns.

    ``g``: group of each row; ``counts``/``sums``: field name -> per-row column
    (bool or number) summed per group; ``bins``: confidence bin per row;
    ``label_codes`` into ``labels``: predicted label per row; ``latency_cells``:
    latency cell per row (-1 = none). Rows count as *present* by ``counts["events"]``
    or ``counts["corrections"]``, whichever is given.
    """
    G = n_groups
    tot = {name: np.bincount(g, weights=col, minlength=G) for name, col in counts.items()}
    tsum = {name: np.bincount(g, weights=col, minlength=G) for name, col in sums.items()}
    hist = cls = lat = None
    if bins is not None:
        hist = np.bincount(g * conf_bins + bins, minlength=G * conf_bins).reshape(G, conf_bins)
    if label_codes is not None:
        L = max(len(labels), 1)
        cls = np.bincount(g * L + label_codes, minlength=G * L).reshape(G, L)
    if latency_cells is not None:
        ok = latency_cells >= 0
        K = latency_size
        lat = np.bincount(g[ok] * K + latency_cells[ok], minlength=G * K).reshape(G, K).astype(np.int64)
    present = np.bincount(g, minlength=G)
    out: list[TierSummary | None] = []
    for j in range(G):
        if not present[j]:
            out.append(None)
            continue
        s = TierSummary(conf_bins)
        for name, col in tot.items():
            s.counts[C[name]] = int(round(col[j]))
        for name, col in tsum.items():
            s.sums[S[name]] = col[j]
        if hist is not None:
            s.confidence[:] = hist[j]
        if cls is not None:
            s.classes = {labels[i]: int(cls[j, i]) for i in np.flatnonzero(cls[j]).tolist()}
        if lat is not None:
            s.latency = lat[j]
        out.append(s)
    return out
