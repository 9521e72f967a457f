"""Dead-letter headers, and the producer's retry of what the broker did not acknowledge."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

from stream.dlq.producer import DeadLetterProducer, DeliveryCallback, Headers, dead_letter_headers
from stream.metrics import Metrics
from stream.models import SourceRecord

FAILED_AT = datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
RECORD = SourceRecord("clicks", 2, 41, b"k", b"v", None, [("trace", b"t-1")])


def test_headers_follow_the_original_ones_in_contract_order() -> None:
    headers = dead_letter_headers(RECORD, "rejected_by_pinterest", "Invalid id.", 422, 3, FAILED_AT)
    assert headers == [
        ("trace", b"t-1"),
        ("capi.error.reason", b"rejected_by_pinterest"),
        ("capi.error.message", b"Invalid id."),
        ("capi.source.topic", b"clicks"),
        ("capi.source.partition", b"2"),
        ("capi.source.offset", b"41"),
        ("capi.http.status", b"422"),
        ("capi.attempts", b"3"),
        ("capi.failed_at", b"2025-01-02T03:04:05.678+00:00"),
    ]


def test_headers_omit_the_http_status_when_no_answer_caused_it() -> None:
    record = SourceRecord("clicks", 0, 7, None, b"{", None)
    headers = dead_letter_headers(record, "decode_error", "not JSON", None, 0, FAILED_AT)
    assert [name for name, _ in headers] == [
        "capi.error.reason",
        "capi.error.message",
        "capi.source.topic",
        "capi.source.partition",
        "capi.source.offset",
        "capi.attempts",
        "capi.failed_at",
    ]


def test_dead_letters_keep_the_original_headers_but_replace_old_error_headers() -> None:
    record = SourceRecord(
        "clicks",
        2,
        41,
        b"k",
        b"v",
        None,
        [("trace", b"t-1"), ("capi.replayed", b"1"), ("capi.error.reason", b"too_old")],
    )
    headers = dead_letter_headers(
        record, "decode_error", "not JSON", None, 0, datetime(2025, 1, 2, tzinfo=UTC)
    )
    assert headers[:2] == [("trace", b"t-1"), ("capi.replayed", b"1")]
    names = [name for name, _ in headers]
    assert names.count("capi.error.reason") == 1
    assert dict(headers)["capi.error.reason"] == b"decode_error"
    assert dict(headers)["capi.source.offset"] == b"41"


@dataclass
class Produced:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers
    on_delivery: DeliveryCallback


class FakeProducer:
    """Records every produce; the test plays the broker by calling the delivery callbacks."""

    def __init__(self, refuse_locally: int = 0) -> None:
        self.produced: list[Produced] = []
        self.refuse_locally = refuse_locally
        self.flushed = False

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        on_delivery: DeliveryCallback,
    ) -> None:
        if self.refuse_locally:
            self.refuse_locally -= 1
            raise BufferError("Local: Queue full")
        self.produced.append(Produced(topic, value, key, headers, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushed = True
        return 0


def unacked_retries(registry: CollectorRegistry) -> float:
    sample = registry.get_sample_value(
        "capi_stream_retries_total", {"reason": "dead_letter_unacked"}
    )
    assert sample is not None
    return sample


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def refuse_the_last(fake: FakeProducer) -> None:
    """The broker refuses the latest produce; waits until the producer has produced it again."""
    before = len(fake.produced)
    fake.produced[-1].on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    await until(lambda: len(fake.produced) == before + 1)


async def started(fake: FakeProducer, registry: CollectorRegistry) -> DeadLetterProducer:
    configs: list[dict[str, str]] = []

    def connect(config: dict[str, str]) -> Any:
        configs.append(config)
        return fake

    producer = DeadLetterProducer(
        {"bootstrap.servers": "b:9092"},
        "dlq",
        Metrics(registry),
        clock=lambda: FAILED_AT,
        connect=connect,
        retry_delay_s=0,
    )
    await producer.start()
    assert configs == [
        {
            "bootstrap.servers": "b:9092",
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "20",
        }
    ]
    return producer


async def test_a_refused_dead_letter_is_produced_again_and_counted_until_acknowledged() -> None:
    registry = CollectorRegistry()
    fake = FakeProducer()
    producer = await started(fake, registry)
    acked: list[int] = []
    producer.send(RECORD, "decode_error", "not JSON", lambda: acked.append(1), attempts=1)
    assert len(fake.produced) == 1
    assert unacked_retries(registry) == 0

    for refusals in (1, 2):
        await refuse_the_last(fake)
        assert unacked_retries(registry) == refusals
        assert not producer.healthy
        assert producer.unacked == 1

    first, again = fake.produced[0], fake.produced[-1]
    assert (again.topic, again.value, again.key) == ("dlq", b"v", b"k")
    assert again.headers == first.headers
    assert acked == []

    again.on_delivery(None, None)
    assert acked == [1]
    assert producer.healthy
    assert producer.unacked == 0
    assert unacked_retries(registry) == 2
    await producer.close()
    assert fake.flushed


async def test_a_full_local_queue_is_waited_out_without_counting_a_retry() -> None:
    registry = CollectorRegistry()
    fake = FakeProducer(refuse_locally=2)
    producer = await started(fake, registry)
    acked: list[int] = []
    producer.send(RECORD, "too_old", "older than 7 days", lambda: acked.append(1))
    await until(lambda: len(fake.produced) == 1)
    fake.produced[0].on_delivery(None, None)
    assert acked == [1]
    assert producer.unacked == 0
    assert unacked_retries(registry) == 0
    await producer.close()
