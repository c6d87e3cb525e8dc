"""Kafka security settings, turned into the configuration of every Kafka client Loopline builds.

One source: the ``kafka_*`` fields of :class:`~loopline.streams.settings.Settings`
(``LOOPLINE_KAFKA_SECURITY_PROTOCOL``, ``..._SASL_MECHANISM``, ``..._SASL_USERNAME``,
``..._SASL_PASSWORD``, ``..._SSL_CA_FILE``, ``..._SSL_CERT_FILE``, ``..._SSL_KEY_FILE``,
``..._SSL_KEY_PASSWORD``, ``..._SSL_CHECK_HOSTNAME``). :func:`kafka_security` checks them
once and gives three views of the same thing:

* :meth:`KafkaSecurity.librdkafka` — the ``security.protocol`` / ``sasl.*`` / ``ssl.*``
  entries of a confluent-kafka (librdkafka) client configuration; :func:`client_config`
  adds ``bootstrap.servers`` and the caller's own entries;
* :meth:`KafkaSecurity.faust_credentials` — ``faust.SASLCredentials`` /
  ``faust.SSLCredentials`` for ``faust.App(broker_credentials=...)`` (the worker);
* :meth:`KafkaSecurity.aiokafka` — keyword arguments of a plain aiokafka client, derived
  from the Faust credentials by Faust's own mapping, so the worker's side readers connect
  exactly like its Faust consumers.

Guarantees: a SASL protocol without user name or password, a certificate without its key
(or the reverse), or TLS files with a protocol that does not use TLS raise ``ConfigError``
before any client is built; messages never contain the password. ``PLAINTEXT`` with no other
field set gives an empty librdkafka section and no Faust credentials: the clients are
configured exactly as before these settings existed.

>>> from loopline.streams.settings import Settings
>>> sec = kafka_security(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
...                               kafka_sasl_username="svc", kafka_sasl_password="pw"))
>>> sorted(sec.librdkafka().items())
[('sasl.mechanism', 'SCRAM-SHA-256'), ('sasl.password', 'pw'), ('sasl.username', 'svc'), ('security.protocol', 'SASL_PLAINTEXT')]
>>> kafka_security(Settings()).librdkafka()
{}
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from loopline.processors.errors import ConfigError

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


@dataclass(frozen=True, repr=False)
class KafkaSecurity:
    """Checked Kafka security settings (see the module docstring). ``repr`` hides secrets."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = None
    check_hostname: bool = True

    def __repr__(self) -> str:
        return (f"KafkaSecurity(protocol={self.protocol!r}, mechanism={self.mechanism!r}, "
                f"username={self.username!r}, ca_file={self.ca_file}, cert_file={self.cert_file})")

    @property
    def sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    @property
    def tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    def check(self) -> KafkaSecurity:
        """Raise ``ConfigError`` naming the setting when the combination cannot work."""
        if self.sasl and not (self.username and self.password):
            raise ConfigError(f"LOOPLINE_KAFKA_SECURITY_PROTOCOL={self.protocol} needs LOOPLINE_KAFKA_SASL_USERNAME "
                              f"and LOOPLINE_KAFKA_SASL_PASSWORD")
        if not self.sasl and (self.username or self.password):
            raise ConfigError(f"LOOPLINE_KAFKA_SASL_USERNAME/PASSWORD are set but LOOPLINE_KAFKA_SECURITY_PROTOCOL="
                              f"{self.protocol} does not use SASL (choose SASL_SSL or SASL_PLAINTEXT)")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("LOOPLINE_KAFKA_SSL_CERT_FILE and LOOPLINE_KAFKA_SSL_KEY_FILE go together")
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ConfigError(f"LOOPLINE_KAFKA_SSL_* files are set but LOOPLINE_KAFKA_SECURITY_PROTOCOL={self.protocol} "
                              f"does not use TLS (choose SSL or SASL_SSL)")
        return self

    # ------------------------------------------------------------ confluent-kafka
    def librdkafka(self) -> dict:
        """The security entries of a librdkafka configuration (empty for plain PLAINTEXT)."""
        out: dict = {}
        if self.protocol != "PLAINTEXT":
            out["security.protocol"] = self.protocol
        if self.sasl:
            out.update({"sasl.mechanism": self.mechanism, "sasl.username": self.username,
                        "sasl.password": self.password})
        if self.tls:
            if self.ca_file:
                out["ssl.ca.location"] = str(self.ca_file)
            if self.cert_file:
                out["ssl.certificate.location"] = str(self.cert_file)
                out["ssl.key.location"] = str(self.key_file)
            if self.key_password:
                out["ssl.key.password"] = self.key_password
            out["ssl.endpoint.identification.algorithm"] = "https" if self.check_hostname else "none"
        return out

    # ------------------------------------------------------------ Faust / aiokafka
    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (server verification, optional client certificate); None without TLS.

        Reads the CA, certificate and key files: a missing or unreadable file is a ``ConfigError``.
        """
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file), password=self.key_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the Kafka TLS files (LOOPLINE_KAFKA_SSL_*): {exc}") from None
        ctx.check_hostname = self.check_hostname
        return ctx

    def faust_credentials(self):
        """``broker_credentials`` for ``faust.App``: SASL or SSL credentials, or None for PLAINTEXT."""
        import faust

        context = self.ssl_context()
        if self.sasl:
            return faust.SASLCredentials(username=self.username, password=self.password, ssl_context=context,
                                         mechanism=self.mechanism)
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def aiokafka(self) -> dict:
        """Keyword arguments for ``aiokafka.AIOKafkaConsumer``/``Producer`` (Faust's own mapping)."""
        from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

        return dict(credentials_to_aiokafka_auth(self.faust_credentials()))


def kafka_security(settings) -> KafkaSecurity:
    """The checked :class:`KafkaSecurity` of ``settings`` (raises ``ConfigError`` on a bad combination)."""
    password = settings.kafka_sasl_password
    key_password = settings.kafka_ssl_key_password
    return KafkaSecurity(
        protocol=settings.kafka_security_protocol, mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username or None,
        password=password.get_secret_value() or None if password is not None else None,
        ca_file=settings.kafka_ssl_ca_file, cert_file=settings.kafka_ssl_cert_file,
        key_file=settings.kafka_ssl_key_file,
        key_password=key_password.get_secret_value() or None if key_password is not None else None,
        check_hostname=settings.kafka_ssl_check_hostname,
    ).check()


def client_config(settings, extra: dict | None = None) -> dict:
    """A complete librdkafka configuration: ``bootstrap.servers``, the security entries, then ``extra``."""
    out = {"bootstrap.servers": settings.kafka_bootstrap}
    out.update(kafka_security(settings).librdkafka())
    out.update(extra or {})
    return out
