"""Settings of the reviewer tools, built from the project's ``Settings`` plus defaults."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from loopline.processors.wire.names import DEV_KEY

ANALYST = "analyst"
ESCALATION = "escalation"
QUEUES = (ANALYST, ESCALATION)
QUEUE_OF_TIER = {"review": ANALYST, "escalate": ESCALATION}
TIER_OF_QUEUE = {ANALYST: "review", ESCALATION: "escalate"}


@dataclass(frozen=True)
class ReviewSettings:
    """Every knob of the review server. ``from_settings`` reads ``review_*`` fields of
    ``Settings`` when they exist (``Settings.review_lease_seconds`` -> ``lease_seconds``)."""

    bootstrap: str | None = None
    namespace: str = "loopline"
    db_path: Path = Path(".loopline/review.sqlite3")
    db_url: str | None = None  # postgresql://... = shared task store (several review servers); unset = db_path
    host: str = "127.0.0.1"
    port: int = 6070
    lease_seconds: float = 300.0
    task_ttl_seconds: float = 7 * 86400.0
    max_tasks: int = 100_000
    masked_features: tuple[str, ...] = ("country", "account_age_days")
    policy_file: Path | None = None  # its models' `personal_data` keys are masked too
    session_seconds: float = 12 * 3600.0
    session_key: bytes = DEV_KEY.encode()
    session_timeout_seconds: float = 6.0
    page_size: int = 50
    kafka_security: dict = field(default_factory=dict)  # librdkafka security entries (streams.kafka_security)
    session_idle_seconds: float = 1800.0
    max_sessions: int = 10_000
    login_max_failures: int = 10
    login_max_failures_per_address: int = 30
    login_window_seconds: float = 900.0
    login_lockout_seconds: float = 900.0
    login_table_max: int = 10_000
    trust_forwarded_for: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    min_password_length: int = 12
    audit_sla_seconds: float = 1800.0  # audit tasks are due this long after creation (their own due time)
    audit_priority: int = 200  # the urgency weight of audit tasks (an escalation's base priority by default)
    escalation_sla_seconds: float = 3600.0  # an analyst's escalation is due this long after it was escalated
    escalation_priority: int = 250  # ... and carries this priority (above native escalations' base 200)
    priority_weight_seconds: float = 60.0  # urgency = due time - priority x this (one point = one minute)
    max_seen_labels: int = 20  # labels offered for a model without a declared label set
    # an analyst's correction of a prediction at or above this confidence gets a senior's second opinion
    # (an escalation copy whose answer decides); None = off
    confirm_overrides_above: float | None = None

    @classmethod
    def from_settings(cls, settings, **overrides) -> ReviewSettings:
        values = {
            "bootstrap": settings.kafka_bootstrap,
            "namespace": settings.topic_namespace,
            "db_path": Path(settings.data_dir) / "review.sqlite3",
            "session_key": settings.snapshot_hmac_key.get_secret_value().encode(),
            "session_timeout_seconds": settings.session_timeout_seconds,
            "policy_file": getattr(settings, "policy_file", None),
            "kafka_security": _kafka_security(settings),
        }
        for f in fields(cls):
            v = getattr(settings, f"review_{f.name}", None)
            if v is not None and f.name not in ("bootstrap", "namespace", "session_key", "kafka_security"):
                values[f.name] = tuple(v) if f.name == "masked_features" else v
        values.update(overrides)
        return cls(**values)

    @property
    def group_id(self) -> str:
        return f"{self.namespace}-review-server"

    def topic_of_queue(self, queue: str) -> str:
        from loopline.streams.topics import TopicNames

        t = TopicNames(self.namespace)
        return t.review_analyst if queue == ANALYST else t.review_escalation

    @property
    def policy_events_topic(self) -> str:
        from loopline.streams.topics import TopicNames

        return TopicNames(self.namespace).policy_events

    @property
    def corrections_topic(self) -> str:
        from loopline.streams.topics import TopicNames

        return TopicNames(self.namespace).corrections


def _kafka_security(settings) -> dict:
    """The librdkafka security entries of the project's settings ({} for settings without them)."""
    if not hasattr(settings, "kafka_security_protocol"):
        return {}
    from loopline.streams.kafka_security import kafka_security

    return kafka_security(settings).librdkafka()
