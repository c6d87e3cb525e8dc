"""One typed, frozen ``Settings`` object, read from ``LOOPLINE_*`` variables.

Built once at start (``Settings()``) and passed down; nothing reads the
environment at import time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.processors.wire.names import DEV_KEY
from loopline.streams.secrets import default_data_dir
from loopline.streams.topics import TopicNames


class Settings(BaseSettings):
    """Every knob of a Loopline process. Environment: ``LOOPLINE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        None, description="host:port list of a Kafka cluster; unset = start the embedded broker")
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry; unset = Avro single-object encoding")
    topic_namespace: str = Field("loopline", description="prefix of every topic name")
    partitions: int = Field(4, ge=1, description="partitions of each topic Loopline creates")
    replication_factor: int = Field(1, ge=1, description="replication factor of each topic Loopline creates (1 on the embedded broker)")
    app_id: str = Field("loopline-worker", description="Faust app id = consumer group (persisted state: do not rename casually)")
    agents: str = Field("route,feedback,drift", description="agents this worker runs (comma list of route, feedback, drift, learn); run exactly one learn worker; give each agent set its own app_id")
    web_host: str = Field("127.0.0.1", description="worker HTTP bind address")
    web_port: int = Field(6066, ge=0, le=65535, description="worker HTTP port: /metrics /healthz /readyz /stats")
    broker_host: str = Field("127.0.0.1", description="embedded broker bind and advertised address")
    broker_port: int = Field(9092, ge=0, le=65535, description="embedded broker port (`loopline up`, `loopline broker`; the demo takes a free one when it is busy); 0 = pick a free one")
    broker_storage: str = Field("disk", pattern="^(disk|memory)$", description="where the embedded broker of `loopline up` / `loopline broker` keeps its data: disk (under data_dir/broker: topics, records, committed offsets, tables and the cluster id survive a broker kill and a restart; produce ~0.4x, read ~0.25x of memory) or memory (everything is lost when it stops). The demo, tests and benchmarks start their own broker in memory")
    data_dir: Path = Field(default_factory=default_data_dir, description="state folder (Faust tables, review.sqlite3); default $XDG_DATA_HOME/loopline or ~/.local/share/loopline, whatever the working directory")
    take_max: int = Field(2000, ge=1, description="Kafka records per agent batch (each may hold many predictions; chunk_bytes bounds memory)")
    chunk_bytes: int = Field(4_000_000, ge=1, description="input bytes routed at once (bounds worker memory)")
    take_within: float = Field(0.05, gt=0, description="seconds to wait to fill an agent batch")
    producer_batch_size: int = Field(500, ge=1, description="predictions per PredictionBatch record sent by PredictionProducer")
    producer_linger_ms: int = Field(20, ge=0, description="longest PredictionProducer waits to fill a PredictionBatch before sending it")
    max_clock_skew_seconds: float = Field(300.0, ge=0, description="emitted_at further ahead than this is invalid")
    policy_file: Path | None = Field(None, description="tiered routing policy (TOML, see policies/example.toml); unset = the two confidence thresholds below")
    auto_confidence_threshold: float = Field(0.9, ge=0, le=1, description="without a policy file: confidence >= this is auto-approved")
    escalate_confidence_threshold: float = Field(0.6, ge=0, le=1, description="without a policy file: confidence < this is escalated")
    review_sla_seconds: float = Field(3600.0, gt=0, description="due-by of review and escalation tasks when no policy file is set (with one: each tier's sla_minutes)")
    policy_watch_seconds: float = Field(2.0, ge=0, description="how often the worker re-reads LOOPLINE_POLICY_FILE and applies a changed one (0 = never)")
    stats_flush_seconds: float = Field(5.0, gt=0, description="how often per-partition tier statistics are saved to their changelog-backed table")
    fetch_max_wait_ms: int = Field(50, ge=1, le=5000, description="longest a fetch may wait for data (Faust hard-codes 1500 ms; the embedded broker holds a fetch that long even when data arrives)")
    pending_ttl_seconds: float = Field(7 * 86400, gt=0, description="how long a review task stays joinable with its corrections")
    waiting_ttl_seconds: float = Field(600, gt=0, description="how long a correction waits for its task before it is an orphan")
    feedback_store: str = Field("memory", pattern="^(rocksdb|memory)$", description="where a worker keeps the correction join's state (review tasks waiting for answers, answers waiting for tasks, seen correction ids): memory (about 5 KB per pending review task) or rocksdb (on disk under data_dir, a few MB of memory whatever the traffic; the changelog topics stay the source of truth; each worker process needs its own data_dir; not yet the default: see docs/changelog.md)")
    feedback_max_entries: int | None = Field(None, ge=0, description="cap on the correction join's pending review tasks, waiting event_ids and seen correction ids per worker, each (0: TTLs only); over it the entries closest to expiry go first and their answers become orphans; unset = 1,000,000 with the rocksdb store (about 0.5 KB of disk per pending task), 100,000 in memory")
    feedback_sweep_seconds: float = Field(600, gt=0, description="with the rocksdb join store: how often expired review tasks and seen ids are dropped and the cap applied (a scan of the state on disk, about 3 µs per entry, in slices that let the worker run between them; at most a tenth of LOOPLINE_PENDING_TTL_SECONDS); answers waiting for their task are checked every LOOPLINE_FEEDBACK_EXPIRY_INTERVAL_SECONDS either way")
    feedback_expiry_interval_seconds: float = Field(10, gt=0, description="how often expired join state is dropped and orphans published")
    decision_events: bool = Field(False, description="also publish one RoutingDecision per prediction, keyed by event_id, on the decision-events topic (partition_for(event_id)), for Kafka Connect, ksqlDB/Flink SQL and registry-aware tools; costs one Avro record per prediction")
    session_timeout_seconds: float = Field(6.0, gt=0, description="consumer-group session timeout (short rejoins fast on the embedded broker)")
    group_instance_id: str | None = Field(None, description="static group membership: a stable id per worker process (e.g. a StatefulSet pod name), unique in the group; a worker that stops does not leave the group and one that comes back within LOOPLINE_SESSION_TIMEOUT_SECONDS takes its partitions back without a rebalance (the others never pause); for Kafka 2.3+, not the embedded broker (a restarted static member gets no assignment there); unset = dynamic membership (docs/reliability.md)")
    review_host: str = Field("127.0.0.1", description="review server bind address")
    review_port: int = Field(6070, ge=0, le=65535, description="review server port")
    review_lease_seconds: float = Field(300.0, gt=0, description="how long an opened task stays leased to its reviewer")
    review_task_ttl_seconds: float = Field(7 * 86400, gt=0, description="waiting review tasks older than this are dropped")
    review_max_tasks: int = Field(100_000, ge=1, description="waiting tasks kept by the review server; the least urgent beyond it are dropped")
    review_masked_features: tuple[str, ...] = Field(("country", "account_age_days"), description="feature names masked for reviewers without PII clearance")
    review_session_seconds: float = Field(43200, gt=0, description="login session lifetime")
    # review login hardening (docs/security.md)
    review_session_idle_seconds: float = Field(1800, gt=0, description="a review session unused this long ends")
    review_max_sessions: int = Field(10_000, ge=1, description="live review sessions kept; the least recently used ends beyond it")
    review_login_max_failures: int = Field(10, ge=1, description="failed logins per account within the window before it is locked for a window (429)")
    review_login_max_failures_per_address: int = Field(30, ge=1, description="failed logins per client address within the window before it is locked for a window (429)")
    review_login_window_seconds: float = Field(900, gt=0, description="failed-login counting window")
    review_login_lockout_seconds: float = Field(900, gt=0, description="how long a locked account or address is refused (429 + Retry-After)")
    review_login_table_max: int = Field(10_000, ge=1, description="accounts and addresses tracked by the login throttle (each); the least recently failed are forgotten beyond it")
    review_trust_forwarded_for: bool = Field(False, description="take the client address from the last X-Forwarded-For entry (only behind your own reverse proxy)")
    review_tls_cert_file: Path | None = Field(None, description="PEM certificate (chain) for serving the review server over HTTPS; needs review_tls_key_file")
    review_tls_key_file: Path | None = Field(None, description="PEM private key of review_tls_cert_file")
    review_audit_sla_seconds: float = Field(1800.0, gt=0, description="audit review tasks are due this long after creation (their own due time)")
    review_audit_priority: int = Field(200, description="audit review tasks sort with at least this priority")
    review_escalation_sla_seconds: float = Field(3600.0, gt=0, description="an analyst's escalation is due this long after it was escalated")
    review_escalation_priority: int = Field(250, description="priority of an analyst's escalation (native escalations start at 200)")
    review_priority_weight_seconds: float = Field(60.0, ge=0, description="queue urgency = due time - priority x this")
    review_confirm_overrides_above: float | None = Field(None, gt=0, le=1, description="an analyst's correction of a prediction at or above this confidence also goes to a senior, whose answer decides (a second opinion; unset = off)")
    review_max_seen_labels: int = Field(20, ge=2, le=200, description="labels offered for a model without a declared label set (labels seen so far)")
    snapshot_hmac_key: SecretStr = Field(SecretStr(DEV_KEY), description="key for model snapshot HMACs")
    # who may change what (docs/security.md)
    control_tokens: SecretStr = Field(SecretStr(""), description="bearer tokens for the worker's state-changing endpoints (POST /policy), as name:token,name2:token2; none = those endpoints refuse every request")
    control_token_file: Path | None = Field(None, description="file with one name:token per line, read at start in addition to LOOPLINE_CONTROL_TOKENS")
    control_token: SecretStr | None = Field(None, description="client side: the bearer token `loopline policy apply` sends (or --token-file)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="how every Loopline Kafka client talks to the brokers")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field("SCRAM-SHA-512", description="SASL mechanism (with SASL_PLAINTEXT / SASL_SSL)")
    kafka_sasl_username: str | None = Field(None, description="SASL user name (with SASL_PLAINTEXT / SASL_SSL)")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (with SASL_PLAINTEXT / SASL_SSL)")
    kafka_ssl_ca_file: Path | None = Field(None, description="PEM file of the CA(s) that signed the brokers' certificates; unset = the system's trust store")
    kafka_ssl_cert_file: Path | None = Field(None, description="PEM client certificate for mutual TLS (with SSL / SASL_SSL)")
    kafka_ssl_key_file: Path | None = Field(None, description="PEM private key of kafka_ssl_cert_file")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="password of kafka_ssl_key_file, if it is encrypted")
    kafka_ssl_check_hostname: bool = Field(True, description="verify that the broker certificate names the host connected to (turn off only for tests)")
    # drift detection (the "drift" agent; see README "Drift detection")
    # drift detection (the "drift" agent; see docs/drift.md)
    drift_bucket_ms: int = Field(5000, ge=100, description="event-time bucket; a bucket is evaluated once, when the watermark passes it")
    drift_bucket_events: int = Field(2000, ge=0, description="buckets adapt to traffic: a model version whose reference holds more events than this per drift_bucket_ms gets buckets halved until they hold about this many (at least 250 ms), so alarms come within about this many events of a change as well as within drift_bucket_ms; 0 = fixed buckets")
    drift_reference_events: int = Field(5000, ge=100, description="first N predictions of a model version form its reference")
    drift_reference_outcomes: int = Field(1000, ge=10, description="first N joined corrections form the reference error rate")
    drift_budget_events: int = Field(100_000, ge=1000, description="false-alarm budget: expected events between false alarms of each detector")
    drift_reference_file: Path | None = Field(None, description="pinned reference profile(s) written by `loopline drift baseline`")
    drift_publish_interval_seconds: float = Field(1.0, gt=0, description="how often a worker publishes its drift summaries")
    drift_idle_seconds: float = Field(30.0, gt=0, description="a partition whose event time has not moved for this long stops holding the drift watermark back")
    drift_policy: str = Field("", description='per-model drift policy as JSON, for models without [models.<name>.drift] in the policy file')
    drift_max_models: int = Field(100, ge=1, description="models tracked per worker and per drift agent")
    learn_max_models: int = Field(100, ge=1, description="models the learner keeps a learner for, and route workers hold snapshots of; records of further models are dead-lettered as model_limit")
    drift_agent: bool = Field(True, description="run the drift agent in workers with the drift agent set; false = they only collect")
    # online learning (the "learn" agent; see docs/learning.md)
    learn_pipeline: str = Field("logreg", description="challenger pipeline: logreg | hoeffding | arf")
    learn_positive_label: str = Field("", description="label whose F1 is reported (and the logreg positive class); empty = macro F1")
    learn_metrics_window: int = Field(2000, ge=10, description="examples in each rolling quality window")
    learn_publish_interval_seconds: float = Field(0.5, gt=0, description="publish challenger + override-risk snapshots at most this often")
    learn_publish_every: int = Field(1000, ge=1, description="publish at once after this many newly learned examples")
    learn_state_interval_seconds: float = Field(30.0, gt=0, description="publish the full learner state (resume point) this often")
    learn_dedupe_ttl_seconds: float = Field(7 * 86400.0, gt=0, description="how long a correction_id is remembered")
    learn_dedupe_max: int = Field(200_000, ge=1, description="correction ids remembered at most")
    learn_rate_window_seconds: float = Field(60.0, gt=0, description="window of the per-reviewer rate limit and influence cap")
    learn_reviewer_max_per_window: int = Field(500, ge=1, description="learned examples per reviewer per window")
    learn_reviewer_max_share: float = Field(0.5, gt=0, le=1, description="largest share of a window's learned examples one reviewer may have")
    learn_min_reputation: float = Field(0.8, ge=0, le=1, description="reviewers below this reputation have their labels rejected")
    learn_holdout_share: float = Field(0.5, ge=0, le=1, description="share of gold items kept out of training for the promotion gate")
    learn_gate_margin: float = Field(0.02, ge=0, description="lift the challenger needs over the champion on every tier of the holdout")
    learn_gate_min_examples: int = Field(30, ge=1, description="holdout examples a tier needs before the gate can pass")
    learn_gate_metric: str = Field("f1", description="gate metric: f1 | accuracy | log_loss")
    learn_gate_max_logloss_increase: float = Field(0.1, ge=0, description="the gate also blocks a challenger whose holdout log-loss is this much worse")
    learn_auto_promote: bool = Field(False, description="publish a passing challenger as champion without an operator")
    serving: str = Field("auto", pattern="^(auto|off)$", description="auto: a challenger that beats the producer model on audited events serves auto-tier decisions (shadow, then a share, then all; rolled back when worse; docs/loop.md); off: the producer always serves (the stages are still judged and shown)")
    serving_min_examples: int = Field(200, ge=10, description="audited events the serving controller needs in a stage before it moves the challenger on (or back)")
    serving_share: float = Field(0.25, gt=0, lt=1, description="share of auto-tier events a challenger serves in the 'share' stage (by a hash of event_id)")
    learn_gold_file: Path | None = Field(None, description='JSON lines {"event_id", "label"}: gold items with known labels')
    log_level: str = Field("warn", description="log level of worker processes (debug, info, warn, error)")
    review_db_url: str | None = Field(None, description="review task store: postgresql://... lets several review servers share one queue (leases stay exclusive); sqlite:///path or unset = the SQLite file under data_dir")
    # audit sink (`loopline audit-sink`; see docs/audit.md)
    audit_db_url: str | None = Field(None, description="audit database: sqlite:///path or postgresql://user@host:port/db; unset = sqlite:///<data_dir>/audit.sqlite3")
    audit_group: str = Field("loopline-audit", description="consumer group of the audit sink (a new group replays the topics; rows stay unique)")
    audit_port: int = Field(6071, ge=0, le=65535, description="audit sink HTTP port: /metrics /healthz /readyz")
    audit_batch_max: int = Field(5000, ge=1, description="Kafka records the audit sink writes in one database transaction")
    audit_batch_wait_seconds: float = Field(0.2, gt=0, description="longest the audit sink waits to fill a batch")
    audit_retention_days: float = Field(400.0, gt=0, description="audit rows whose event time is older than this many days are deleted")
    audit_retention_interval_seconds: float = Field(3600.0, gt=0, description="how often the audit sink deletes rows past retention")
    publish_stall_seconds: float = Field(60.0, gt=0, description="a batch whose outputs fail to publish for this long turns /readyz red (retries go on)")
    publish_request_timeout_seconds: float = Field(30.0, gt=0, description="how long the producer waits for the broker to acknowledge one request before it counts as failed (then retried)")
    dead_letter_max_bytes: int = Field(65536, ge=0, description="bytes of the original value kept in the dead letter of an output that cannot be published")
    allow_dev_key: bool = Field(False, description="accept a public snapshot HMAC key with a broker on another host (production mode); for test setups only")
    review_min_password_length: int = Field(12, ge=1, description="shortest password `loopline reviewers add` accepts")
    log_format: Literal["text", "json"] = Field("text", description="log line format of worker processes: text (plain lines, no terminal codes) or json (one object per line: ts, level, logger, message)")
    activity_log_seconds: float = Field(60.0, ge=0, description="a running worker logs one activity line (predictions routed, dead letters, lag) this often, at the default log level; 0 = never")
    broker_timeout_seconds: float = Field(10.0, gt=0, description="CLI commands give up with one sentence (exit 2) when the Kafka broker does not answer within this time")
    slice_series_max: int = Field(200, ge=0, description="most loopline_slice_error_rate series a worker exports: the slices with the highest verified error rate across all models")
    expected_workers: int = Field(1, ge=0, description="route workers this deployment runs (set the same value on every worker); exported as loopline_expected_workers for the alert LooplineWorkersBelowExpected and the dashboard's workers-up panel")
    drift_budget_per: str = Field("detector", pattern="^(detector|model)$", description="drift false-alarm budget per detector, or per model version split over its detectors")
    autonomy_error_budget: float = Field(0.0, ge=0, lt=1, description="auto-tier error budget of every model: above it (sequential test on audit outcomes) autonomy drops; 0 = off")

    @property
    def agent_set(self) -> set[str]:
        wanted = {a.strip() for a in self.agents.split(",") if a.strip()}
        known = ("route", "feedback", "drift", "learn")
        unknown = wanted - set(known)
        choices = ", ".join(known)
        if unknown or not wanted:
            raise ValueError(f"LOOPLINE_AGENTS: unknown agent {sorted(unknown)[0]!r} (choose from {choices})"
                             if unknown else f"LOOPLINE_AGENTS names no agent (choose from {choices})")
        return wanted

    @property
    def join_max_entries(self) -> int:
        """``feedback_max_entries``, or the default of the join store in use."""
        if self.feedback_max_entries is not None:
            return self.feedback_max_entries
        return 1_000_000 if self.feedback_store == "rocksdb" else 100_000

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_namespace)

    @property
    def audit_url(self) -> str:
        """The audit database URL: ``audit_db_url``, else an SQLite file under ``data_dir``."""
        return self.audit_db_url or f"sqlite:///{self.data_dir / 'audit.sqlite3'}"
