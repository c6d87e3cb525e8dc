"""The small configuration Loopline's client libraries take (not the worker's whole ``Settings``).

A prediction service or a reviewer tool needs to know where the brokers are,
which topic namespace to use and, optionally, the schema registry — nothing
about drift, learning or review servers::

    >>> from loopline.connectors.client_config import ClientConfig
    >>> cfg = ClientConfig("kafka-1:9092,kafka-2:9092")
    >>> cfg.topics.predictions
    'loopline.predictions'
    >>> cfg.kafka_config()["bootstrap.servers"]
    'kafka-1:9092,kafka-2:9092'

``ClientConfig.from_settings(settings)`` is the worker's own path (CLI, demo,
tests): it reads the same fields from a ``Settings``. ``kafka`` carries extra
librdkafka properties (security settings, timeouts) to every client built from it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from loopline.streams.settings import Settings
from loopline.streams.topics import TopicNames


@dataclass(frozen=True)
class ClientConfig:
    """Where a client talks to: brokers, topic namespace, optional schema registry, extra client properties."""

    bootstrap_servers: str
    topic_namespace: str = "loopline"
    schema_registry_url: str | None = None
    kafka: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: how far in the future an ``emitted_at`` may lie (producer validation)
    max_clock_skew_seconds: float = 300.0
    #: consumer session timeout (reviewer clients)
    session_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers is empty: name at least one broker (host:port)")

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_namespace)

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for a confluent-kafka client: bootstrap + ``kafka`` extras + ``overrides``."""
        return {"bootstrap.servers": self.bootstrap_servers, **dict(self.kafka), **overrides}

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientConfig:
        if not settings.kafka_bootstrap:
            raise ValueError("no broker configured: set LOOPLINE_KAFKA_BOOTSTRAP (host:port)")
        from loopline.streams.kafka_security import kafka_security

        return cls(bootstrap_servers=settings.kafka_bootstrap, topic_namespace=settings.topic_namespace,
                   schema_registry_url=settings.schema_registry_url,
                   kafka=MappingProxyType(kafka_security(settings).librdkafka()),
                   max_clock_skew_seconds=settings.max_clock_skew_seconds,
                   session_timeout_seconds=settings.session_timeout_seconds)


def client_config(config: ClientConfig | Settings) -> ClientConfig:
    """Accept either (the worker's ``Settings`` for the project's own callers)."""
    return config if isinstance(config, ClientConfig) else ClientConfig.from_settings(config)
