"""``BaselineBuilder``: a pinned reference profile, built offline and saved as JSON.

Use it when the reference should not be "the first N events of the version"
— e.g. the validation set the model was accepted on. The monitor takes the
profile with ``DriftMonitor(..., baselines=[profile])``.

    python -m loopline.processors.drift.baseline events.jsonl --model fraud --version v3 -o fraud-v3.json

>>> from loopline.processors.testing import make_events
>>> b = BaselineBuilder("fraud", "v1", n_events=100)
>>> b.update(make_events(300, start_ms=0))
>>> p = b.profile()
>>> p.n_events, p.source, ReferenceProfile.from_json(p.to_json()).fingerprint == p.fingerprint
(100, 'baseline', True)
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from loopline.processors.drift.columns import Columns, outcome_columns
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.histogram import frames_of
from loopline.processors.drift.reference import ErrorReference, ReferenceProfile, build_profile
from loopline.processors.errors import ConfigError


class BaselineBuilder:
    """Keeps the first ``n_events`` predictions (and ``n_outcomes`` outcomes) of one model version.

    Memory is bounded by ``2 * n_events`` rows whatever the input length.
    """

    def __init__(self, model_name: str, model_version: str, n_events: int = 5000, n_outcomes: int = 1000,
                 config: DriftConfig | None = None) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.n_events = n_events
        self.n_outcomes = n_outcomes
        self.config = config or DriftConfig()
        self._rows = Columns.empty()
        self._outcomes = Columns.empty()

    def update(self, predictions=(), outcomes: list[dict] | None = None) -> None:
        """Add predictions (dicts or frames; other models/versions are ignored) and outcomes."""
        parts = [self._rows] + [Columns.from_frame(f) for f in frames_of(predictions)
                                if f.model_name == self.model_name and f.model_version == self.model_version]
        self._rows = Columns.concat(parts)
        if len(self._rows) > 2 * self.n_events:
            self._rows = self._rows.first(self.n_events)
        out = outcome_columns(outcomes or []).get(self.model_version)
        if out is not None:
            self._outcomes = Columns.concat([self._outcomes, out]).first(self.n_outcomes)

    def profile(self) -> ReferenceProfile:
        """The profile of the rows kept so far."""
        if not len(self._rows):
            raise ConfigError(f"no predictions of {self.model_name} {self.model_version} to build a baseline from")
        c = self.config
        p = build_profile(self._rows.first(self.n_events), self.model_name, self.model_version, c.bucket_ms,
                          c.numeric_bins, c.top_k, c.max_known, source="baseline")
        out = self._outcomes
        if len(out):
            span = max(int(out.t.max() - out.t.min()), 1)
            per_bucket = c.outcomes_per_bucket or max((len(out) - 1) * c.bucket_ms / span, 1e-3)
            errors = int(np.round(out.fields["error"].sum()))
            p.error = ErrorReference(len(out), errors, float(min(per_bucket, len(out))))
        return p


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Build a pinned drift reference profile from PredictionEvent JSON lines.")
    ap.add_argument("events", help="file with one decoded PredictionEvent JSON object per line")
    ap.add_argument("--model", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--bucket-ms", type=int, default=DriftConfig.bucket_ms)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    b = BaselineBuilder(args.model, args.version, args.n, config=DriftConfig(bucket_ms=args.bucket_ms))
    with open(args.events) as fh:
        batch = []
        for line in fh:
            if line.strip():
                batch.append(json.loads(line))
            if len(batch) >= 10_000:
                b.update(batch)
                batch = []
        b.update(batch)
    b.profile().save(args.output)


if __name__ == "__main__":
    main()
