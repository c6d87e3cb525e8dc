"""Every Kafka client Loopline builds carries the configured SASL / TLS settings (issue #24).

No broker: each client class of confluent-kafka is replaced by a recorder that keeps the
configuration it was built with and stops the caller at its first call on the client (the
one thing a unit test cannot run is the broker the client would talk to). The TLS files are
a real CA, client certificate and key generated for the test, so the Faust/aiokafka side
builds a real ``ssl.SSLContext`` from them.
"""
from __future__ import annotations

import datetime as dt
import ssl

import pytest
from pydantic import SecretStr

from loopline.processors.errors import ConfigError
from loopline.streams.kafka_security import KafkaSecurity, client_config, kafka_security
from loopline.streams.settings import Settings

PASSWORD = "scram-password-0123"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A CA and a client certificate signed by it (PEM), as files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key, issuer_name, issuer_key, ca: bool):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(issuer_key or key, hashes.SHA256()))

    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("loopline-test-ca", ca_key, None, None, True)
    client = cert("loopline-worker", client_key, ca.subject, ca_key, False)
    paths = {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "client.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(client.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return paths


@pytest.fixture()
def secure(tls_files, tmp_path) -> Settings:
    """SASL/SCRAM-SHA-512 over TLS with a client certificate."""
    return Settings(kafka_bootstrap="kafka.example:9093", kafka_security_protocol="SASL_SSL",
                    kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="loopline-worker",
                    kafka_sasl_password=SecretStr(PASSWORD), kafka_ssl_ca_file=tls_files["ca"],
                    kafka_ssl_cert_file=tls_files["cert"], kafka_ssl_key_file=tls_files["key"],
                    data_dir=tmp_path, topic_namespace="sec")


def expected(files) -> dict:
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "loopline-worker",
            "sasl.password": PASSWORD, "ssl.ca.location": str(files["ca"]),
            "ssl.certificate.location": str(files["cert"]), "ssl.key.location": str(files["key"]),
            "ssl.endpoint.identification.algorithm": "https"}


def carries(config: dict, files) -> bool:
    want = expected(files)
    return {k: config.get(k) for k in want} == want and config["bootstrap.servers"] == "kafka.example:9093"


class _Stop(Exception):
    """Raised by a recorded client at its first use: there is no broker to talk to."""


@pytest.fixture()
def recorded(monkeypatch) -> list[tuple[str, dict]]:
    """Replace confluent-kafka's Producer, Consumer and AdminClient by recorders."""
    import confluent_kafka
    import confluent_kafka.admin

    from loopline.streams.learning import kafka_io

    built: list[tuple[str, dict]] = []

    def recorder(kind: str):
        class Recorded:
            def __init__(self, config: dict, **_kw) -> None:
                built.append((kind, dict(config)))

            def __getattr__(self, name):
                if name in ("close", "flush"):
                    return lambda *a, **k: 0
                raise _Stop(f"{kind}.{name}")
        return Recorded

    for module, kind in ((confluent_kafka, "Producer"), (confluent_kafka, "Consumer"),
                         (confluent_kafka.admin, "AdminClient"), (kafka_io, "Consumer")):
        monkeypatch.setattr(module, kind, recorder(kind))
    return built


# ------------------------------------------------------------------ the settings themselves
def test_plaintext_default_leaves_every_client_as_it_was():
    sec = kafka_security(Settings())
    assert sec.librdkafka() == {} and sec.faust_credentials() is None
    assert sec.aiokafka() == {"security_protocol": "PLAINTEXT"}
    assert client_config(Settings(kafka_bootstrap="b:9092"), {"group.id": "g"}) == {
        "bootstrap.servers": "b:9092", "group.id": "g"}


@pytest.mark.parametrize("fields, words", [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_password": SecretStr(PASSWORD)}, "SASL_USERNAME"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": SecretStr(PASSWORD)}, "does not use SASL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "c.pem"}, "go together"),
    ({"kafka_ssl_ca_file": "ca.pem"}, "does not use TLS"),
])
def test_combinations_that_cannot_work_are_refused_without_the_password(fields, words):
    with pytest.raises(ConfigError, match=words) as err:
        kafka_security(Settings(**fields))
    assert PASSWORD not in str(err.value)


def test_missing_tls_file_is_a_config_error(tmp_path):
    sec = KafkaSecurity(protocol="SSL", ca_file=tmp_path / "nope.pem")
    assert sec.librdkafka()["ssl.ca.location"].endswith("nope.pem")
    with pytest.raises(ConfigError, match="TLS files"):
        sec.faust_credentials()
    assert PASSWORD not in repr(KafkaSecurity(protocol="SASL_SSL", username="u", password=PASSWORD))


def test_scram_with_tls_in_librdkafka_faust_and_aiokafka_form(secure, tls_files):
    sec = kafka_security(secure)
    assert carries(client_config(secure), tls_files)
    creds = sec.faust_credentials()
    assert (type(creds).__name__, creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == (
        "SASLCredentials", "SASL_SSL", "SCRAM-SHA-512", "loopline-worker", PASSWORD)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED and creds.ssl_context.check_hostname
    kw = sec.aiokafka()
    assert (kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "loopline-worker", PASSWORD)
    assert kw["ssl_context"] is not None
    plain = kafka_security(secure.model_copy(update={"kafka_security_protocol": "SASL_PLAINTEXT",
                                                      "kafka_sasl_mechanism": "SCRAM-SHA-256",
                                                      "kafka_ssl_ca_file": None, "kafka_ssl_cert_file": None,
                                                      "kafka_ssl_key_file": None}))
    assert plain.librdkafka() == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                                  "sasl.username": "loopline-worker", "sasl.password": PASSWORD}
    assert plain.faust_credentials().ssl_context is None and plain.aiokafka()["security_protocol"] == "SASL_PLAINTEXT"


def test_mutual_tls_without_sasl(secure, tls_files):
    s = secure.model_copy(update={"kafka_security_protocol": "SSL", "kafka_sasl_username": None,
                                  "kafka_sasl_password": None, "kafka_ssl_check_hostname": False})
    sec = kafka_security(s)
    assert sec.librdkafka() == {"security.protocol": "SSL", "ssl.ca.location": str(tls_files["ca"]),
                                "ssl.certificate.location": str(tls_files["cert"]),
                                "ssl.key.location": str(tls_files["key"]),
                                "ssl.endpoint.identification.algorithm": "none"}
    creds = sec.faust_credentials()
    assert type(creds).__name__ == "SSLCredentials" and creds.protocol.value == "SSL"
    assert creds.context.check_hostname is False and sec.aiokafka()["security_protocol"] == "SSL"


# ------------------------------------------------------------------ every client
def test_worker_faust_app_and_its_side_readers(secure, tls_files):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from loopline.streams.app import Worker
    from loopline.streams.drift.reader import reader_kwargs
    from loopline.streams.learning.kafka_io import reader_config

    w = Worker(secure.model_copy(update={"agents": "route,feedback,drift,learn"}))
    creds = w.app.conf.broker_credentials
    assert (creds.protocol.value, creds.mechanism.value, creds.username) == ("SASL_SSL", "SCRAM-SHA-512",
                                                                           "loopline-worker")
    auth = credentials_to_aiokafka_auth(creds)  # what Faust hands each of its aiokafka consumers/producers
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_plain_password"] == PASSWORD
    drift = reader_kwargs(w.settings)
    assert (drift["security_protocol"], drift["sasl_mechanism"], drift["bootstrap_servers"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "kafka.example:9093")
    assert carries(reader_config(secure.kafka_bootstrap, kafka_security(secure).librdkafka()), tls_files)


def test_prediction_producer(secure, tls_files, recorded):
    from loopline.connectors.producer import PredictionProducer

    with pytest.raises(_Stop):
        PredictionProducer(secure)
    assert [k for k, _ in recorded] == ["Producer"] and carries(recorded[0][1], tls_files)
    assert recorded[0][1]["enable.idempotence"] is True  # its own settings are kept


def test_review_server_publisher_and_feed(secure, tls_files, recorded, tmp_path):
    from loopline.connectors.review.app import build_app
    from loopline.connectors.review.feed import TaskFeed
    from loopline.connectors.review.settings import ReviewSettings
    from loopline.connectors.review.store import ReviewStore

    rs = ReviewSettings.from_settings(secure)
    build_app(rs, start_feed=False)  # builds its CorrectionPublisher
    store = ReviewStore(tmp_path / "r.sqlite3", rs.lease_seconds, rs.task_ttl_seconds, rs.max_tasks)
    feed = TaskFeed(rs, store)
    feed.run()  # builds the consumer, then stops at subscribe (recorded as the feed's error)
    assert isinstance(feed.error, _Stop)
    assert [k for k, _ in recorded] == ["Producer", "Consumer"]
    assert all(carries(c, tls_files) for _, c in recorded)
    assert recorded[1][1]["group.id"] == "sec-review-server"


def test_reviewer_client(secure, tls_files, recorded):
    from loopline.connectors.review.client import ReviewerClient

    with pytest.raises(_Stop):
        ReviewerClient(secure, reviewer_id="bridge")
    assert [k for k, _ in recorded] == ["Producer", "Consumer"]
    assert all(carries(c, tls_files) for _, c in recorded)


def test_cli_commands(secure, tls_files, recorded, monkeypatch):
    from loopline.connectors.cli import main as cli
    from loopline.connectors.cli.drift import baseline_consumer_config
    from loopline.connectors.cli.model import ModelCommandError, ModelOps, champion_producer_config
    from loopline.connectors.processes import settings_env

    for k, v in settings_env(secure).items():  # `loopline topics create` reads the environment
        if k.startswith("LOOPLINE_"):
            monkeypatch.setenv(k, v)
    # the broker is faked here: the CLI's reachability check (a TCP connect) is skipped; the
    # recorder's _Stop then ends the command through the CLI's one error path (exit 2)
    monkeypatch.setattr("loopline.connectors.cli.errors.check_broker", lambda *a, **kw: None)
    assert cli.main(["topics", "create"]) == 2
    with pytest.raises(ModelCommandError):  # `loopline model ...` reads the model-updates topic first
        ModelOps(secure)
    assert [k for k, _ in recorded] == ["AdminClient", "Consumer"]
    assert all(carries(c, tls_files) for _, c in recorded)
    assert carries(champion_producer_config(secure), tls_files)
    assert carries(baseline_consumer_config(secure, 5.0), tls_files)


def test_worker_command_refuses_a_bad_combination_with_a_sentence(monkeypatch, capsys):
    from loopline.connectors.cli import main as cli

    monkeypatch.setenv("LOOPLINE_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert cli.main(["worker"]) == 2  # named before the (unreachable) broker is tried
    assert "LOOPLINE_KAFKA_SASL_USERNAME" in capsys.readouterr().err


def test_worker_command_names_a_tls_file_that_does_not_load(tmp_path, monkeypatch, capsys):
    from loopline.connectors.cli import main as cli

    monkeypatch.setenv("LOOPLINE_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("LOOPLINE_KAFKA_SSL_CA_FILE", str(tmp_path / "missing-ca.pem"))
    assert cli.main(["worker"]) == 2  # named before the (unreachable) broker is tried
    assert "TLS files" in capsys.readouterr().err
