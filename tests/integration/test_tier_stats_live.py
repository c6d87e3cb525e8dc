"""Per-tier statistics of running workers against an offline reference, and 1 vs 2 workers.

The same 20,000 predictions and the same corrections go through one worker and
through two workers in one consumer group (fresh topics each). ``GET /stats``
(merged across workers the way ``loopline stats`` merges them) must equal a
reference computed offline from the decisions and training topics: exact for
counts, within 1e-9 for rates — and the two runs must report the same totals.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

from loopline.connectors.broker import create_topics, free_port
from loopline.connectors.processes import WorkerProcess, loopline_exe, settings_env
from loopline.connectors.producer import PredictionProducer
from loopline.processors.routing.router import iter_decisions
from loopline.processors.stats.tier_stats import TierStats
from loopline.processors.testing import make_events
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.serde import CORRECTION, AvroSerde
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
SERDE = AvroSerde(SchemaCatalogue.load())
N = 8_000
# no budgets and no new-version rule: those are per worker by design, and this test compares worker counts
POLICY = """
version = "stats-test-1"
[models.fraud]
positive_label = "fraud"
[models.fraud.tiers.auto]
min_confidence = 0.9
audit_rate = 0.05
[models.fraud.tiers.escalate]
below_confidence = 0.6
"""


def _answer(task: dict) -> dict:
    """A deterministic reviewer: overrides every 3rd event, says unsure on every 7th, else approves."""
    ev = task["prediction"]
    n = int(ev["event_id"].rsplit("-", 1)[1])
    pred = ev["predicted_label"]
    action, label = ("unsure", None) if n % 7 == 0 else (("override", "legit" if pred == "fraud" else "fraud")
                                                        if n % 3 == 0 else ("approve", pred))
    return {"correction_id": f"c-{ev['event_id']}", "event_id": ev["event_id"], "model_name": "fraud",
            "model_version": "v1", "reviewer_id": "r-1", "action": action, "corrected_label": label,
            "tier": task["tier"], "reviewed_at": ev["emitted_at"] + 30_000, "review_seconds": 3.0, "note": None,
            "source": "test"}


def _run(settings, n_workers: int, tmp_path) -> tuple[TierStats, list, list]:
    create_topics(settings.kafka_bootstrap, settings.topics.all(), settings.partitions,
                  compacted=settings.topics.compacted())
    workers = [WorkerProcess(settings.model_copy(update={"web_port": free_port()}), tmp_path / f"w{n_workers}-{i}.log")
               for i in range(n_workers)]
    try:
        for w in workers:
            w.start()
        if n_workers > 1:
            time.sleep(2 * settings.session_timeout_seconds)  # both in the group before traffic
        events = make_events(N, seed=11)
        with PredictionProducer(settings, batch_size=250) as p:
            p.send_many(events)
        decisions_msgs = read_topic(settings.kafka_bootstrap, settings.topics.decisions,
                                    lambda m: sum(len(SERDE.decode(x.value())[1]["event_ids"]) for x in m) >= N,
                                    timeout=120)
        decisions = [d for m in decisions_msgs for d in iter_decisions(SERDE, m.value())]
        human = sum(1 for d in decisions if d["tier"] != "auto" or d["audited"])
        tasks = []
        for topic in (settings.topics.review_analyst, settings.topics.review_escalation):
            tasks += [SERDE.decode(m.value())[1] for m in read_topic(settings.kafka_bootstrap, topic,
                                                                    lambda m: False, timeout=3)]
        deadline = time.monotonic() + 60
        while len(tasks) < human and time.monotonic() < deadline:
            tasks = []
            for topic in (settings.topics.review_analyst, settings.topics.review_escalation):
                tasks += [SERDE.decode(m.value())[1] for m in read_topic(settings.kafka_bootstrap, topic,
                                                                        lambda m: False, timeout=3)]
        assert len(tasks) == human
        prod = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"})
        for t in tasks:
            c = _answer(t)
            prod.produce(settings.topics.corrections, key=c["event_id"].encode(), value=SERDE.encode(CORRECTION, c))
        prod.flush(30)
        training = read_topic(settings.kafka_bootstrap, settings.topics.training, lambda m: len(m) >= len(tasks),
                              timeout=90, settle=1.0)
        examples = [SERDE.decode(m.value())[1] for m in training]
        assert len(examples) == len(tasks)
        time.sleep(1.0)
        parts = [TierStats.from_state(json.loads(w.get("/stats?format=state"))["tier_stats_state"])
                 for w in workers]
        report = json.loads(workers[0].get("/stats"))
        assert report["tiers"] is not None and report["policy_version"] == "stats-test-1"
        return TierStats.merged(parts), decisions, examples
    finally:
        for w in workers:
            w.stop()


def _reference(decisions: list, examples: list) -> dict:
    ref: dict = {}
    for d in decisions:
        t = ref.setdefault(d["tier"], {"events": 0, "audited": 0, "conf": 0.0, "answered": 0, "agree": 0,
                                       "corrections": 0})
        t["events"] += 1
        t["audited"] += int(d["audited"])
        t["conf"] += d["confidence"]
    for e in examples:
        t = ref["auto" if e["audit"] else e["tier"]]
        t["corrections"] += 1
        if e["label"] is not None:
            t["answered"] += 1
            t["agree"] += int(e["label"] == e["prediction"]["predicted_label"])
    return ref


def _check(stats: TierStats, ref: dict) -> None:
    model = stats.snapshot()["all_time"]["fraud"]
    assert model["events"] == N
    assert set(model["tiers"]) == set(ref) == {"auto", "review", "escalate"}
    for tier, r in ref.items():
        got = model["tiers"][tier]
        assert got["events"] == r["events"], tier
        assert got["audited"] == r["audited"], tier
        assert abs(got["routed_share"] - r["events"] / N) < 1e-9
        assert abs(got["mean_confidence"] - r["conf"] / r["events"]) < 1e-9
        o = got["outcomes"]
        assert (o["corrections"], o["answered"]) == (r["corrections"], r["answered"]), tier
        assert abs(o["agreement_rate"] - r["agree"] / r["answered"]) < 1e-9, tier


def test_stats_match_offline_reference_with_one_and_two_workers(loopline_settings, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    base = loopline_settings.model_copy(update={"policy_file": policy, "stats_flush_seconds": 1.0})
    one, decisions1, examples1 = _run(base, 1, tmp_path)
    ref = _reference(decisions1, examples1)
    _check(one, ref)
    ns = base.topic_namespace + "b"
    two_settings = base.model_copy(update={"topic_namespace": ns, "app_id": f"{ns}-worker",
                                           "data_dir": tmp_path / "data2"})
    two, decisions2, examples2 = _run(two_settings, 2, tmp_path)
    _check(two, _reference(decisions2, examples2))
    a, b = one.snapshot()["all_time"], two.snapshot()["all_time"]
    for tier in ("auto", "review", "escalate"):  # the same totals as one worker
        x, y = a["fraud"]["tiers"][tier], b["fraud"]["tiers"][tier]
        assert (x["events"], x["audited"], x["outcomes"]["answered"]) == \
               (y["events"], y["audited"], y["outcomes"]["answered"])
        assert abs(x["mean_confidence"] - y["mean_confidence"]) < 1e-9
    print(f"\nper-tier events: { {t: a['fraud']['tiers'][t]['events'] for t in a['fraud']['tiers']} }")


CONTROL_TOKEN = "live-test-token-0123456789"


def _post(url: str, body: bytes, token: str | None = CONTROL_TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_policy_replaced_while_running(loopline_settings, tmp_path):
    """File watch, POST /policy and `loopline policy apply`; invalid policies refused and logged."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    s = loopline_settings.model_copy(update={"policy_file": policy, "policy_watch_seconds": 0.5, "agents": "route",
                                             "control_tokens": SecretStr(f"live-test:{CONTROL_TOKEN}"),
                                             "control_token": SecretStr(CONTROL_TOKEN)})
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        # 0. without a token, or with a wrong one, nothing changes and nothing is logged as a change
        v9 = POLICY.replace("stats-test-1", "stats-test-9").encode()
        assert _post(f"{w.base_url}/policy", v9, token=None)[0] == 401
        assert _post(f"{w.base_url}/policy", v9, token=CONTROL_TOKEN + "x")[0] == 403
        assert json.loads(w.get("/policy"))["version"] == "stats-test-1"
        # 1. an invalid policy over HTTP: 400 naming the field, the old one stays
        status, body = _post(f"{w.base_url}/policy", POLICY.replace("audit_rate = 0.05", "audit_rate = 5").encode())
        assert status == 400 and body["field"] == "models.fraud.tiers.auto.audit_rate", body
        assert body["version_in_force"] == "stats-test-1"
        # 2. `loopline policy apply` with a valid file
        v2 = tmp_path / "v2.toml"
        v2.write_text(POLICY.replace("stats-test-1", "stats-test-2").replace("min_confidence = 0.9", "min_confidence = 0.95"))
        r = subprocess.run([loopline_exe(), "policy", "apply", str(v2), "--worker", w.base_url],
                           env=settings_env(s), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "stats-test-1 -> stats-test-2" in r.stdout, r.stderr
        # the CLI refuses an invalid file itself, exit 2, nothing sent
        bad = tmp_path / "bad.toml"
        bad.write_text("version = 3\n")
        r = subprocess.run([loopline_exe(), "policy", "apply", str(bad), "--worker", w.base_url],
                           env=settings_env(s), capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "version" in r.stderr
        with PredictionProducer(s, batch_size=100) as p:
            p.send_many(make_events(200, seed=3))
        msgs = read_topic(s.kafka_bootstrap, s.topics.decisions,
                          lambda m: sum(len(SERDE.decode(x.value())[1]["event_ids"]) for x in m) >= 200, timeout=60)
        assert {SERDE.decode(m.value())[1]["policy_version"] for m in msgs} == {"stats-test-2"}
        # 3. the watched file changes: applied within a few polls
        policy.write_text(POLICY.replace("stats-test-1", "stats-test-3"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and json.loads(w.get("/policy"))["version"] != "stats-test-3":
            time.sleep(0.3)
        assert json.loads(w.get("/policy"))["version"] == "stats-test-3"
        # 4. an invalid edit of the watched file is refused; stats-test-3 stays
        policy.write_text(POLICY.replace("stats-test-1", "stats-test-4").replace("[models.fraud.tiers.auto]",
                                                                                 "[models.fraud.tiers.atuo]"))
        events = read_topic(s.kafka_bootstrap, s.topics.policy_events, lambda m: len(m) >= 4, timeout=30,
                            settle=1.0)
        logged = [SERDE.decode(m.value())[1] for m in events]
        kinds = [(e["kind"], e["new_version"]) for e in sorted(logged, key=lambda e: e["changed_at"])]
        assert kinds == [("rejected", "stats-test-1"), ("replace", "stats-test-2"), ("replace", "stats-test-3"),
                         ("rejected", "stats-test-3")], kinds
        assert "atuo" in max(logged, key=lambda e: e["changed_at"])["detail"]
        by_version = {e["new_version"]: e for e in logged if e["kind"] == "replace"}
        assert by_version["stats-test-2"]["actor"] == "live-test"  # `loopline policy apply` sent the token
        assert by_version["stats-test-3"]["actor"] == ""  # the file watch has no actor
        assert json.loads(w.get("/policy"))["version"] == "stats-test-3"
        metrics = w.get("/metrics").decode()
        assert 'loopline_policy_changes_total{kind="rejected"} 2.0' in metrics
    finally:
        w.stop()
