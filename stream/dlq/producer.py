"""Writes dead letters (original bytes + error headers) and reports each one once acknowledged."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, not in its stubs
    AdminClient,
    ConfigResource,
)

from stream.credentials import RotatedPassword
from stream.dlq.contract import (
    ATTEMPTS,
    ERROR_HEADERS,
    FAILED_AT,
    HTTP_STATUS,
    MESSAGE,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    TRUNCATED,
    TRUNCATION_HEADERS,
    VALUE_BYTES,
    VALUE_SHA256,
    VALUE_TRUNCATED,
)
from stream.logs import RateLimitedLogger
from stream.metrics import Metrics
from stream.models import SourceRecord

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.01
RETRY_DELAY_S = 1.0
# Used when the topic's max.message.bytes cannot be read: below a broker's default (1,048,588),
# so a dead letter sized for it fits a topic left at the defaults.
DEFAULT_TOPIC_LIMIT: Final = 1_000_000
LIMIT_READ_TIMEOUT_S: Final = 10.0
# Record-batch framing around one record (72 bytes measured for a bare record) and varints.
SIZE_MARGIN: Final = 512
# Values are never cut shorter than this: a topic that takes less is misconfigured (it cannot
# hold the headers of a dead letter), and its dead letters wait, retried, until it is fixed.
MIN_LIMIT: Final = 4096
# Two varint lengths per header, at most 5 bytes each.
HEADER_OVERHEAD: Final = 10
# librdkafka refuses at produce() a record whose uncompressed size is over its message.max.bytes,
# while the broker checks the compressed batch against the topic's limit. zstd packs 8-12 times
# more JSON than fits uncompressed (measured on clickstream and e-mail arrays), so a dead letter
# up to 16 times the limit is tried as is and the broker decides; anything larger, or refused, is
# cut to fit uncompressed.
UNCOMPRESSED_FACTOR: Final = 16
LIBRDKAFKA_MAX_MESSAGE_BYTES: Final = 1_000_000_000
LIBRDKAFKA_BATCH_SIZE: Final = 1_000_000

Headers = list[tuple[str, str | bytes | None]]
DeliveryCallback = Callable[[KafkaError | None, Any], None]
ReadLimit = Callable[[dict[str, str], str, float], int]


class KafkaProducer(Protocol):
    """The part of `confluent_kafka.Producer` the dead-letter producer uses."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        on_delivery: DeliveryCallback,
    ) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...

    def set_sasl_credentials(self, username: str, password: str) -> None: ...


def dead_letter_headers(
    record: SourceRecord,
    reason: str,
    message: str,
    status: int | None,
    attempts: int,
    failed_at: datetime,
) -> Headers:
    """The original message's headers, then the DESIGN §4 ones; `message` must already be free
    of PII."""
    headers: Headers = [
        (name, value)
        for name, value in record.headers or ()
        if name not in ERROR_HEADERS and name not in TRUNCATION_HEADERS
    ]
    headers += [
        (REASON, reason.encode()),
        (MESSAGE, message.encode()),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
    ]
    if status is not None:
        headers.append((HTTP_STATUS, str(status).encode()))
    headers.append((ATTEMPTS, str(attempts).encode()))
    headers.append((FAILED_AT, failed_at.isoformat(timespec="milliseconds").encode()))
    return headers


def topic_max_message_bytes(config: dict[str, str], topic: str, timeout_s: float) -> int:
    """The topic's `max.message.bytes` (its own setting or the broker's default); blocks up to
    about `timeout_s`, raises when the topic or its configuration cannot be read."""
    settings: dict[str, str | int | float | bool] = {**config}
    admin = AdminClient(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    (future,) = admin.describe_configs([resource], request_timeout=timeout_s).values()
    entries = future.result(timeout=timeout_s)
    return int(entries["max.message.bytes"].value)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as it is produced; `fitted_to` is the size its value was cut to fit,
    None while it is the source message as it was."""

    record: SourceRecord
    key: bytes | None
    value: bytes | None
    headers: Headers
    on_acked: Callable[[], None]
    fitted_to: int | None = None


def serialized_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Key, value and headers as librdkafka counts them against `message.max.bytes`, with the
    headers' varints."""
    size = len(key or b"") + len(value or b"")
    for name, header in headers:
        data = header.encode() if isinstance(header, str) else header or b""
        size += len(name.encode()) + len(data) + HEADER_OVERHEAD
    return size


def fit(letter: DeadLetter, limit: int) -> DeadLetter:
    """The dead letter with its value cut so that key, value and headers take at most `limit`
    bytes uncompressed, marked with the truncation headers (the original value's size and
    SHA-256). Should the key and headers alone be over the limit, the original message's own
    headers and then its key are dropped too; the source coordinates are always kept."""
    original = letter.record.value
    whole = original or b""
    headers: Headers = [h for h in letter.headers if h[0] not in TRUNCATION_HEADERS]
    headers += [
        (VALUE_TRUNCATED, TRUNCATED),
        (VALUE_BYTES, str(len(whole)).encode()),
        (VALUE_SHA256, hashlib.sha256(whole).hexdigest().encode()),
    ]
    key = letter.record.key
    room = limit - serialized_size(key, None, headers)
    if room < 0:
        headers = [h for h in headers if h[0] in ERROR_HEADERS or h[0] in TRUNCATION_HEADERS]
        key = None
        room = max(0, limit - serialized_size(None, None, headers))
    value = None if original is None else whole[:room]
    return replace(letter, key=key, value=value, headers=headers, fitted_to=limit)


def error_name(exc: Exception) -> str:
    """A bounded name for a produce failure: librdkafka's error name, else the exception type."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return error.name() if isinstance(error, KafkaError) else type(exc).__name__


class DeadLetterProducer:
    """Idempotent, acks=all, zstd-compressed producer for the dead-letter topic.

    `send` never gives up and never raises once started: a dead letter the broker or librdkafka
    refuses is produced again after a pause (each time counted in
    `retries_total{reason="dead_letter_unacked"}`), except one too large for the topic, which is
    cut to fit at once (counted in `dead_letters_truncated_total`), though never below
    `MIN_LIMIT` bytes: a topic that cannot take that is broken, not full. Its `on_acked`
    callback runs once, only after an acknowledgement, so its offset is never committed past an
    unwritten dead letter. `healthy` is False while acknowledgements fail.

    `start` reads the topic's `max.message.bytes`; `limit` is what a dead letter is cut to.
    """

    def __init__(
        self,
        config: dict[str, str],
        topic: str,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        connect: Callable[[dict[str, Any]], KafkaProducer] = Producer,
        retry_delay_s: float = RETRY_DELAY_S,
        read_limit: ReadLimit = topic_max_message_bytes,
        reread_password: Callable[[], str | None] | None = None,
    ) -> None:
        """`reread_password` reads kafka.sasl_password_file again when Kafka refuses the
        credentials (a rotated Secret)."""
        self._client_config = config
        self._topic = topic
        self._metrics = metrics
        self._clock = clock
        self._connect = connect
        self._retry_delay_s = retry_delay_s
        self._read_limit = read_limit
        self._producer: KafkaProducer | None = None
        self._poller: asyncio.Task[None] | None = None
        self.limit = DEFAULT_TOPIC_LIMIT - SIZE_MARGIN
        self.healthy = True
        self.unacked = 0
        self._storms = RateLimitedLogger(log)
        self._rotated = RotatedPassword(config, reread_password)

    async def start(self) -> None:
        topic_limit = await self._topic_limit()
        self.limit = max(MIN_LIMIT, topic_limit - SIZE_MARGIN)
        if topic_limit - SIZE_MARGIN < MIN_LIMIT:
            log.warning(
                "dead-letter topic %s takes records of at most %d bytes: dead letters are cut "
                "to no less than %d and retried until its max.message.bytes is raised",
                self._topic,
                topic_limit,
                MIN_LIMIT,
            )
        uncompressed = min(
            LIBRDKAFKA_MAX_MESSAGE_BYTES, max(topic_limit, self.limit) * UNCOMPRESSED_FACTOR
        )
        self._producer = self._connect(
            {
                **self._client_config,
                "enable.idempotence": "true",
                "acks": "all",
                "linger.ms": "20",
                "compression.type": "zstd",
                "message.max.bytes": str(uncompressed),
                # Batches are bounded uncompressed, so a batch of dead letters that fit one by
                # one fits as a whole, compressed or not.
                "batch.size": str(min(LIBRDKAFKA_BATCH_SIZE, self.limit)),
                "error_cb": self._on_error,
            }
        )
        self._poller = asyncio.create_task(self._poll())

    async def _topic_limit(self) -> int:
        try:
            limit = await asyncio.to_thread(
                self._read_limit, self._client_config, self._topic, LIMIT_READ_TIMEOUT_S
            )
        except Exception as exc:  # noqa: BLE001 - any failure means the safe default
            log.warning(
                "cannot read max.message.bytes of dead-letter topic %s (%s); dead letters over "
                "%d bytes will be cut to fit",
                self._topic,
                error_name(exc),
                DEFAULT_TOPIC_LIMIT,
            )
            return DEFAULT_TOPIC_LIMIT
        log.info("dead-letter topic %s takes records up to %d bytes", self._topic, limit)
        return limit

    def send(
        self,
        record: SourceRecord,
        reason: str,
        message: str,
        on_acked: Callable[[], None],
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        if self._producer is None:
            raise RuntimeError("DeadLetterProducer.start() was not awaited")
        headers = dead_letter_headers(record, reason, message, status, attempts, self._clock())
        self.unacked += 1
        self._produce(DeadLetter(record, record.key, record.value, headers, on_acked))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self._producer is not None:
            self._producer.flush(0)
            self._producer = None

    def _produce(self, letter: DeadLetter) -> None:
        # Never raises: it runs in the consume and dispatch paths, where an exception would stop
        # them, and in timers, where it would silently drop the dead letter from the retries.
        producer = self._producer
        if producer is None:
            # Closed while a retry was pending: the offset stays uncommitted and the message is
            # consumed again after the restart.
            return
        try:
            producer.produce(
                self._topic,
                value=letter.value,
                key=letter.key,
                headers=letter.headers,
                on_delivery=partial(self._delivered, letter),
            )
        except BufferError:
            # The local queue is full: let the poller drain it, then try again. Not a retry of
            # the dead letter (nothing refused it), so not counted as one.
            self._later(POLL_INTERVAL_S, letter)
        except KafkaException as exc:
            self._refused(letter, error_name(exc))
        except Exception as exc:  # noqa: BLE001 - whatever it is, the dead letter is retried
            self._refused(letter, error_name(exc))

    def _delivered(self, letter: DeadLetter, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.healthy = True
            self.unacked -= 1
            letter.on_acked()
            return
        self._refused(letter, error.name())

    def _refused(self, letter: DeadLetter, reason: str) -> None:
        if reason == "MSG_SIZE_TOO_LARGE":
            fitted = self._fitted(letter)
            if fitted is not None:
                self._produce(fitted)
                return
        self.healthy = False
        self._metrics.retry_scheduled("dead_letter_unacked")
        record = letter.record
        self._storms.warning(
            f"unacked:{reason}",
            "dead letter for %s[%d]@%d not acknowledged (%s); producing it again",
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
        self._later(self._retry_delay_s, letter)

    def _fitted(self, letter: DeadLetter) -> DeadLetter | None:
        """The dead letter cut to the limit, or to half its last size when the topic refused it
        cut (its limit was lowered since `start`); None when cutting cannot help: it already
        fits the limit, or was cut to `MIN_LIMIT`."""
        if letter.fitted_to is None:
            limit = self.limit
            if serialized_size(letter.key, letter.value, letter.headers) <= limit:
                return None
        else:
            limit = max(MIN_LIMIT, letter.fitted_to // 2)
            if limit == letter.fitted_to:
                return None
        fitted = fit(letter, limit)
        if letter.fitted_to is None:
            self._metrics.dead_letter_truncated()
        record = letter.record
        self._storms.warning(
            "truncated",
            "dead letter for %s[%d]@%d too large for %s: value of %d bytes cut to %d "
            "(capi.value.truncated)",
            record.topic,
            record.partition,
            record.offset,
            self._topic,
            len(record.value or b""),
            len(fitted.value or b""),
        )
        return fitted

    def _on_error(self, error: KafkaError) -> None:
        self._rotated.on_error(error, "dead-letter producer", self._producer)

    def _later(self, delay_s: float, letter: DeadLetter) -> None:
        asyncio.get_running_loop().call_later(delay_s, self._produce, letter)

    async def _poll(self) -> None:
        # Delivery callbacks run inside poll(); polling on the event loop keeps them there too.
        producer = self._producer
        while producer is not None:
            try:
                producer.poll(0)
            except Exception as exc:  # noqa: BLE001 - the poller must outlive a failed callback
                # confluent_kafka re-raises a callback's exception from poll(); were the poller
                # to end, no dead letter would ever be acknowledged again.
                self._storms.error(
                    "poll", "dead-letter delivery callback failed: %s", error_name(exc)
                )
            await asyncio.sleep(POLL_INTERVAL_S)
