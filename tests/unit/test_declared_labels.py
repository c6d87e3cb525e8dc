"""Labels are part of a model's contract: declared in the policy, enforced by the router."""
from __future__ import annotations

import pytest

from loopline.processors.errors import ConfigError
from loopline.processors.policy.model import parse_policy
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.routing.router import InputRecord, Router, iter_decisions
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events
from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH, AvroSerde

SERDE = AvroSerde(SchemaCatalogue.load())
NOW = 1_800_000_000_000
POLICY = '''version = "p1"
[models.fraud]
labels = ["fraud", "legit"]
positive_label = "fraud"
guidelines = "Fraud means the card holder did not make the payment."
'''


def test_policy_declares_labels_and_guidelines():
    spec = parse_policy(POLICY)
    m = spec.model("fraud")
    assert m.labels == ("fraud", "legit") and m.positive_label == "fraud"
    assert m.guidelines.startswith("Fraud means")
    assert spec.model("other").labels == () and spec.model("other").guidelines == ""


@pytest.mark.parametrize("body, field", [
    ('labels = ["fraud"]', "models.fraud.labels"),
    ('labels = ["a", "a", "b"]', "models.fraud.labels"),
    ('labels = ["a", ""]', "models.fraud.labels"),
    ('labels = ["a", "b"]\npositive_label = "fraud"', "models.fraud.positive_label"),
    ('guidelines = 3', "models.fraud.guidelines"),
])
def test_bad_label_declarations_name_the_field(body, field):
    with pytest.raises(ConfigError) as info:
        parse_policy(f'version = "1"\n[models.fraud]\n{body}\n')
    assert info.value.field == field


def _headers(o):
    return dict(o.headers)


@pytest.mark.parametrize("wrap", [lambda p: p, PolicyHolder])
def test_undeclared_predicted_label_is_dead_lettered(wrap):
    router = Router(SERDE, wrap(Policy.from_toml(POLICY)), 300_000, worker="w1")
    evs = make_events(40, model="fraud", start_ms=NOW - 1000)
    evs[3]["predicted_label"] = "a"  # inside a batch
    evs[30]["predicted_label"] = "a"  # a single event
    evs[31]["confidence"] = 2.0  # an invalid single event before it: alignment of original records
    recs = [InputRecord(SERDE.encode(PREDICTION_BATCH, batch_from_events(evs[:20], "b")), "p", 0, 1)]
    recs += [InputRecord(SERDE.encode(PREDICTION, e), "p", 0, 100 + i) for i, e in enumerate(evs[20:])]
    res = router.route(recs, now_ms=NOW)
    dec = [d for o in res.outputs if o.role == "decisions" for d in iter_decisions(SERDE, o.value)]
    assert len(dec) == 37 and {d["predicted_label"] for d in dec} <= {"fraud", "legit"}
    dead = [o for o in res.outputs if o.role == "dead_letter"]
    assert res.dead_by_class == {"undeclared_label": 2, "confidence_out_of_range": 1}
    undeclared = [o for o in dead if _headers(o)["loopline.error.class"] == b"undeclared_label"]
    assert sorted(SERDE.decode(o.value)[1]["event_id"] for o in undeclared) == sorted([evs[3]["event_id"],
                                                                                       evs[30]["event_id"]])
    single = [o for o in undeclared if "loopline.source.batch_index" not in _headers(o)]
    assert len(single) == 1 and single[0].value == recs[1 + 10].value  # original bytes of evs[30]
    assert b"not declared" in _headers(single[0])["loopline.error.message"]


def test_models_without_a_declaration_accept_any_label():
    router = Router(SERDE, Policy.from_toml(POLICY), 300_000)
    evs = make_events(5, model="other", start_ms=NOW - 1000)
    evs[0]["predicted_label"] = "a"
    res = router.route([InputRecord(SERDE.encode(PREDICTION, e), "p", 0, i) for i, e in enumerate(evs)], now_ms=NOW)
    assert res.dead_letters == 0 and res.decided == 5
