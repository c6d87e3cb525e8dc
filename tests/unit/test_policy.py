"""The tiered routing policy: rules and precedence, invalid files, sampling, budgets, replay, replacement."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loopline.processors.errors import ConfigError
from loopline.processors.policy.model import parse_policy
from loopline.processors.policy.policy import Policy, PolicyHolder
from loopline.processors.wire.frame import frames_from_events

REPO = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000_000

RULES = """
version = "rules-1"
[defaults.tiers.auto]
min_confidence = 0.8
[models.fraud.tiers.auto]
min_confidence = 0.9
min_confidence_by_class = { fraud = 0.97, legit = 0.85 }
[models.fraud.tiers.review]
sla_minutes = 240
[[models.fraud.tiers.review.risk]]
attribute = "amount"
op = ">="
value = 2000
[[models.fraud.tiers.review.context]]
attribute = "channel"
in = ["phone"]
[[models.fraud.tiers.review.context]]
attribute = "segment"
not_in = ["retail", "smb"]
[models.fraud.tiers.escalate]
sla_minutes = 60
below_confidence = 0.5
[[models.fraud.tiers.escalate.risk]]
attribute = "amount"
op = ">="
value = 10000
[[models.fraud.tiers.escalate.risk]]
attribute = "score"
op = ">"
value = 0.5
match_missing = true
[[models.fraud.tiers.escalate.context]]
attribute = "country"
in = ["IR", "KP"]
[models."*".tiers.auto]
min_confidence = 0.95
"""


def ev(i: int = 0, conf: float = 0.99, label: str = "legit", amount: float | None = 10.0,
       context: dict | None = None, model: str = "fraud", version: str = "v1", t: int = NOW,
       score: float | None = 0.0) -> dict:
    risk = {} if amount is None and score is None else {}
    if amount is not None:
        risk["amount"] = amount
    if score is not None:
        risk["score"] = score
    return {"event_id": f"e-{i}", "model_name": model, "model_version": version, "emitted_at": t,
            "features_numeric": {"x": 1.0}, "features_categorical": {}, "predicted_label": label,
            "confidence": conf, "class_probabilities": None, "risk": risk if risk else None,
            "context": {"country": "DE", "channel": "web", "segment": "retail"} if context is None else context,
            "trace_id": None}


CASES = [
    # (description, event overrides, tier, reason)
    ("high confidence, low risk", {}, "auto", "confidence[legit]>=0.85"),
    ("large amount escalates", {"amount": 10000.0}, "escalate", "risk:amount>=10000"),
    ("risk before context", {"amount": 20000.0, "context": {"country": "IR"}}, "escalate", "risk:amount>=10000"),
    ("country list escalates", {"context": {"country": "KP", "segment": "retail"}}, "escalate",
     "context:country in [IR,KP]"),
    ("context before below_confidence", {"conf": 0.3, "context": {"country": "IR"}}, "escalate",
     "context:country in [IR,KP]"),
    ("very low confidence escalates", {"conf": 0.4}, "escalate", "confidence<0.5"),
    ("escalate risk beats review risk", {"amount": 50000.0, "conf": 0.1}, "escalate", "risk:amount>=10000"),
    ("missing attribute with match_missing fires", {"score": None}, "escalate", "risk:score>0.5"),
    ("review risk rule", {"amount": 5000.0}, "review", "risk:amount>=2000"),
    ("review context rule", {"context": {"country": "DE", "channel": "phone", "segment": "retail"}}, "review",
     "context:channel in [phone]"),
    ("not_in fires for other values", {"context": {"segment": "enterprise"}}, "review",
     "context:segment not in [retail,smb]"),
    ("not_in does not fire when absent", {"context": {"country": "DE"}}, "auto", "confidence[legit]>=0.85"),
    ("null context fires nothing", {"context": {}}, "auto", "confidence[legit]>=0.85"),
    ("review rules before confidence", {"amount": 3000.0, "conf": 0.6}, "review", "risk:amount>=2000"),
    ("per-class threshold (fraud)", {"label": "fraud", "conf": 0.95}, "review", "confidence[fraud]<0.97"),
    ("per-class threshold passes", {"label": "fraud", "conf": 0.98}, "auto", "confidence[fraud]>=0.97"),
    ("per-class threshold (legit) below global", {"conf": 0.87}, "auto", "confidence[legit]>=0.85"),
    ("unlisted class uses the global threshold", {"label": "other", "conf": 0.87}, "review", "confidence<0.9"),
    ("unlisted class passes the global threshold", {"label": "other", "conf": 0.9}, "auto", "confidence>=0.9"),
    ("threshold is inclusive", {"conf": 0.85}, "auto", "confidence[legit]>=0.85"),
    ("null risk: amount rules do not fire", {"amount": None, "score": 0.0}, "auto", "confidence[legit]>=0.85"),
    ("unknown model uses models.*", {"model": "churn", "conf": 0.93}, "review", "confidence<0.95"),
    ("models.* passes", {"model": "churn", "conf": 0.96, "amount": 1e6}, "auto", "confidence>=0.95"),
]


@pytest.mark.parametrize("desc,over,tier,reason", CASES, ids=[c[0] for c in CASES])
def test_rules_and_precedence(desc, over, tier, reason):
    policy = Policy.from_toml(RULES)
    d = policy.decide_batch([ev(**over)], now_ms=NOW)[0]
    assert (d.tier, d.reason) == (tier, reason), desc
    assert d.policy_version == "rules-1" and d.model_version == "v1"
    if tier == "auto":
        assert (d.sampling_propensity, d.audited, d.priority, d.due_by_ms) == (0.0, False, 0, 0)
    else:
        assert d.sampling_propensity == 1.0
        assert d.due_by_ms == NOW + (60 if tier == "escalate" else 240) * 60_000
        base = 200 if tier == "escalate" else 100
        assert d.priority == base + round(100 * (1 - over.get("conf", 0.99)))


def test_without_star_section_defaults_apply():
    policy = Policy.from_toml('version = "d"\n[defaults.tiers.auto]\nmin_confidence = 0.8')
    got = [(d.tier, d.reason) for d in policy.decide_batch([ev(conf=0.81, model="x"), ev(conf=0.79)], NOW)]
    assert got == [("auto", "confidence>=0.8"), ("review", "confidence<0.8")]


def test_frame_path_equals_batch_path():
    rng = np.random.default_rng(3)
    evs = [ev(i, conf=float(c), label=("fraud" if i % 7 == 0 else "legit"), amount=float(a),
              context={"country": ("IR", "DE", "FR")[i % 3], "channel": ("web", "phone")[i % 5 == 0],
                       "segment": "retail"})
           for i, (c, a) in enumerate(zip(rng.uniform(0, 1, 3000), rng.lognormal(6, 2, 3000)))]
    text = RULES + "\n[budget.review]\ntasks_per_minute = 10\ndeferred_audit_rate = 0.3\n"
    by_batch = Policy.from_toml(text).decide_batch(evs, NOW)
    (frame,) = frames_from_events(evs)
    fd = Policy.from_toml(text).decide_frame(frame, NOW)
    assert [d.tier for d in by_batch] == [("auto", "review", "escalate")[t] for t in fd.tiers.tolist()]
    assert [d.reason for d in by_batch] == [fd.reasons[c] for c in fd.reason_codes.tolist()]
    assert [d.sampling_propensity for d in by_batch] == fd.propensity.tolist()
    assert [d.audited for d in by_batch] == fd.audited.tolist()
    assert [d.priority for d in by_batch] == fd.priority.tolist()
    assert [d.due_by_ms for d in by_batch] == fd.due_by_ms.tolist()


def test_mixed_models_keep_input_order():
    evs = [ev(0, model="fraud", conf=0.99), ev(1, model="churn", conf=0.9), ev(2, model="fraud", version="v2"),
           ev(3, model="fraud", amount=20000.0)]
    got = [(d.tier, d.model_version) for d in Policy.from_toml(RULES).decide_batch(evs, NOW)]
    assert got == [("auto", "v1"), ("review", "v1"), ("auto", "v2"), ("escalate", "v1")]
    assert Policy.from_toml(RULES).decide_batch([], NOW) == []


BAD = [
    ('version = "1"\n[models.fraud.tiers.auto]\nmin_confidence = "high"', "models.fraud.tiers.auto.min_confidence",
     "must be a number in [0, 1], got 'high'"),
    ('version = "1"\n[models.fraud.tiers.auto]\nmin_confidence = 1.5', "models.fraud.tiers.auto.min_confidence",
     "got 1.5"),
    ('version = "1"\n[models.fraud.tiers.auto]\naudit_rate = true', "models.fraud.tiers.auto.audit_rate", "got True"),
    ('[models.fraud.tiers.auto]\nmin_confidence = 0.9', "version", "is required"),
    ('version = ""', "version", "non-empty string"),
    ('version = "1"\n[models.fraud.tiers.auto]\naudit_rat = 0.1', "models.fraud.tiers.auto.audit_rat",
     "unknown option"),
    ('version = "1"\n[models.fraud.tierz.auto]\naudit_rate = 0.1', "models.fraud.tierz", "unknown option"),
    ('version = "1"\n[[models.fraud.tiers.escalate.risk]]\nattribute = "amount"\nop = "=>"\nvalue = 1',
     "models.fraud.tiers.escalate.risk[0].op", "must be one of >=, >, <=, <, ==, !="),
    ('version = "1"\n[[models.fraud.tiers.escalate.risk]]\nattribute = "amount"\nop = ">="',
     "models.fraud.tiers.escalate.risk[0].value", "is required"),
    ('version = "1"\n[[models.fraud.tiers.review.context]]\nattribute = "c"\nin = ["a"]\nnot_in = ["b"]',
     "models.fraud.tiers.review.context[0].in", "exactly one of"),
    ('version = "1"\n[[models.fraud.tiers.review.context]]\nattribute = "c"\nin = "DE"',
     "models.fraud.tiers.review.context[0].in", "list of non-empty strings"),
    ('version = "1"\n[models.fraud.tiers.auto]\naudit_rate = 0.1\noversample_below = 0.9\noversample_rate = 0.05',
     "models.fraud.tiers.auto.oversample_rate", "must be >= audit_rate"),
    ('version = "1"\n[models.fraud.tiers.auto]\noversample_rate = 0.2', "models.fraud.tiers.auto.oversample_below",
     "is required"),
    ('version = "1"\n[models.fraud.tiers.review]\nsla_minutes = 0', "models.fraud.tiers.review.sla_minutes",
     "must be a number > 0"),
    ('version = "1"\n[defaults.tiers.escalate]\nsla_minutes = -5', "defaults.tiers.escalate.sla_minutes",
     "must be a number > 0"),
    ('version = "1"\n[models.fraud.new_version]\nreview_rate = 0.2', "models.fraud.new_version.events",
     "set events and/or hours"),
    ('version = "1"\n[models.fraud.new_version]\nreview_rate = 0.2\nevents = -1', "models.fraud.new_version.events",
     "an integer >= 0"),
    ('version = "1"\n[models.fraud.new_version]\nestablished = "v1"', "models.fraud.new_version.established",
     "list of non-empty strings"),
    ('version = "1"\n[budget.review]\ntasks_per_minute = 0', "budget.review.tasks_per_minute", "must be a number > 0"),
    ('version = "1"\n[budget.escalate]\ntasks_per_minute = 5\ndefer_below_priority = 3',
     "budget.escalate.defer_below_priority", "unknown option"),
    ('version = "1"\n[budget.auto]\ntasks_per_minute = 5', "budget.auto", "unknown option"),
    ('version = "1"\n[budget.review]\ntasks_per_minute = 5\ndeferred_audit_rate = 2',
     "budget.review.deferred_audit_rate", "[0, 1]"),
    ('version = "1"\nmodels = 3', "models", "must be a table"),
    ('version = "1"\n[models.fraud.tiers.auto]\nmin_confidence_by_class = { fraud = "x" }',
     "models.fraud.tiers.auto.min_confidence_by_class.fraud", "[0, 1]"),
    ('version = "1"\n[models.fraud.tiers.review]\npriority = 1.5', "models.fraud.tiers.review.priority",
     "an integer"),
    ('version = "1"\nversion = "2"', "<toml>", "not valid TOML"),
    ('version = "1"\n[models.fraud', "<toml>", "not valid TOML"),
]


@pytest.mark.parametrize("text,field,fragment", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_invalid_policies_name_the_field(text, field, fragment):
    with pytest.raises(ConfigError) as info:
        Policy.from_toml(text, source="t.toml")
    msg = str(info.value)
    assert info.value.field == field
    assert msg.startswith(field + ": ") and fragment in msg and "t.toml" in msg


def test_example_policy_parses_and_documents_everything():
    policy = Policy.from_file(REPO / "policies" / "example.toml")
    fraud = policy.model("fraud")
    assert fraud.audit_rate == 0.02 and fraud.oversample_rate == 0.10 and fraud.new_version_rate == 0.2
    assert "risk:amount>=10000" in fraud.reasons and "context:country in [IR,KP,SY]" in fraud.reasons
    assert set(policy.spec.budgets) == {"review", "escalate"}
    assert policy.model("anything").min_confidence == 0.95


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        Policy.from_file(tmp_path / "missing.toml")


AUDIT = """
version = "audit-1"
[models.fraud.tiers.auto]
min_confidence = 0.9
audit_rate = 0.02
oversample_below = 0.95
oversample_rate = 0.10
[models.fraud.new_version]
review_rate = 0.2
events = 1000000
"""


def test_audit_rate_within_10_percent_over_100k_and_propensity_recorded():
    n = 100_000
    evs = [ev(i, conf=0.99 if i % 2 else 0.92, version="v9") for i in range(n)]
    ds = Policy.from_toml(AUDIT).decide_batch(evs, NOW)
    hi = [d for e, d in zip(evs, ds) if e["confidence"] == 0.99]
    lo = [d for e, d in zip(evs, ds) if e["confidence"] == 0.92]
    for group, rate, reason in ((hi, 0.02, "audit"), (lo, 0.10, "oversample_low_confidence")):
        new = [d for d in group if d.reason == "new_model_version"]
        auto = [d for d in group if d.tier == "auto"]
        assert abs(len(new) / len(group) - 0.2) <= 0.02  # new-version review rate within 10%
        audited = [d for d in auto if d.audited]
        assert abs(len(audited) / len(auto) - rate) <= 0.1 * rate  # audit independent of the new-version draw
        assert {d.reason for d in audited} == {reason}
        assert {d.sampling_propensity for d in auto} == {rate}
        conf = 0.99 if rate == 0.02 else 0.92
        assert all(d.priority == round(100 * (1 - conf)) and d.due_by_ms == NOW + 240 * 60_000 for d in audited)
        assert all(d.priority == 0 and d.due_by_ms == 0 for d in auto if not d.audited)
        assert {d.sampling_propensity for d in new} == {1.0}


def test_sampling_salt_changes_the_draws_but_not_the_rate():
    evs = [ev(i) for i in range(20_000)]
    base = 'version = "s"\n[models.fraud.tiers.auto]\naudit_rate = 0.05\n'
    a = [d.audited for d in Policy.from_toml(base).decide_batch(evs, NOW)]
    b = [d.audited for d in Policy.from_toml('sampling_salt = "other"\n' + base).decide_batch(evs, NOW)]
    assert a != b and abs(sum(a) - sum(b)) < 0.2 * sum(a)


BUDGET = """
version = "budget-1"
[models.fraud.tiers.auto]
min_confidence = 0.9
audit_rate = 0.0
[[models.fraud.tiers.escalate.risk]]
attribute = "amount"
op = ">="
value = 10000
[budget.review]
tasks_per_minute = 60
burst = 5
defer_below_priority = 120
deferred_audit_rate = 0.25
[budget.escalate]
tasks_per_minute = 1
burst = 1
"""


def test_budget_defers_low_priority_review_and_records_it():
    policy = Policy.from_toml(BUDGET)
    # 10 low-priority review tasks (conf 0.85 -> priority 115) and 2 urgent ones (conf 0.6 -> 140), same instant
    evs = [ev(i, conf=0.85) for i in range(10)] + [ev(10, conf=0.6), ev(11, conf=0.6)]
    evs += [ev(12, amount=20000.0), ev(13, amount=30000.0)]  # escalations, budget 1
    ds = policy.decide_batch(evs, NOW)
    assert [d.tier for d in ds[:5]] == ["review"] * 5  # the burst
    deferred = ds[5:10]
    assert all(d.tier == "auto" and d.reason == "budget_deferred" and d.sampling_propensity == 0.25
               for d in deferred)
    assert all(d.priority == (15 if d.audited else 0) for d in deferred)
    assert [d.tier for d in ds[10:12]] == ["review", "review"]  # above the cut-off: sent over budget
    assert [d.tier for d in ds[12:]] == ["escalate", "escalate"]  # never deferred
    c = policy.state.counters
    assert (c.deferred, c.over_budget_review, c.over_budget_escalate) == (5, 2, 1)
    assert c.deferred_audited == sum(d.audited for d in deferred)
    # one minute of event time later the bucket is full again (burst 5)
    later = policy.decide_batch([ev(100 + i, conf=0.85, t=NOW + 60_000) for i in range(6)], NOW + 60_000)
    assert [d.tier for d in later] == ["review"] * 5 + ["auto"]
    # event time, not call order: an old event refills nothing
    old = policy.decide_batch([ev(200, conf=0.85, t=NOW)], NOW + 60_000)
    assert old[0].reason == "budget_deferred"


def test_deferred_audit_rate_over_many_events():
    policy = Policy.from_toml(BUDGET)
    ds = policy.decide_batch([ev(i, conf=0.85) for i in range(40_005)], NOW)
    deferred = [d for d in ds if d.reason == "budget_deferred"]
    assert len(deferred) == 40_000
    assert abs(sum(d.audited for d in deferred) / 40_000 - 0.25) < 0.025


def test_new_model_version_review_for_the_first_events_and_hours():
    text = """
version = "nv"
[models.fraud.tiers.auto]
min_confidence = 0.5
[models.fraud.new_version]
review_rate = 0.5
events = 1000
established = ["v1"]
[models."*".new_version]
review_rate = 1.0
hours = 1
"""
    policy = Policy.from_toml(text)
    v2 = policy.decide_batch([ev(i, version="v2") for i in range(3000)], NOW)
    first, after = v2[:1000], v2[1000:]
    assert 400 < sum(d.reason == "new_model_version" for d in first) < 600
    assert not any(d.reason == "new_model_version" for d in after)
    assert not any(d.reason == "new_model_version" for d in policy.decide_batch([ev(i) for i in range(500)], NOW))
    hours = policy.decide_batch([ev(i, model="churn", t=NOW + i * 60_000) for i in range(120)], NOW)
    assert [d.reason == "new_model_version" for d in hours] == [True] * 60 + [False] * 60


REPLAY = AUDIT.replace("events = 1000000", "events = 3000") + """
[[models.fraud.tiers.escalate.risk]]
attribute = "amount"
op = ">="
value = 10000
[budget.review]
tasks_per_minute = 600
deferred_audit_rate = 0.1
[budget.escalate]
tasks_per_minute = 5
"""


def test_replay_gives_identical_decisions():
    text = REPLAY
    rng = np.random.default_rng(11)
    evs = [ev(i, conf=float(c), amount=float(a), t=NOW + i * 10, label=("fraud", "legit")[i % 3 > 0])
           for i, (c, a) in enumerate(zip(rng.uniform(0.4, 1, 20_000), rng.lognormal(6, 2.5, 20_000)))]
    first = Policy.from_toml(text).decide_batch(evs, NOW)
    again = Policy.from_toml(text).decide_batch(evs, NOW)
    assert first == again
    # batch boundaries do not matter: budgets and version ages run on event time, in order
    p = Policy.from_toml(text)
    chunked = [d for i in range(0, len(evs), 777) for d in p.decide_batch(evs[i:i + 777], NOW)]
    assert chunked == first
    reasons = {d.reason for d in first}  # every stateful or random rule took part
    assert {"audit", "oversample_low_confidence", "budget_deferred", "new_model_version",
            "risk:amount>=10000"} <= reasons


def test_holder_replaces_atomically_and_keeps_old_on_error():
    holder = PolicyHolder(Policy.from_toml(BUDGET))
    holder.decide_batch([ev(i, conf=0.85) for i in range(5)], NOW)  # empties the review bucket
    with pytest.raises(ConfigError) as info:
        holder.replace(BUDGET.replace("budget-1", "budget-2").replace("burst = 5", "burst = 0"))
    assert info.value.field == "budget.review.burst"
    assert holder.version == "budget-1"
    with pytest.raises(ConfigError) as info:
        holder.replace(BUDGET.replace("burst = 5", "burst = 6"))  # same version, other rules
    assert info.value.field == "version" and holder.version == "budget-1"
    same = holder.replace(BUDGET, now_ms=7)
    assert not same.changed and holder.version == "budget-1"
    change = holder.replace(BUDGET.replace("budget-1", "budget-2"), source="ops", now_ms=NOW)
    assert (change.old_version, change.new_version, change.changed_at_ms, change.source, change.changed) == \
        ("budget-1", "budget-2", NOW, "ops", True)
    d = holder.decide_batch([ev(50, conf=0.85)], NOW)[0]
    assert d.policy_version == "budget-2" and d.reason == "budget_deferred"  # the bucket carried over
    assert holder.policy.state.counters.deferred == 1


def test_holder_replace_from_file(tmp_path):
    holder = PolicyHolder(Policy.from_toml(RULES))
    path = tmp_path / "p.toml"
    path.write_text((REPO / "policies" / "example.toml").read_text())
    change = holder.replace_from_file(path, now_ms=1)
    assert change.new_version == "fraud-2024-06-01.1" and change.source == str(path)


def test_router_uses_the_policy():
    from loopline.processors.routing.router import InputRecord, Router, iter_decisions
    from loopline.processors.wire.catalogue import SchemaCatalogue
    from loopline.processors.wire.serde import PREDICTION, AvroSerde

    serde = AvroSerde(SchemaCatalogue.load())
    policy = Policy.from_toml(RULES)
    evs = [ev(0), ev(1, amount=20000.0), ev(2, conf=0.6)]
    res = Router(serde, policy, 300_000).route([InputRecord(serde.encode(PREDICTION, e), "p", 0, i)
                                                for i, e in enumerate(evs)], now_ms=NOW)
    decisions = [d for o in res.outputs if o.role == "decisions" for d in iter_decisions(serde, o.value)]
    assert [(d["tier"], d["reason"], d["policy_version"]) for d in decisions] == [
        ("auto", "confidence[legit]>=0.85", "rules-1"), ("escalate", "risk:amount>=10000", "rules-1"),
        ("review", "confidence[legit]<0.85", "rules-1")]
    assert sorted(o.role for o in res.outputs if o.role.startswith("review")) == ["review_analyst",
                                                                                   "review_escalation"]


def test_parse_policy_is_pure():
    spec = parse_policy(RULES)
    assert spec.version == "rules-1" and set(spec.models) == {"fraud"} and spec.fallback.name == "*"
    assert spec.digest == parse_policy(RULES).digest


# --------------------------------------------------------------- runtime overlays and override risk
def _frame(confidences, labels=None):
    from loopline.processors.testing import make_events
    from loopline.processors.wire.frame import frames_from_events

    evs = make_events(len(confidences), start_ms=0)
    for e, c in zip(evs, confidences):
        e["confidence"] = c
        e["risk"] = {}
        e["context"] = {}
        if labels:
            e["predicted_label"] = labels.pop(0)
    return frames_from_events(evs)[0]


OVERLAY_POLICY = """
version = "ov-1"
[models.fraud.tiers.auto]
min_confidence = 0.9
min_confidence_by_class = { fraud = 0.95 }
audit_rate = 0.0
[models.fraud.tiers.review]
max_override_risk = 0.5
"""


def test_override_risk_sends_confident_predictions_to_review():
    from loopline.processors.policy.policy import Policy

    p = Policy.from_toml(OVERLAY_POLICY)
    frame = _frame([0.99, 0.99, 0.5], ["legit", "legit", "legit"])
    d = p.decide_frame(frame, 0, override_risk=np.array([0.1, 0.8, 0.9]))
    assert d.tiers.tolist() == [0, 1, 1]
    # the confidence rule fires first for the low-confidence row; the override rule names itself
    assert [d.reasons[c] for c in d.reason_codes] == ["confidence>=0.9", "override_risk>0.5", "confidence<0.9"]
    # without a model (None) the rule is inert
    assert p.decide_frame(frame, 0).tiers.tolist() == [0, 0, 1]


def test_review_priority_follows_the_expected_error_once_an_override_risk_model_exists():
    from loopline.processors.policy.policy import Policy

    p = Policy.from_toml(OVERLAY_POLICY)
    frame = _frame([0.7, 0.7, 0.99], ["legit", "legit", "legit"])
    plain = p.decide_frame(frame, 0)
    assert plain.priority[0] == plain.priority[1] == 100 + 30  # review base + 100 x (1 - confidence)
    d = p.decide_frame(frame, 0, override_risk=np.array([0.0, 0.6, 0.8]))
    # noisy-or: 1 - 0.7 x (1 - risk) -> 30 and 72; the confident row goes to review on its risk: 1 - 0.99 x 0.2
    assert d.priority.tolist() == [130, 172, 180]


def test_overlay_moves_thresholds_survives_replacement_and_clears():
    from loopline.processors.policy.policy import Policy, PolicyHolder

    h = PolicyHolder(Policy.from_toml(OVERLAY_POLICY))
    frame = _frame([0.93, 0.97], ["legit", "fraud"])
    assert h.decide_frame(frame, 0).tiers.tolist() == [0, 0]
    ch = h.set_overlay("drift", "fraud", min_confidence_delta=0.04, audit_rate_delta=0.1, evidence={"psi": 0.3},
                       now_ms=1)
    assert ch.kind == "overlay_set" and ch.changed and ch.evidence == {"psi": 0.3}
    mp = h.policy.model("fraud")
    assert (mp.min_confidence, dict(mp.min_confidence_by_class), mp.audit_rate) == (0.94, {"fraud": 0.99}, 0.1)
    d = h.decide_frame(frame, 0)
    assert d.tiers.tolist() == [1, 1] and d.policy_version == h.version != "ov-1"
    assert [d.reasons[c] for c in d.reason_codes] == ["confidence<0.94", "confidence[fraud]<0.99"]
    # a new base policy keeps the overlay on top
    h.replace(OVERLAY_POLICY.replace("ov-1", "ov-2"), now_ms=2)
    assert h.base.version == "ov-2" and h.version.startswith("ov-2+drift:fraud@")
    assert h.policy.model("fraud").min_confidence == 0.94
    # an absolute threshold (autopilot) plus a delta (drift) compose; unknown models get the fallback's rules
    h.set_overlay("autopilot", "fraud", min_confidence=0.8, now_ms=3)
    assert h.policy.model("fraud").min_confidence == 0.84
    h.set_overlay("drift", "other", min_confidence_delta=0.5, now_ms=4)
    assert h.policy.model("other").min_confidence == 1.0  # clipped to [0, 1]
    assert h.clear_overlay("drift", "nobody") is None
    for name, model in [("drift", "fraud"), ("autopilot", "fraud"), ("drift", "other")]:
        assert h.clear_overlay(name, model, now_ms=5).kind == "overlay_cleared"
    assert h.version == "ov-2" and h.policy is h.base


def test_overlay_rejects_values_outside_unit_interval():
    from loopline.processors.policy.policy import Policy, PolicyHolder

    h = PolicyHolder(Policy.from_toml(OVERLAY_POLICY))
    with pytest.raises(ConfigError, match="overlay.autopilot.min_confidence"):
        h.set_overlay("autopilot", "fraud", min_confidence=1.5)
    assert h.version == "ov-1" and not h.overlays


def test_max_override_risk_is_validated():
    from loopline.processors.policy.policy import Policy

    with pytest.raises(ConfigError, match="models.fraud.tiers.review.max_override_risk"):
        Policy.from_toml(OVERLAY_POLICY.replace("max_override_risk = 0.5", "max_override_risk = 2"))


def test_drift_policy_lives_in_the_policy_file():
    from loopline.processors.drift.policy import DriftPolicyBook
    from loopline.streams.drift.extension import PolicyFileDriftBook

    text = OVERLAY_POLICY + '[models.fraud.drift]\nmode = "tighten_routing"\nauto_threshold_delta = 0.05\n'
    holder = PolicyHolder(Policy.from_toml(text))
    book = PolicyFileDriftBook(holder, DriftPolicyBook.from_json('{"*": {"mode": "retrain"}}'))
    fraud = book.policy_for("fraud")
    assert (fraud.mode, fraud.auto_threshold_delta) == ("tighten_routing", 0.05)
    assert book.policy_for("churn").mode == "retrain"  # no section: the settings' JSON applies
    with pytest.raises(ConfigError, match="models.fraud.drift"):
        Policy.from_toml(OVERLAY_POLICY + '[models.fraud.drift]\nmode = "panic"\n')
    with pytest.raises(ConfigError, match="models.fraud.drift"):
        Policy.from_toml(OVERLAY_POLICY + '[models.fraud]\ndrift = 3\n')
