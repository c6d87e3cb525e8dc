"""Each model's review contract from the policy file: declared labels, positive label, guidelines.

The policy file (``[models.<name>]`` ``labels``, ``positive_label``, ``guidelines``) is re-read
when it changes on disk; an unreadable file keeps the last valid contracts (the routing worker
reports the bad file). A model without a declared label set gets the labels seen for it so far
(at most ``max_seen`` of them) plus its predicted label — it keeps working but loses the
guarantees of a declaration: junk labels are not dead-lettered upstream and can be offered as
corrections (see docs/reviewing.md).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("loopline.review")


@dataclass(frozen=True)
class Contract:
    """What reviewers may answer for one model."""

    labels: tuple[str, ...]  # declared labels, in declaration order (empty: not declared)
    positive_label: str | None
    guidelines: str

    @property
    def declared(self) -> bool:
        return bool(self.labels)


UNDECLARED = Contract((), None, "")


class Contracts:
    """Contracts by model name, read from ``policy_file`` (None: every model undeclared)."""

    def __init__(self, policy_file: str | Path | None) -> None:
        self.policy_file = policy_file
        self._mtime: object = object()
        self._policy = None

    def _load(self):
        if not self.policy_file:
            return None
        try:
            mtime = os.stat(self.policy_file).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                from loopline.processors.policy.policy import Policy

                self._policy = Policy.from_file(self.policy_file)
            except Exception:
                log.warning("review server: cannot read model contracts from %s", self.policy_file, exc_info=True)
        return self._policy

    def of(self, model: str) -> Contract:
        policy = self._load()
        if policy is None:
            return UNDECLARED
        mp = policy.model(model)
        return Contract(tuple(mp.labels), mp.positive_label, mp.guidelines)
