"""``DriftCoordinator``: the drift agent's logic — merge every worker's summaries, one verdict per model.

Pure (no Kafka): the agent decodes ``DriftSummary`` messages and hands them
here. Per model it keeps a :class:`~loopline.processors.drift.monitor.DriftMonitor`, the
partition watermarks (:class:`PartitionWatermarks`) and the model's
:class:`~loopline.processors.drift.policy.DriftPolicy` (for ``retrain``; routing is
tightened by every route worker itself, see :mod:`loopline.processors.drift.board`).

Why N workers give the verdicts of one: summaries carry additive counts and,
per predictions-topic partition, the latest event time routed from it. A
bucket is evaluated once the *minimum over partitions* has passed it — the
same minimum whichever worker owns which partition — so every count of the
bucket has been summed before it is evaluated. A partition stops holding the
watermark back when its event time has not moved for ``idle_ms`` of wall
time (no traffic, or its worker left and nobody took it over yet); a departed
worker's partitions are taken over by another worker, which reports them from
then on. Before every expected partition has reported, the watermark waits at
most ``idle_ms``. Duplicate summaries (a worker re-publishing after a retry)
are recognised by ``(worker_id, seq)``.

Memory: per model one monitor (bounded, see its docs), one entry per
partition and per recently seen worker (at most ``max_workers``); at most
``max_models`` models (the least recently updated is dropped).
"""
from __future__ import annotations

from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.monitor import DriftMonitor
from loopline.processors.drift.policy import DriftPolicyBook
from loopline.processors.drift.reference import ReferenceProfile
from loopline.processors.errors import ConfigError


class PartitionWatermarks:
    """Latest event time per partition; the watermark is their minimum over the partitions still moving.

    >>> w = PartitionWatermarks(expected=2, idle_ms=1000)
    >>> w.update({"0": 500}, now_ms=0); w.watermark(now_ms=10) is None   # partition 1 not heard yet
    True
    >>> w.update({"1": 300}, now_ms=20); w.watermark(now_ms=30)
    300
    >>> w.update({"1": 900}, now_ms=1500); w.watermark(now_ms=1500)        # 0 idle for 1.5 s
    900
    """

    def __init__(self, expected: int, idle_ms: int, max_partitions: int = 4096) -> None:
        self.expected = expected
        self.idle_ms = idle_ms
        self.max_partitions = max_partitions
        self._event: dict[str, int] = {}
        self._moved: dict[str, int] = {}
        self._first_ms: int | None = None
        self._last = -(1 << 62)

    def update(self, marks: dict[str, int], now_ms: int) -> None:
        if self._first_ms is None and marks:
            self._first_ms = now_ms
        for p, t in marks.items():
            if p not in self._event and len(self._event) >= self.max_partitions:
                continue
            if int(t) > self._event.get(p, -(1 << 62)):
                self._event[p] = int(t)
                self._moved[p] = now_ms

    def watermark(self, now_ms: int) -> int | None:
        """The event time every moving partition has passed (never decreasing), or None while waiting."""
        if not self._event:
            return None
        if len(self._event) < self.expected and now_ms - self._first_ms < self.idle_ms:
            return None
        moving = [t for p, t in self._event.items() if now_ms - self._moved[p] < self.idle_ms]
        wm = min(moving) if moving else max(self._event.values())
        self._last = max(self._last, wm)
        return self._last

    def snapshot(self) -> dict[str, int]:
        return dict(self._event)


class _Model:
    def __init__(self, name: str, monitor: DriftMonitor, marks: PartitionWatermarks, policy) -> None:
        self.name, self.monitor, self.marks, self.policy = name, monitor, marks, policy
        self.workers: dict[str, int] = {}  # worker_id -> last seq
        self.published: dict[str, tuple[str, bool]] = {}
        self.touched = 0


class DriftCoordinator:
    """Merges ``DriftSummary`` messages and decides (see the module docstring).

    Parameters
    ----------
    config
        Drift settings (the workers' collectors must use the same ``bucket_ms``).
    policies
        Per-model drift policies.
    expected_partitions
        Partitions of the predictions topic.
    idle_ms
        Wall time after which a partition whose event time does not move stops holding the watermark.
    baselines
        Pinned reference profiles (all models).
    """

    def __init__(self, config: DriftConfig | None = None, policies: DriftPolicyBook | None = None,
                 expected_partitions: int = 1, idle_ms: int = 60_000,
                 baselines: list[ReferenceProfile] | tuple = (), max_models: int = 100,
                 max_workers: int = 1000) -> None:
        self.config = config or DriftConfig()
        self.policies = policies or DriftPolicyBook()
        self.expected_partitions = expected_partitions
        self.idle_ms = idle_ms
        self.baselines = tuple(baselines)
        self.max_models = max_models
        self.max_workers = max_workers
        self.models: dict[str, _Model] = {}
        self.duplicates = 0
        self.mismatched = 0
        self._clock = 0

    def model(self, name: str, restored: list[ReferenceProfile] | tuple = ()) -> _Model:
        """The state of ``name`` (created on first use, with pinned and ``restored`` references)."""
        m = self.models.get(name)
        if m is None:
            pinned = {p.model_version: p for p in self.baselines if p.model_name == name}
            pinned.update({p.model_version: p for p in restored if p.model_name == name})
            m = self.models[name] = _Model(name, DriftMonitor(name, self.config, list(pinned.values())),
                                           PartitionWatermarks(self.expected_partitions, self.idle_ms),
                                           self.policies.policy_for(name))
            while len(self.models) > self.max_models:
                del self.models[min(self.models, key=lambda k: self.models[k].touched)]
        self._clock += 1
        m.touched = self._clock
        return m

    def ingest(self, message: dict, now_ms: int) -> bool:
        """Add one decoded ``DriftSummary`` (its ``summary`` already parsed). False if it is a duplicate.

        Counts binned with a layout the monitor does not hold (it lost its state)
        are dropped and counted in :attr:`mismatched`; :meth:`stale_layouts` then
        says the workers need the current references.
        """
        summary = message["summary"]
        name = message["model_name"]
        if summary.get("model_name") != name:
            raise ConfigError(f"summary of model {summary.get('model_name')!r} in a message for {name!r}")
        m = self.model(name)
        worker, seq = message["worker_id"], int(message["seq"])
        if seq <= m.workers.get(worker, -1):
            self.duplicates += 1
            return False
        m.workers.pop(worker, None)
        m.workers[worker] = seq
        while len(m.workers) > self.max_workers:
            m.workers.pop(next(iter(m.workers)))
        known = m.monitor.profiles()
        pinned = {p.model_version: p for p in m.monitor.baselines}
        for version, part in list(summary["versions"].items()):
            if part["buckets"]:
                ref = known.get(version) or pinned.get(version)
                if ref is None or ref.fingerprint != part["fingerprint"]:
                    self.mismatched += 1
                    part["buckets"], part["outcome_buckets"] = {}, {}
                    m.published.pop(version, None)  # republish what we hold
        m.monitor.ingest(summary)
        m.marks.update(message["partition_watermarks"], now_ms)
        return True

    def advance(self, name: str, now_ms: int) -> tuple[list[dict], list[dict]]:
        """Evaluate ``name``'s buckets under the current watermark: (DriftEvent dicts, policy actions)."""
        m = self.models.get(name)
        if m is None:
            return [], []
        wm = m.marks.watermark(now_ms)
        if wm is None:
            return [], []
        events = m.monitor.advance(wm)
        actions = [a for e in events for a in m.policy.on_event(e)]
        return events, actions

    def references_to_publish(self, name: str, force: bool = False) -> list[ReferenceProfile] | None:
        """``name``'s reference profiles if they changed since last published (or ``force``), else None."""
        m = self.models.get(name)
        if m is None:
            return None
        profiles = m.monitor.profiles()
        state = {v: (p.fingerprint, p.error is not None) for v, p in profiles.items()}
        if not force and state == m.published:
            return None
        m.published = state
        return list(profiles.values())

    @staticmethod
    def stale_layouts(summary: dict, references: dict[str, ReferenceProfile]) -> bool:
        """True if a worker still ships raw rows (or unbinned outcomes) a held reference could bin."""
        for version, part in summary["versions"].items():
            ref = references.get(version)
            if ref is None:
                continue
            if part["rows"] is not None or part["fingerprint"] not in (None, ref.fingerprint):
                return True
            if part["outcomes"] is not None and ref.error is not None:
                return True
        return False

    def status(self, name: str) -> dict:
        m = self.models.get(name)
        return m.monitor.status() if m else {"model_name": name, "phase": "idle", "signals": {}, "active_signals": []}
