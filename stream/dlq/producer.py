"""Writes dead letters (original bytes + error headers) and reports each one once acknowledged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

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
)
from stream.logs import RateLimitedLogger
from stream.metrics import Metrics
from stream.models import SourceRecord

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.01
RETRY_DELAY_S = 1.0

Headers = list[tuple[str, str | bytes | None]]
DeliveryCallback = Callable[[KafkaError | None, Any], None]


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
        (name, value) for name, value in record.headers or () if name not in ERROR_HEADERS
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


class DeadLetterProducer:
    """Idempotent, acks=all producer for the dead-letter topic.

    `send` never gives up: a record the broker refuses is produced again after a pause (each
    time counted in `retries_total{reason="dead_letter_unacked"}`), and its `on_acked` callback
    runs only after an acknowledgement, so its offset is never committed past an unwritten dead
    letter. `healthy` is False while acknowledgements fail.
    """

    def __init__(
        self,
        config: dict[str, str],
        topic: str,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        connect: Callable[[dict[str, str]], KafkaProducer] = Producer,
        retry_delay_s: float = RETRY_DELAY_S,
    ) -> None:
        self._config = {
            **config,
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "20",
        }
        self._topic = topic
        self._metrics = metrics
        self._clock = clock
        self._connect = connect
        self._retry_delay_s = retry_delay_s
        self._producer: KafkaProducer | None = None
        self._poller: asyncio.Task[None] | None = None
        self.healthy = True
        self.unacked = 0
        self._storms = RateLimitedLogger(log)

    async def start(self) -> None:
        self._producer = self._connect(self._config)
        self._poller = asyncio.create_task(self._poll())

    def send(
        self,
        record: SourceRecord,
        reason: str,
        message: str,
        on_acked: Callable[[], None],
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        headers = dead_letter_headers(record, reason, message, status, attempts, self._clock())
        self.unacked += 1
        self._produce(record, headers, on_acked)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self._producer is not None:
            self._producer.flush(0)
            self._producer = None

    def _produce(
        self, record: SourceRecord, headers: Headers, on_acked: Callable[[], None]
    ) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("DeadLetterProducer.start() was not awaited")

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.healthy = True
                self.unacked -= 1
                on_acked()
                return
            self.healthy = False
            self._metrics.retry_scheduled("dead_letter_unacked")
            self._storms.warning(
                f"unacked:{error.name()}",
                "dead letter for %s[%d]@%d not acknowledged (%s); producing it again",
                record.topic,
                record.partition,
                record.offset,
                error.name(),
            )
            asyncio.get_running_loop().call_later(
                self._retry_delay_s, self._produce, record, headers, on_acked
            )

        try:
            producer.produce(
                self._topic,
                value=record.value,
                key=record.key,
                headers=headers,
                on_delivery=delivered,
            )
        except BufferError:
            # The local queue is full: let the poller drain it, then try again. Not a retry of
            # the dead letter (the broker has not refused it), so not counted as one.
            asyncio.get_running_loop().call_later(
                POLL_INTERVAL_S, self._produce, record, headers, on_acked
            )

    async def _poll(self) -> None:
        # Delivery callbacks run inside poll(); polling on the event loop keeps them there too.
        producer = self._producer
        while producer is not None:
            producer.poll(0)
            await asyncio.sleep(POLL_INTERVAL_S)
