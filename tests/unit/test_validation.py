import math

import pytest

from loopline.processors import errors
from loopline.processors.routing.validation import check_prediction
from loopline.processors.testing import make_events

NOW = 1_800_000_000_000


def ev(**kw):
    e = make_events(1, start_ms=NOW)[0]
    e.update(kw)
    return e


@pytest.mark.parametrize("event,cls", [
    (ev(confidence=1.01), errors.ConfidenceOutOfRange),
    (ev(confidence=-0.1), errors.ConfidenceOutOfRange),
    (ev(confidence=math.nan), errors.ConfidenceOutOfRange),
    (ev(features_numeric={"a": math.inf}), errors.NonFiniteFeature),
    (ev(risk={"amount": math.nan}), errors.NonFiniteFeature),
    (ev(class_probabilities={"fraud": -math.inf}), errors.NonFiniteFeature),
    (ev(event_id=""), errors.MissingIdentity),
    (ev(model_name=""), errors.MissingIdentity),
    (ev(model_version=""), errors.MissingIdentity),
    (ev(emitted_at=NOW + 3_600_000), errors.FutureTimestamp),
])
def test_each_rule(event, cls):
    err = check_prediction(event, NOW, 300_000)
    assert type(err) is cls
    assert "nan" not in str(err).lower() or cls is errors.ConfidenceOutOfRange


def test_valid_event_passes_and_small_skew_is_allowed():
    assert check_prediction(ev(emitted_at=NOW + 1000), NOW, 300_000) is None
