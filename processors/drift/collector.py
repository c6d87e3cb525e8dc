"""``DriftCollector``: one worker's drift counts for every model it routes, flushed as summaries.

The worker side of "many workers, one verdict". The route hook hands each
routed frame (whole numpy columns) to :meth:`add_frame`; the feedback hook
hands joined ``TrainingExample`` dicts to :meth:`add_examples`; a timer calls
:meth:`flush`, which returns one message per model with the additive counts
since the previous flush and, per predictions-topic partition, the latest
``emitted_at`` this worker routed from it (its *partition watermark*). The
drift agent sums the counts and evaluates a bucket only when every partition's
watermark has passed it, so the verdicts do not depend on how partitions are
spread over workers.

Memory is bounded: per model a :class:`~loopline.processors.drift.histogram.DriftSketch`
(raw rows only while the model version has no reference layout, at most
``max_raw_rows``), one integer per partition, and at most ``max_models``
models (predictions of further models are counted in :attr:`dropped_models`).

>>> from loopline.processors.testing import make_events
>>> from loopline.processors.wire.frame import frames_from_events
>>> c = DriftCollector(DriftConfig(bucket_ms=1000))
>>> for f in frames_from_events(make_events(50, start_ms=0)):
...     c.add_frame(f, partition=2)
>>> [(m["model_name"], m["partition_watermarks"], len(m["summary"]["versions"]["v1"]["rows"]["ids"]))
...  for m in c.flush()]
[('fraud', {'2': 49}, 50)]
>>> c.flush()
[]
"""
from __future__ import annotations

import numpy as np

from loopline.processors.drift.columns import Columns, outcome_columns
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.histogram import DriftSketch
from loopline.processors.drift.reference import ReferenceProfile
from loopline.processors.wire.frame import PredictionFrame


class DriftCollector:
    """Per-worker drift sketches of every model (see the module docstring).

    Parameters
    ----------
    config
        Drift settings shared with the drift agent (bucket width, raw-row cap).
    max_models
        Models counted at once; predictions of further models are not counted.
    """

    def __init__(self, config: DriftConfig | None = None, max_models: int = 100,
                 max_rows_per_message: int = 5000) -> None:
        self.config = config or DriftConfig()
        self.max_models = max_models
        self.max_rows_per_message = max_rows_per_message
        self._sketches: dict[str, DriftSketch] = {}
        self._references: dict[str, dict[str, ReferenceProfile]] = {}
        self._watermarks: dict[str, dict[int, int]] = {}
        self._dirty: set[str] = set()
        self.dropped_models = 0

    def _sketch(self, model: str) -> DriftSketch | None:
        sk = self._sketches.get(model)
        if sk is None:
            if len(self._sketches) >= self.max_models:
                return None
            sk = self._sketches[model] = DriftSketch(model, self.config)
            for p in self._references.get(model, {}).values():
                sk.set_reference(p)
        return sk

    def add_frame(self, frame: PredictionFrame, partition: int) -> None:
        """Count one routed frame (every event in it was decided) from ``partition``."""
        if not frame.n:
            return
        sk = self._sketch(frame.model_name)
        if sk is None:
            self.dropped_models += frame.n
            return
        sk.update_frame(frame)
        wm = self._watermarks.setdefault(frame.model_name, {})
        last = int(frame.emitted_at.max())
        if last > wm.get(partition, -(1 << 62)):
            wm[partition] = last
        self._dirty.add(frame.model_name)

    def add_examples(self, examples: list[dict]) -> None:
        """Count joined corrections (``TrainingExample`` dicts) as the model's error stream."""
        by_model: dict[str, list[dict]] = {}
        for ex in examples:
            by_model.setdefault(ex["model_name"], []).append(ex)
        for model, group in by_model.items():
            sk = self._sketch(model)
            if sk is None:
                continue
            for version, cols in outcome_columns(group).items():
                sk.update_columns(version, None, cols)
                self._dirty.add(model)

    def set_references(self, model: str, profiles: list[ReferenceProfile]) -> None:
        """Bin ``model``'s predictions with exactly these layouts from now on.

        A version whose layout disappears from the set (the agent lost it) goes
        back to raw rows: counts binned so far in this flush are discarded.
        """
        new = {p.model_version: p for p in profiles if p.model_name == model}
        old = self._references.get(model, {})
        self._references[model] = new
        while len(self._references) > 2 * self.max_models:
            self._references.pop(next(iter(self._references)))
        sk = self._sketches.get(model)
        if sk is None:
            return
        if any(v not in new or new[v].fingerprint != p.fingerprint for v, p in old.items()):
            sk = self._sketches[model] = DriftSketch(model, self.config)
        for p in new.values():
            sk.set_reference(p)

    def references(self, model: str) -> dict[str, str]:
        """Version -> fingerprint of the layouts in use for ``model``."""
        return {v: p.fingerprint for v, p in self._references.get(model, {}).items()}

    def flush(self) -> list[dict]:
        """Messages with the new counts: ``{model_name, partition_watermarks, summary}``.

        Raw rows (reference phase) are split over several messages of at most
        ``max_rows_per_message`` rows each, so a message stays well under
        Kafka's request size; counts are additive, so the parts sum to the
        whole. Only a model's last message carries the partition watermarks:
        the agent must not evaluate before it has every part.
        """
        out = []
        for model in sorted(self._dirty):
            sk = self._sketches.get(model)
            if sk is None:
                continue
            parts = self._split(sk.summary())
            wm = self._watermarks.get(model, {})
            for i, part in enumerate(parts):
                marks = {str(p): t for p, t in sorted(wm.items())} if i == len(parts) - 1 else {}
                out.append({"model_name": model, "partition_watermarks": marks, "summary": part})
        self._dirty.clear()
        return out

    def _split(self, summary: dict) -> list[dict]:
        cap = self.max_rows_per_message
        extra = []
        for version, part in summary["versions"].items():
            for field in ("rows", "outcomes"):
                d = part[field]
                if d is None or len(d["ids"]) <= cap:
                    continue
                cols = Columns.from_json(d)
                part[field] = cols.take(np.arange(cap)).to_json()
                for a in range(cap, len(cols), cap):
                    chunk = cols.take(np.arange(a, min(a + cap, len(cols)))).to_json()
                    extra.append({**summary, "versions": {version: {
                        "fingerprint": part["fingerprint"], "rows": chunk if field == "rows" else None,
                        "outcomes": chunk if field == "outcomes" else None, "buckets": {},
                        "outcome_buckets": {}, "dropped": 0}}})
        return extra + [summary]
