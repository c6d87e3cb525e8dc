"""``RiskScorer``: the route side of learning — P(override) for whole frames, and review insights.

It holds, per source model, the newest verified override-risk model and online
model (champion role if one was promoted, else the challenger), frozen into
numpy (:class:`~loopline.processors.learning.linear.LinearExport`) when swapped in, so
scoring a frame is one matrix product. :meth:`accept` verifies the HMAC before
unpickling (see :mod:`loopline.processors.learning.snapshot`); a refused snapshot
raises and the previous model stays.
"""
from __future__ import annotations

import numpy as np

from loopline.processors.errors import ModelLimitError
from loopline.processors.learning.features import example_features, frame_matrix, risk_features
from loopline.processors.learning.serving import STAGES, challenger_serves
from loopline.processors.learning.snapshot import load_model
from loopline.processors.routing.router import Served


class _Slot:
    __slots__ = ("version", "obj", "export", "metrics")

    def __init__(self, version: int, obj, export, metrics: dict) -> None:
        self.version, self.obj, self.export, self.metrics = version, obj, export, metrics


def _export_of(obj):
    inner = getattr(obj, "model", obj)  # BinaryLogReg wraps a LinearModel
    return inner.export() if hasattr(inner, "export") else None


class RiskScorer:
    def __init__(self, key: bytes, top: int = 5, max_models: int = 100) -> None:
        self.key = key
        self.top = top
        self.max_models = max_models
        self.slots: dict[tuple[str, str], _Slot] = {}

    def accept(self, update: dict) -> bool:
        """Verify and load ``update``; True when it replaced the held model (a newer version)."""
        role = update["role"]
        if role not in ("override_risk", "challenger", "champion"):
            return False
        k = (update["model_name"], role)
        if k not in self.slots and update["model_name"] not in {m for m, _ in self.slots} \
                and len({m for m, _ in self.slots}) >= self.max_models:
            raise ModelLimitError(f"snapshot of model #{self.max_models + 1} refused: "
                                  f"at most {self.max_models} models are held (LOOPLINE_LEARN_MAX_MODELS)")
        held = self.slots.get(k)
        if held is not None and update["version"] <= held.version:
            return False
        obj = load_model(update, self.key)  # raises before unpickling when the HMAC fails
        self.slots[k] = _Slot(update["version"], obj, _export_of(obj), dict(update.get("metrics") or {}))
        return True

    def version(self, model: str, role: str) -> int | None:
        s = self.slots.get((model, role))
        return None if s is None else s.version

    def score_frame(self, frame) -> np.ndarray | None:
        """P(a human overrides the prediction) per row of ``frame``; None when no model is held yet."""
        s = self.slots.get((frame.model_name, "override_risk"))
        if s is None or s.export is None:
            return None
        return s.export.predict_proba(frame_matrix(frame, s.export.names))

    def serving_stage(self, model: str) -> tuple[str, float, _Slot | None]:
        """(stage, share, challenger slot) as the newest challenger snapshot of ``model`` carries them."""
        slot = self.slots.get((model, "challenger"))
        if slot is None:
            return "champion", 0.0, None
        code = int(slot.metrics.get("serving.stage", 0.0))
        stage = STAGES[code] if 0 <= code < len(STAGES) else "champion"
        return stage, float(slot.metrics.get("serving.share", 0.0)), slot

    def serve_frame(self, frame, auto: np.ndarray) -> Served | None:
        """The auto-tier rows of ``frame`` the challenger serves now (None: the producer serves them all).

        ``share``: the rows whose :func:`share_unit` of ``event_id`` is below the share (the same
        events at every worker and on every replay); ``full``: every auto-tier row. A row the
        challenger cannot label (``None``) stays the producer's.
        """
        stage, share, slot = self.serving_stage(frame.model_name)
        if slot is None or stage not in ("share", "full") or not auto.any():
            return None
        mask = auto & challenger_serves(stage, share, frame.event_ids)
        labels = []
        for i in np.flatnonzero(mask).tolist():
            x = example_features(frame.row(i))
            label = slot.obj.predict_one(slot.obj.predict_proba_one(x))
            if label is None:
                mask[i] = False
            else:
                labels.append(str(label))
        return Served(f"challenger:v{slot.version}", mask, labels) if labels else None

    def _online(self, model: str) -> _Slot | None:
        return self.slots.get((model, "champion")) or self.slots.get((model, "challenger"))

    def insights(self, event: dict, tier: str, reason: str, override_risk: float | None = None) -> dict:
        """override_risk, online_prediction and top_contributions for a review task (empty without models).

        ``override_risk``: the router's score of this event from :meth:`score_frame` (the same model, one
        frame at a time), used as is instead of scoring the event again.
        """
        out: dict = {}
        model = event["model_name"]
        risk = self.slots.get((model, "override_risk"))
        if override_risk is not None:
            out["override_risk"] = override_risk
        elif risk is not None and risk.export is not None:
            xr = risk_features(event)
            row = np.array([float(xr.get(n, 0.0)) for n in risk.export.names])
            out["override_risk"] = float(risk.export.predict_proba(row.reshape(1, -1))[0])
        online = self._online(model)
        if online is not None:
            x = example_features(event)
            out["online_prediction"] = online.obj.predict_one(online.obj.predict_proba_one(x)) or None
            if online.export is not None:
                row = np.array([float(x.get(n, 0.0)) for n in online.export.names])
                out["top_contributions"] = [{"feature": f, "contribution": c}
                                            for f, c in online.export.contributions(row, self.top)]
        return out
