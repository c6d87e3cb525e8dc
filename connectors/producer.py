"""``PredictionProducer``: the client prediction services use to publish predictions.

* Validates each event against the Avro schema and Loopline's semantic rules
  *before* sending: an invalid event raises ``ValueError`` naming the field and
  nothing is sent.
* Groups events by target partition — chosen from each ``event_id`` with Kafka's
  default murmur2 partitioner, the same one single events and corrections use —
  and by signature (model, version, feature names), and sends one columnar
  ``PredictionBatch`` record per full batch (``batch_size``) or per ``linger_ms``. A batch therefore lands exactly where its events would have
  landed one by one, which keeps predictions co-partitioned with corrections.
  ``batch_size=1`` sends plain single ``PredictionEvent`` records (what any
  foreign producer sends; the worker accepts both).
* Idempotent Kafka producer (``enable.idempotence``), delivery reports counted
  and surfaced through ``on_delivery``; ``flush()`` on close; a context manager.

Example::

    with PredictionProducer(ClientConfig("127.0.0.1:9092")) as producer:
        producer.send({"event_id": "e1", "model_name": "fraud", ...})
"""
from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import validate

from loopline.connectors.client_config import ClientConfig, client_config
from loopline.processors.errors import ValidationError
from loopline.processors.routing.validation import validate_prediction
from loopline.processors.wire.catalogue import SchemaCatalogue
from loopline.processors.wire.frame import batch_from_events, signature
from loopline.processors.wire.partitioning import partition_for
from loopline.processors.wire.serde import PREDICTION, PREDICTION_BATCH, AvroSerde
from loopline.streams.confluent import build_serde
from loopline.streams.settings import Settings

DEFAULT_BATCH_SIZE = 500
DEFAULT_LINGER_MS = 20

DeliveryCallback = Callable[[Exception | None, int, int], None]  # (error, partition, n_events)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_millis(value, field: str = "emitted_at") -> int:
    """Epoch milliseconds of an aware datetime, exactly (integer arithmetic; sub-millisecond part floored).

    Integers pass through. A naive datetime is refused with ``ValueError``
    naming ``field``: its time zone would be a guess (the host's, or UTC), and
    either guess is hours wrong somewhere.
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{field} is a naive datetime ({value.isoformat()}); give epoch milliseconds or an "
                             f"aware datetime, e.g. datetime.now(timezone.utc)")
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return value


def normalise_prediction(event: dict) -> dict:
    """Fill optional fields with their defaults and turn datetimes into epoch millis."""
    out = dict(event)
    out["emitted_at"] = to_millis(out.get("emitted_at"))
    out.setdefault("features_numeric", {})
    out.setdefault("features_categorical", {})
    for key in ("class_probabilities", "risk", "context", "trace_id"):
        out.setdefault(key, None)
    return out


class PredictionValidator:
    """Schema + semantic check of one prediction; raises ``ValueError`` naming the field."""

    def __init__(self, registry: SchemaCatalogue, max_skew_ms: int) -> None:
        self._schema = registry.current(PREDICTION).parsed
        self._fields = {f["name"] for f in registry.raw(PREDICTION)["fields"]}
        self.max_skew_ms = max_skew_ms

    def __call__(self, event: dict, now_ms: int | None = None) -> dict:
        if not isinstance(event, dict):
            raise ValueError(f"a prediction must be a JSON object, got {type(event).__name__}")
        unknown = sorted(set(event) - self._fields)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} (the schema has: {', '.join(sorted(self._fields))})")
        record = normalise_prediction(event)
        try:
            validate(record, self._schema, raise_errors=True)
        except AvroValidationError as exc:
            raise ValueError(f"does not match the PredictionEvent schema: {_first_avro_error(exc)}") from None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        try:
            validate_prediction(record, now_ms, self.max_skew_ms)
        except ValidationError as exc:
            raise ValueError(f"{exc.field}: {exc}") from None
        return record


def _first_avro_error(exc: AvroValidationError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc)]
    text = str(errors[0])
    # fastavro says e.g. "io.loopline.PredictionEvent.confidence is <x> of type <class 'str'> expected double":
    # drop the value (it may be personal data), keep field and expected type.
    if " is " in text and " of type " in text:
        field, rest = text.split(" is ", 1)
        field = field.replace("io.loopline.PredictionEvent.", "")
        typ = rest.split(" of type ", 1)[1]
        return f"field {field!r} has the wrong type ({typ})"
    return text


class PredictionProducer:
    """Batching, validating, idempotent producer of predictions (see module doc)."""

    def __init__(self, config: ClientConfig | Settings, *, batch_size: int | None = None, linger_ms: int | None = None,
                 serde: AvroSerde | None = None, on_delivery: DeliveryCallback | None = None,
                 producer_config: dict | None = None, validate_events: bool = True) -> None:
        from confluent_kafka import Producer

        if isinstance(config, Settings):  # the project's own callers: the settings' producer knobs apply
            batch_size = batch_size or config.producer_batch_size
            linger_ms = config.producer_linger_ms if linger_ms is None else linger_ms
        cfg = self.config = client_config(config)
        self.topic = cfg.topics.predictions
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        linger_ms = DEFAULT_LINGER_MS if linger_ms is None else linger_ms
        self.linger_s = linger_ms / 1000.0
        registry = serde.registry if serde else SchemaCatalogue.load()
        self.serde = serde or build_serde(cfg, registry)
        self._validate = PredictionValidator(registry, int(cfg.max_clock_skew_seconds * 1000))
        self.validate_events = validate_events
        self.on_delivery = on_delivery
        config = cfg.kafka_config(**{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "partitioner": "murmur2_random",
            "compression.type": "none",
            "queue.buffering.max.messages": 1_000_000,
        })
        config.update(producer_config or {})
        self._producer = Producer(config)
        md = self._producer.list_topics(self.topic, timeout=15)
        tmeta = md.topics.get(self.topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise ValueError(f"topic {self.topic} does not exist on {cfg.bootstrap_servers}: "
                             f"create it first (`loopline topics create`)")
        self.partitions = len(tmeta.partitions)
        self._buffers: dict[tuple, list[dict]] = {}
        self._first_at: dict[tuple, float] = {}
        self._lock = threading.Lock()
        self.sent_events = 0
        self.delivered_events = 0
        self.failed_events = 0
        self.errors: deque[str] = deque(maxlen=100)
        self._closed = False
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._linger_loop, name="loopline-producer-linger", daemon=True)
        self._timer.start()

    # ------------------------------------------------------------------ API
    def send(self, event: dict) -> None:
        """Validate and enqueue one prediction. Raises ``ValueError`` if invalid (nothing sent)."""
        if self._closed:
            raise RuntimeError("producer is closed")
        record = self._validate(event) if self.validate_events else normalise_prediction(event)
        key = record["event_id"].encode()
        if self.batch_size == 1:
            self._produce(partition_for(key, self.partitions), key, self.serde.encode(PREDICTION, record), 1)
            return
        p = partition_for(key, self.partitions)
        slot = (p, signature(record))
        full = None
        with self._lock:
            buf = self._buffers.get(slot)
            if buf is None:
                buf = self._buffers[slot] = []
                self._first_at[slot] = time.monotonic()
            buf.append(record)
            if len(buf) >= self.batch_size:
                full = self._buffers.pop(slot)
                self._first_at.pop(slot, None)
        if full:
            self._send_batch(p, full)
        self._producer.poll(0)

    def send_many(self, events) -> None:
        for e in events:
            self.send(e)

    def flush(self, timeout: float = 30.0) -> int:
        """Send every buffered batch and wait for delivery. Returns events still undelivered."""
        with self._lock:
            pending = list(self._buffers.items())
            self._buffers.clear()
            self._first_at.clear()
        for (p, _), events in pending:
            self._send_batch(p, events)
        remaining = self._producer.flush(timeout)
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._stop.set()
        self._timer.join(timeout=2)
        left = self.flush(timeout)
        self._closed = True
        if left:
            self.errors.append(f"{left} records still undelivered at close")

    def __enter__(self) -> PredictionProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------- internals
    def _send_batch(self, partition: int, events: list[dict]) -> None:
        batch_id = uuid.uuid4().hex
        value = self.serde.encode(PREDICTION_BATCH, batch_from_events(events, batch_id))
        self._produce(partition, batch_id.encode(), value, len(events))

    def _produce(self, partition: int, key: bytes, value: bytes, n: int) -> None:
        def report(err, msg, n=n, partition=partition):
            if err is None:
                self.delivered_events += n
                exc = None
            else:
                self.failed_events += n
                exc = RuntimeError(f"delivery to {self.topic}[{partition}] failed: {err}")
                self.errors.append(str(exc))
            if self.on_delivery is not None:
                self.on_delivery(exc, partition, n)

        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, partition=partition, on_delivery=report)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent_events += n

    def _linger_loop(self) -> None:
        interval = max(self.linger_s, 0.005)
        while not self._stop.wait(interval):
            now = time.monotonic()
            due = []
            with self._lock:
                for slot, first in list(self._first_at.items()):
                    if now - first >= self.linger_s:
                        due.append((slot[0], self._buffers.pop(slot)))
                        del self._first_at[slot]
            for p, events in due:
                self._send_batch(p, events)
            self._producer.poll(0)

