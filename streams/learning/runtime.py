"""``LearnerRuntime``: the learner agent's state between Kafka and :class:`loopline.processors.learning.ModelLearner`.

Decodes training records (bad ones → dead letter), learns per model per
batch, decides when to publish snapshots, restores from the newest ``learner``
snapshot per model and catches up on the training records after it.

Settings (read with ``getattr(settings, name, default)`` until they are declared):
see the ``learn_*`` fields of :class:`~loopline.streams.settings.Settings`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import defaultdict

from loopline.processors.errors import DecodeError, ModelLimitError, UnexpectedTypeError
from loopline.processors.learning import LearnerConfig, ModelLearner, build_update, load_model, update_key
from loopline.processors.learning.errors import SnapshotError
from loopline.processors.routing.router import InputRecord, OutputRecord, dead_letter
from loopline.processors.wire.names import DEV_KEY, MODEL_UPDATE, TRAINING_EXAMPLE
from loopline.streams.settings import Settings

log = logging.getLogger("loopline.learner")


def warn_dev_key(settings) -> None:
    """Snapshots signed with the public default key can be forged by anyone: say so once at start."""
    if settings.snapshot_hmac_key.get_secret_value() == DEV_KEY:
        log.warning("LOOPLINE_SNAPSHOT_HMAC_KEY is the public default: anyone can forge model snapshots; set a secret")


def learner_config(s: Settings) -> LearnerConfig:
    """The learner's configuration from the ``learn_*`` settings (declared and validated in ``Settings``)."""
    return LearnerConfig(
        pipeline=s.learn_pipeline, positive_label=s.learn_positive_label or None,
        metrics_window=s.learn_metrics_window, dedupe_ttl_ms=int(s.learn_dedupe_ttl_seconds * 1000),
        dedupe_max=s.learn_dedupe_max, rate_window_ms=int(s.learn_rate_window_seconds * 1000),
        reviewer_max_per_window=s.learn_reviewer_max_per_window,
        reviewer_max_share=s.learn_reviewer_max_share, min_reputation=s.learn_min_reputation,
        holdout_share=s.learn_holdout_share, gate_margin=s.learn_gate_margin,
        gate_min_examples=s.learn_gate_min_examples, gate_metric=s.learn_gate_metric,
        gate_max_logloss_increase=s.learn_gate_max_logloss_increase,
        serving_min_examples=s.serving_min_examples, serving_share=s.serving_share)


def model_config(config: LearnerConfig, policy, model: str) -> LearnerConfig:
    """``config`` with ``model``'s declarations from the policy in force: its ``positive_label`` (over
    the settings' one) and its label set (``labels``, when the policy declares one)."""
    if policy is None:
        return config
    mp = policy.policy.spec.model(model)
    labels = tuple(getattr(mp, "labels", None) or ())
    return dataclasses.replace(config, positive_label=mp.positive_label or config.positive_label,
                               labels=labels or config.labels)


class LearnerRuntime:
    def __init__(self, settings: Settings, serde, worker_id: str = "", policy=None) -> None:
        self.settings = settings
        self.serde = serde
        self.worker_id = worker_id
        self.policy = policy  # PolicyHolder: per-model label declarations (None = settings only)
        self.config = learner_config(settings)
        self.key = settings.snapshot_hmac_key.get_secret_value().encode()
        warn_dev_key(settings)
        self.learners: dict[str, ModelLearner] = {}
        self.model_limited = 0  # training examples dead-lettered because the model cap was reached
        self.gold: dict[str, str] = {}
        self.pending = 0  # learned since the last publish
        self.state_dirty = False  # learned since the last learner-state snapshot
        self.last_publish = time.monotonic()
        self.last_state = time.monotonic()
        self.gate_state: dict[str, bool] = {}
        self.refused = 0
        self.restored = False  # set once the start-up restore and catch-up are done
        gold_file = settings.learn_gold_file
        if gold_file:
            self.load_gold(gold_file)

    def load_gold(self, path) -> None:
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    self.gold[row["event_id"]] = row["label"]
        for learner in self.learners.values():
            for eid, label in self.gold.items():
                learner.add_gold(eid, label)

    def learner(self, model: str) -> ModelLearner:
        lr = self.learners.get(model)
        if lr is None:
            lr = self.learners[model] = ModelLearner(model, model_config(self.config, self.policy, model))
            for eid, label in self.gold.items():
                lr.add_gold(eid, label)
        return lr

    # ------------------------------------------------------------------ input
    def learn_records(self, records: list[InputRecord]):
        """Learn a batch of raw records: (counts per model, learned reviewed_at per model, dead letters)."""
        by_model: dict[str, list] = defaultdict(list)
        dead: list[OutputRecord] = []
        for rec in records:
            try:
                name, obj = self.serde.decode(rec.value)
                if name != TRAINING_EXAMPLE:
                    raise UnexpectedTypeError(f"{name} does not belong on {rec.topic}")
            except DecodeError as exc:
                dead.append(dead_letter(rec, exc, worker=self.worker_id))
                continue
            model = obj["model_name"]
            if model not in self.learners and model not in by_model \
                    and len(self.learners) + len(set(by_model) - set(self.learners)) >= self.settings.learn_max_models:
                exc = ModelLimitError(f"training example of model #{self.settings.learn_max_models + 1} refused: at most "
                                      f"{self.settings.learn_max_models} models are learned (LOOPLINE_LEARN_MAX_MODELS)")
                dead.append(dead_letter(rec, exc, worker=self.worker_id))
                self.model_limited += 1
                continue
            by_model[model].append((obj, rec.partition, rec.offset))
        counts, latencies = {}, {}
        for model, items in by_model.items():
            out = self.learner(model).learn_batch(items)
            counts[model] = out.counts
            latencies[model] = out.learned_reviewed_at
            self.pending += out.counts.get("learned", 0)
            self.state_dirty = self.state_dirty or bool(out.counts.get("learned"))
        return counts, latencies, dead

    # ----------------------------------------------------------------- output
    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        every = int(self.settings.learn_publish_every)
        interval = float(self.settings.learn_publish_interval_seconds)
        return self.pending > 0 and (self.pending >= every or now - self.last_publish >= interval)

    def state_due(self) -> bool:
        """The learner state (resume point) is older than what was learned, and learning paused or it is stale."""
        if not self.state_dirty:
            return False
        idle = self.pending == 0 and time.monotonic() - self.last_publish >= 1.0
        return idle or time.monotonic() - self.last_state >= float(self.settings.learn_state_interval_seconds)

    def snapshots(self, with_state: bool | None = None, models_only: bool = True) -> list[tuple[OutputRecord, dict]]:
        """ModelUpdate records for every model: challenger and override_risk (unless ``models_only`` is False
        and nothing is pending), plus the learner state when due."""
        now = time.monotonic()
        if with_state is None:
            with_state = self.state_due()
        out = []
        for model, lr in self.learners.items():
            if lr.challenger is None:
                continue
            metrics = lr.metrics()
            metrics["newest_reviewed_at_ms"] = float(lr.dedupe._clock)
            roles = [("challenger", lr.challenger), ("override_risk", lr.risk)] if models_only else []
            if with_state:
                roles.append(("learner", lr))
            for role, obj in roles:
                version, parent = lr.next_version(role)
                up = build_update(model, role, version, obj, key=self.key, parent_version=parent,
                                  examples_seen=lr.examples_seen, trained_through=lr.trained_through(),
                                  metrics=metrics)
                out.append((OutputRecord("model_updates", update_key(model, role), self.serde.encode(MODEL_UPDATE, up)),
                            up))
            self._gate(model, lr, out)
        if models_only:
            self.pending = 0
            self.last_publish = now
        if with_state:
            self.last_state = now
            self.state_dirty = False
        return out

    def _gate(self, model: str, lr: ModelLearner, out: list) -> None:
        passed, reasons = lr.gate.evaluate()
        if self.gate_state.get(model) != passed:
            (log.warning if not passed else log.info)("promotion gate for %s: %s (%s)", model,
                                                      "passed" if passed else "blocked", "; ".join(reasons))
            self.gate_state[model] = passed
            if passed and self.settings.learn_auto_promote:
                version, parent = lr.next_version("champion")
                up = build_update(model, "champion", version, lr.challenger, key=self.key, parent_version=parent,
                                  examples_seen=lr.examples_seen, trained_through=lr.trained_through(),
                                  metrics=lr.metrics())
                out.append((OutputRecord("model_updates", update_key(model, "champion"),
                                         self.serde.encode(MODEL_UPDATE, up)), up))

    # ---------------------------------------------------------------- restore
    def restore(self, update_messages) -> None:
        """Load the newest verified ``learner`` snapshot per model; versions continue after every role's newest."""
        newest: dict[tuple[str, str], dict] = {}
        for m in update_messages:
            if m.value() is None:  # a tombstone (compaction delete), not a snapshot
                continue
            try:
                _, up = self.serde.decode(m.value())
            except DecodeError:
                continue
            k = (up["model_name"], up["role"])
            if k not in newest or up["version"] > newest[k]["version"]:
                newest[k] = up
        for (model, role), up in newest.items():
            if role != "learner":
                continue
            try:
                lr = load_model(up, self.key)
            except SnapshotError as exc:
                self.refused += 1
                log.error("learner snapshot refused, %s starts from scratch: %s", model, exc)
                continue
            self.learners[model] = lr
        for (model, role), up in newest.items():
            if model in self.learners:
                lr = self.learners[model]
                lr.versions[role] = max(lr.versions.get(role, 0), up["version"])

    def catch_up_starts(self, partitions) -> dict[int, int]:
        """Offset to re-read each training partition from: after the oldest restored snapshot covering it, else 0."""
        starts = {}
        for p in partitions:
            lasts = [lr.offsets[p][1] for lr in self.learners.values() if p in lr.offsets]
            starts[p] = min(lasts) + 1 if lasts else 0
        return starts

    def stats(self) -> dict:
        return {"restored": self.restored, "models": {m: lr.stats() for m, lr in sorted(self.learners.items())},
                "pending_examples": self.pending, "snapshots_refused": self.refused,
                "examples_over_model_limit": self.model_limited,
                "gold_items": len(self.gold)}
