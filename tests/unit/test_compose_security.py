"""docker-compose.yml runs Kafka with SCRAM users and least-privilege ACLs for three roles (issue #24).

Checked by parsing (no Docker engine here): the broker's listeners, the mounted setup script
and ACL table (ops/kafka/), each Loopline service's credentials, and the ACLs against the
topics and groups the code really uses — the worker's are read from a real ``Worker`` built
with every agent. ``test_security_checks_catch_mistakes`` breaks a copy in one way per check.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from loopline.connectors.review.settings import ReviewSettings
from loopline.streams.kafka_security import kafka_security
from loopline.streams.settings import Settings
from tests.unit.test_compose import REPO, load_compose, mounted_file, parse_listeners, service_env

ROLE_OF_SERVICE = {"topics": "loopline-worker", "worker": "loopline-worker", "review": "loopline-reviewer"}
SCRAM_ENV = {"loopline-worker": "SCRAM_WORKER_PASSWORD", "loopline-reviewer": "SCRAM_REVIEWER_PASSWORD",
             "loopline-producer": "SCRAM_PRODUCER_PASSWORD", "schema-registry": "SCRAM_REGISTRY_PASSWORD"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Acl:
    principal: str
    rtype: str
    pattern: str
    name: str
    ops: frozenset

    def covers(self, rtype: str, name: str) -> bool:
        return self.rtype == rtype and (name == self.name if self.pattern == "literal" else name.startswith(self.name))


def parse_acls(text: str) -> list[Acl]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        principal, rtype, pattern, name, ops = line.split()
        out.append(Acl(principal, rtype, pattern, name, frozenset(ops.split(","))))
    return out


def allowed(acls: list[Acl], principal: str, rtype: str, name: str) -> set[str]:
    return set().union(*[a.ops for a in acls if a.principal == principal and a.covers(rtype, name)])


def kafka_files(compose: dict):
    """(script path, acl table path) on the host, as mounted into the kafka service, or Nones."""
    kafka = compose["services"]["kafka"]
    entry = kafka.get("entrypoint") or []
    script = mounted_file(kafka, entry[-1]) if entry else None
    acls = mounted_file(kafka, "/opt/loopline/kafka/acls.conf")
    return script, acls


# ------------------------------------------------------------------ checks
def listener_problems(compose: dict) -> list[str]:
    """Every listener reachable from outside the container authenticates; plaintext ones are loopback only."""
    env = service_env(compose["services"]["kafka"])
    protocols = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    problems = []
    for name, (host, _port) in parse_listeners(env["KAFKA_LISTENERS"]).items():
        protocol = protocols.get(name)
        if protocol in ("PLAINTEXT", "SSL") and host not in LOOPBACK:
            problems.append(f"kafka: listener {name} ({protocol}) is reachable without a password on {host or '*'}")
    if "StandardAuthorizer" not in env.get("KAFKA_AUTHORIZER_CLASS_NAME", ""):
        problems.append("kafka: no ACL authorizer configured")
    if env.get("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "false").lower() != "false":
        problems.append("kafka: everyone is allowed where no ACL is found")
    mechanisms = set(env.get("KAFKA_SASL_ENABLED_MECHANISMS", "GSSAPI").split(","))
    for name in ROLE_OF_SERVICE:
        wanted = service_env(compose["services"][name]).get("LOOPLINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        if wanted not in mechanisms:
            problems.append(f"{name}: uses SASL mechanism {wanted}, which kafka does not enable ({mechanisms})")
    script, acls = kafka_files(compose)
    if script is None or not script.is_file():
        problems.append("kafka: its entrypoint script is not mounted from the repository")
    elif "/opt/loopline/kafka/acls.conf" not in script.read_text(encoding="utf-8"):
        problems.append("kafka: the setup script does not apply /opt/loopline/kafka/acls.conf")
    if acls is None or not acls.is_file():
        problems.append("kafka: acls.conf is not mounted at /opt/loopline/kafka/acls.conf")
    return problems


def credential_problems(compose: dict) -> list[str]:
    """Each Loopline service logs in as its role with the password the broker was given for it."""
    services = compose["services"]
    kafka_env = service_env(services["kafka"])
    problems = []
    for name, role in ROLE_OF_SERVICE.items():
        env = {k: v for k, v in service_env(services[name]).items() if k.startswith("LOOPLINE_")}
        if env.get("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") not in ("SASL_PLAINTEXT", "SASL_SSL"):
            problems.append(f"{name}: does not authenticate to Kafka (LOOPLINE_KAFKA_SECURITY_PROTOCOL)")
            continue
        if env.get("LOOPLINE_KAFKA_SASL_USERNAME") != role:
            problems.append(f"{name}: logs in as {env.get('LOOPLINE_KAFKA_SASL_USERNAME')!r}, not as role {role}")
        if env.get("LOOPLINE_KAFKA_SASL_PASSWORD") != kafka_env.get(SCRAM_ENV[role]):
            problems.append(f"{name}: its Kafka password is not the one kafka sets for {role}")
        fields = {k.removeprefix("LOOPLINE_").lower(): v for k, v in env.items()}
        try:
            config = kafka_security(Settings.model_validate(fields)).librdkafka()
        except Exception as exc:  # the settings must build a client configuration
            problems.append(f"{name}: its Kafka settings are refused: {exc}")
            continue
        if config.get("sasl.username") != role:
            problems.append(f"{name}: the client configuration does not carry the role's user")
    registry = service_env(services["schema-registry"])
    jaas = registry.get("SCHEMA_REGISTRY_KAFKASTORE_SASL_JAAS_CONFIG", "")
    if 'username="schema-registry"' not in jaas or \
            f'password="{kafka_env.get(SCRAM_ENV["schema-registry"])}"' not in jaas:
        problems.append("schema-registry: does not log in as schema-registry with the password kafka sets")
    return problems


def worker_topics(namespace: str, tmp_path) -> tuple[set[str], set[str], list[str]]:
    """(topics the worker reads, topics it writes, its changelog topics), from a real Worker."""
    from loopline.streams.app import Worker

    w = Worker(Settings(kafka_bootstrap="127.0.0.1:1", topic_namespace=namespace, data_dir=tmp_path,
                        agents="route,feedback,drift,learn"))
    reads = {t for agent in w.app.agents.values() for t in agent.channel.topics}
    t = w.settings.topics
    reads |= {t.model_updates, t.drift, t.drift_sketches, t.training}  # side readers: risk tail, drift reader, learner
    writes = {topic.get_topic_name() for topic in w.t_out.values()}
    changelogs = [table.changelog_topic.get_topic_name() for table in w.app.tables.values()]
    return reads, writes, changelogs


def acl_problems(acls: list[Acl], namespace: str, app_id: str, worker: tuple) -> list[str]:
    """Each role may do what the code needs, and the producer and reviewer nothing more."""
    from loopline.streams.topics import TopicNames

    t = TopicNames(namespace)
    rs = ReviewSettings(namespace=namespace)
    problems = []
    reads, writes, changelogs = worker
    for topic in sorted(reads):
        if not {"Read", "Describe"} <= allowed(acls, "loopline-worker", "topic", topic):
            problems.append(f"loopline-worker cannot read {topic}")
    for topic in sorted(writes):
        if not {"Write", "Describe"} <= allowed(acls, "loopline-worker", "topic", topic):
            problems.append(f"loopline-worker cannot write {topic}")
    for topic in t.all():
        if "Create" not in allowed(acls, "loopline-worker", "topic", topic):
            problems.append(f"loopline-worker (`loopline topics create`) cannot create {topic}")
    for topic in changelogs:
        if not {"Create", "Read", "Write"} <= allowed(acls, "loopline-worker", "topic", topic):
            problems.append(f"loopline-worker cannot keep its table changelog {topic}")
    if "Read" not in allowed(acls, "loopline-worker", "group", app_id):
        problems.append(f"loopline-worker cannot join its consumer group {app_id}")
    # producer service: write predictions, nothing else
    for a in acls:
        if a.principal == "loopline-producer" and not (a.rtype == "topic" and a.pattern == "literal"
                                                       and a.name == t.predictions and a.ops <= {"Write", "Describe"}):
            problems.append(f"loopline-producer has more than writing {t.predictions}: {a}")
    if "Write" not in allowed(acls, "loopline-producer", "topic", t.predictions):
        problems.append(f"loopline-producer cannot write {t.predictions}")
    # reviewer tool: read review topics, write corrections, its groups; nothing else
    review_topics = {t.review_analyst, t.review_escalation}
    for a in acls:
        if a.principal != "loopline-reviewer":
            continue
        fine = ((a.rtype == "topic" and a.pattern == "literal" and a.name in review_topics
                 and a.ops <= {"Read", "Describe"})
                or (a.rtype == "topic" and a.pattern == "literal" and a.name == t.corrections
                    and a.ops <= {"Write", "Describe"})
                or (a.rtype == "group" and a.ops <= {"Read", "Describe"}))
        if not fine:
            problems.append(f"loopline-reviewer has more than it needs: {a}")
    for topic in review_topics:
        if "Read" not in allowed(acls, "loopline-reviewer", "topic", topic):
            problems.append(f"loopline-reviewer cannot read {topic}")
    if "Write" not in allowed(acls, "loopline-reviewer", "topic", t.corrections):
        problems.append(f"loopline-reviewer cannot write {t.corrections}")
    for group in (rs.group_id, f"{namespace}-reviewer-client-analyst", f"{namespace}-reviewer-client-escalation"):
        if "Read" not in allowed(acls, "loopline-reviewer", "group", group):
            problems.append(f"loopline-reviewer cannot use the consumer group {group}")
    return problems


# ------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def acls() -> list[Acl]:
    return parse_acls((REPO / "ops" / "kafka" / "acls.conf").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return worker_topics("loopline", tmp_path_factory.mktemp("w"))


def _compose_ids(compose: dict) -> tuple[str, str]:
    env = service_env(compose["services"]["worker"])
    return env.get("LOOPLINE_TOPIC_NAMESPACE", "loopline"), env.get("LOOPLINE_APP_ID", "loopline-worker")


def test_kafka_listeners_authenticate_and_acls_are_enforced(compose):
    assert listener_problems(compose) == []


def test_each_service_logs_in_as_its_role(compose):
    assert credential_problems(compose) == []


def test_acls_give_each_role_what_the_code_needs_and_no_more(compose, acls, worker):
    namespace, app_id = _compose_ids(compose)
    assert acl_problems(acls, namespace, app_id, worker) == []


def test_every_acl_line_names_a_role_and_valid_operations(acls):
    ops = {"Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "DescribeConfigs",
           "AlterConfigs", "IdempotentWrite", "All"}
    for a in acls:
        assert a.principal in SCRAM_ENV, a
        assert a.rtype in ("topic", "group", "cluster") and a.pattern in ("literal", "prefixed"), a
        assert a.ops <= ops, a


def _plaintext_client_listener(c):
    env = c["services"]["kafka"]["environment"]
    env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].replace(
        "CLIENT:SASL_PLAINTEXT", "CLIENT:PLAINTEXT")


def _admin_listener_on_all_interfaces(c):
    env = c["services"]["kafka"]["environment"]
    env["KAFKA_LISTENERS"] = env["KAFKA_LISTENERS"].replace("ADMIN://127.0.0.1:9094", "ADMIN://:9094")


def _allow_everyone(c):
    c["services"]["kafka"]["environment"]["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] = "true"


def _review_as_worker(c):
    c["services"]["review"]["environment"]["LOOPLINE_KAFKA_SASL_USERNAME"] = "loopline-worker"


def _wrong_password(c):
    c["services"]["worker"]["environment"]["LOOPLINE_KAFKA_SASL_PASSWORD"] = "${KAFKA_WORKER_PASSWORD:-other}"


def _no_sasl(c):
    c["services"]["topics"]["environment"]["LOOPLINE_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"


@pytest.mark.parametrize("breaker, check", [
    (_plaintext_client_listener, listener_problems),
    (_admin_listener_on_all_interfaces, listener_problems),
    (_allow_everyone, listener_problems),
    (_review_as_worker, credential_problems),
    (_wrong_password, credential_problems),
    (_no_sasl, credential_problems),
], ids=lambda x: getattr(x, "__name__", "check"))
def test_security_checks_catch_mistakes(compose, breaker, check):
    broken = copy.deepcopy(compose)
    breaker(broken)
    assert check(broken), f"{breaker.__name__} went unnoticed"


@pytest.mark.parametrize("line, expect", [
    ("loopline-producer topic literal loopline.corrections Write", "more than writing"),
    ("loopline-producer group prefixed loopline- Read", "more than writing"),
    ("loopline-reviewer topic literal loopline.predictions Read", "more than it needs"),
    ("loopline-reviewer topic prefixed loopline. Read,Write", "more than it needs"),
], ids=["producer-writes-corrections", "producer-group", "reviewer-reads-predictions", "reviewer-prefix"])
def test_acl_check_catches_extra_rights(compose, acls, worker, line, expect):
    namespace, app_id = _compose_ids(compose)
    problems = acl_problems(acls + parse_acls(line), namespace, app_id, worker)
    assert any(expect in p for p in problems), problems


@pytest.mark.parametrize("drop", [
    ("loopline-worker", "loopline.training"), ("loopline-worker", "loopline-worker"),
    ("loopline-reviewer", "loopline.corrections"), ("loopline-reviewer", "loopline-review-server"),
    ("loopline-producer", "loopline.predictions"),
], ids=lambda d: f"{d[0]}-{d[1]}")
def test_acl_check_catches_missing_rights(compose, acls, worker, drop):
    namespace, app_id = _compose_ids(compose)
    kept = [a for a in acls if (a.principal, a.name) != drop]
    assert len(kept) < len(acls)
    assert acl_problems(kept, namespace, app_id, worker)
