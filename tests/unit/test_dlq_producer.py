"""Dead-letter headers, and the producer's retry of what the broker did not acknowledge."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from stream.dlq.producer import (
    DeadLetter,
    DeadLetterProducer,
    DeliveryCallback,
    Headers,
    dead_letter_headers,
    fit,
    serialized_size,
)
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

    def __init__(
        self,
        refuse_locally: int = 0,
        max_bytes: int | None = None,
        failures: list[Exception] | None = None,
    ) -> None:
        self.produced: list[Produced] = []
        self.refuse_locally = refuse_locally
        # Like librdkafka's message.max.bytes: larger records are refused at produce().
        self.max_bytes = max_bytes
        # Raised by the next produce calls, one each.
        self.failures = failures or []
        self.attempts = 0
        self.polls = 0
        self.poll_failures: list[Exception] = []
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
        self.attempts += 1
        if self.refuse_locally:
            self.refuse_locally -= 1
            raise BufferError("Local: Queue full")
        if self.failures:
            raise self.failures.pop(0)
        if self.max_bytes is not None and serialized_size(key, value, headers) > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.produced.append(Produced(topic, value, key, headers, on_delivery))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        if self.poll_failures:
            raise self.poll_failures.pop(0)
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


async def refuse_the_last(fake: FakeProducer, code: int = KafkaError._MSG_TIMED_OUT) -> None:
    """The broker refuses the latest produce; waits until the producer has produced it again."""
    before = len(fake.produced)
    fake.produced[-1].on_delivery(KafkaError(code), None)
    await until(lambda: len(fake.produced) == before + 1)


async def started(
    fake: FakeProducer, registry: CollectorRegistry, topic_limit: int = 1_048_588
) -> DeadLetterProducer:
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
        read_limit=lambda _config, _topic, _timeout: topic_limit,
    )
    await producer.start()
    limit = max(4096, topic_limit - 512)
    assert producer.limit == limit
    # Kafka's refusals reach the producer (a rotated password file is taken up there).
    assert callable(configs[0].pop("error_cb"))
    assert configs == [
        {
            "bootstrap.servers": "b:9092",
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "20",
            "compression.type": "zstd",
            "message.max.bytes": str(16 * max(topic_limit, limit)),
            "batch.size": str(min(1_000_000, limit)),
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


def truncated_count(registry: CollectorRegistry) -> float:
    sample = registry.get_sample_value("capi_stream_dead_letters_truncated_total")
    assert sample is not None
    return sample


def assert_cut_from(produced: Produced, original: bytes, limit: int) -> None:
    """The dead letter fits `limit` and says what its value was cut from."""
    headers = dict(produced.headers)
    assert headers["capi.value.truncated"] == b"true"
    assert headers["capi.value.bytes"] == str(len(original)).encode()
    assert headers["capi.value.sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert produced.value is not None
    assert original.startswith(produced.value)
    assert len(produced.value) < len(original)
    assert serialized_size(produced.key, produced.value, produced.headers) <= limit


async def test_a_dead_letter_librdkafka_refuses_as_too_large_is_cut_to_fit_and_marked() -> None:
    registry = CollectorRegistry()
    # librdkafka's own limit is 16 times the topic's: beyond it, produce() refuses the record.
    fake = FakeProducer(max_bytes=16 * 60_000)
    producer = await started(fake, registry, topic_limit=60_000)
    original = os.urandom(1_200_000)
    record = SourceRecord("clicks", 2, 41, b"k", original, None, [("trace", b"t-1")])
    acked: list[int] = []
    producer.send(record, "decode_error", "not JSON", lambda: acked.append(1))

    assert fake.attempts == 2
    (letter,) = fake.produced
    assert_cut_from(letter, original, producer.limit)
    assert producer.limit == 60_000 - 512
    assert letter.key == b"k"
    headers = dict(letter.headers)
    assert headers["trace"] == b"t-1"
    assert headers["capi.error.reason"] == b"decode_error"
    assert headers["capi.source.offset"] == b"41"
    assert [name for name, _ in letter.headers].count("capi.value.sha256") == 1
    assert truncated_count(registry) == 1
    assert unacked_retries(registry) == 0

    letter.on_delivery(None, None)
    assert acked == [1]
    assert producer.unacked == 0
    assert producer.healthy
    await producer.close()


async def test_a_dead_letter_the_topic_refuses_as_too_large_is_cut_then_cut_again() -> None:
    registry = CollectorRegistry()
    fake = FakeProducer()
    producer = await started(fake, registry, topic_limit=600_000)
    original = b"x" * 999_900
    record = SourceRecord("clicks", 0, 7, None, original, None)
    acked: list[int] = []
    producer.send(record, "decode_error", "not JSON", lambda: acked.append(1))
    as_is = fake.produced[0]
    assert as_is.value == original, "tried whole first: compressed, it may fit"
    assert "capi.value.truncated" not in dict(as_is.headers)

    await refuse_the_last(fake, KafkaError.MSG_SIZE_TOO_LARGE)
    assert_cut_from(fake.produced[1], original, 600_000 - 512)
    # The topic's limit was lowered since start: each refusal halves the size cut to.
    await refuse_the_last(fake, KafkaError.MSG_SIZE_TOO_LARGE)
    assert_cut_from(fake.produced[2], original, (600_000 - 512) // 2)
    assert truncated_count(registry) == 1
    assert acked == []

    fake.produced[2].on_delivery(None, None)
    assert acked == [1]
    assert producer.unacked == 0
    assert unacked_retries(registry) == 0
    await producer.close()


@pytest.mark.parametrize(
    "failure",
    [
        KafkaException(KafkaError(KafkaError._FATAL)),
        KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC)),
        TypeError("headers must be a list"),
        ValueError("bad value"),
        RuntimeError("anything else"),
    ],
    ids=["fatal", "unknown_topic", "type_error", "value_error", "runtime_error"],
)
async def test_a_produce_error_never_escapes_send_and_the_dead_letter_is_retried(
    failure: Exception,
) -> None:
    registry = CollectorRegistry()
    fake = FakeProducer(failures=[failure])
    producer = await started(fake, registry)
    acked: list[int] = []
    producer.send(RECORD, "too_old", "older than 7 days", lambda: acked.append(1))
    assert not producer.healthy
    await until(lambda: len(fake.produced) == 1)
    assert unacked_retries(registry) == 1
    fake.produced[0].on_delivery(None, None)
    assert acked == [1]
    assert producer.unacked == 0
    assert producer.healthy
    await producer.close()


async def test_a_produce_error_inside_the_retry_timer_is_retried_never_dropped() -> None:
    registry = CollectorRegistry()
    fake = FakeProducer()
    producer = await started(fake, registry)
    acked: list[int] = []
    producer.send(RECORD, "too_old", "older than 7 days", lambda: acked.append(1))
    # The broker refuses it; the timer's produce then fails twice before one goes through.
    fake.failures = [KafkaException(KafkaError(KafkaError._FATAL)), TypeError("boom")]
    await refuse_the_last(fake)
    assert fake.attempts == 4
    assert unacked_retries(registry) == 3
    assert producer.unacked == 1
    fake.produced[-1].on_delivery(None, None)
    assert acked == [1]
    assert producer.unacked == 0
    await producer.close()


async def test_the_poller_outlives_a_failing_delivery_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    fake = FakeProducer()
    fake.poll_failures = [RuntimeError("callback failed")]
    producer = await started(fake, registry)
    await until(lambda: fake.polls >= 3)
    assert "dead-letter delivery callback failed: RuntimeError" in caplog.text
    await producer.close()


async def test_the_size_limit_comes_from_the_topic_or_a_safe_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configs: list[dict[str, str]] = []
    asked: list[tuple[str, float]] = []

    def connect(config: dict[str, str]) -> Any:
        configs.append(config)
        return FakeProducer()

    def topic_says(config: dict[str, str], topic: str, timeout_s: float) -> int:
        assert config == {"bootstrap.servers": "b:9092"}
        asked.append((topic, timeout_s))
        return 5_242_880

    def unreadable(_config: dict[str, str], _topic: str, _timeout_s: float) -> int:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    for read_limit in (topic_says, unreadable):
        producer = DeadLetterProducer(
            {"bootstrap.servers": "b:9092"},
            "dlq",
            Metrics(CollectorRegistry()),
            connect=connect,
            read_limit=read_limit,
        )
        await producer.start()
        await producer.close()
    assert asked == [("dlq", 10.0)]

    big, default = configs
    assert big["message.max.bytes"] == str(16 * 5_242_880)
    assert big["batch.size"] == "1000000"
    assert big["compression.type"] == "zstd"
    assert default["message.max.bytes"] == str(16 * 1_000_000)
    assert default["batch.size"] == str(1_000_000 - 512)
    assert producer.limit == 1_000_000 - 512
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "TOPIC_AUTHORIZATION_FAILED" in warnings[0].getMessage()


def letter_of(record: SourceRecord, headers: Headers) -> DeadLetter:
    return DeadLetter(record, record.key, record.value, headers, lambda: None)


def test_fit_drops_the_foreign_headers_then_the_key_when_they_alone_are_too_large() -> None:
    record = SourceRecord("clicks", 0, 3, b"k" * 5000, b"v" * 5000, None, [("big", b"h" * 5000)])
    headers = dead_letter_headers(record, "decode_error", "not JSON", None, 0, FAILED_AT)
    fitted = fit(letter_of(record, headers), 2000)
    assert fitted.key is None
    assert "big" not in dict(fitted.headers)
    assert dict(fitted.headers)["capi.source.offset"] == b"3"
    assert dict(fitted.headers)["capi.value.bytes"] == b"5000"
    assert fitted.value is not None
    assert serialized_size(fitted.key, fitted.value, fitted.headers) <= 2000
    assert fitted.fitted_to == 2000


def test_fit_replaces_earlier_truncation_headers_and_keeps_a_missing_value_missing() -> None:
    record = SourceRecord("clicks", 0, 3, b"k", None, None, [("capi.value.bytes", b"12")])
    headers = dead_letter_headers(record, "decode_error", "not JSON", None, 0, FAILED_AT)
    assert "capi.value.bytes" not in dict(headers)
    fitted = fit(fit(letter_of(record, headers), 1000), 500)
    assert fitted.value is None
    names = [name for name, _ in fitted.headers]
    assert names.count("capi.value.truncated") == 1
    assert dict(fitted.headers)["capi.value.bytes"] == b"0"


async def test_a_dead_letter_that_fits_the_limit_yet_is_refused_as_too_large_is_not_cut() -> None:
    # A topic too small for any dead letter is broken: wait for it, do not cut to nothing.
    registry = CollectorRegistry()
    fake = FakeProducer()
    producer = await started(fake, registry, topic_limit=8)
    assert producer.limit == 4096
    producer.send(RECORD, "decode_error", "not JSON", lambda: None)
    await refuse_the_last(fake, KafkaError.MSG_SIZE_TOO_LARGE)
    assert fake.produced[1].value == b"v"
    assert "capi.value.truncated" not in dict(fake.produced[1].headers)
    assert unacked_retries(registry) == 1
    assert truncated_count(registry) == 0
    assert not producer.healthy
    await producer.close()


async def test_cutting_stops_at_the_minimum_and_then_waits_for_the_topic() -> None:
    registry = CollectorRegistry()
    fake = FakeProducer()
    producer = await started(fake, registry, topic_limit=8704)
    original = os.urandom(20_000)
    producer.send(
        SourceRecord("clicks", 0, 9, None, original, None), "too_old", "old", lambda: None
    )
    for _ in range(3):
        await refuse_the_last(fake, KafkaError.MSG_SIZE_TOO_LARGE)
    sizes = [serialized_size(p.key, p.value, p.headers) for p in fake.produced]
    assert sizes[0] > 20_000
    assert 8192 - 100 < sizes[1] <= 8192
    assert 4096 - 100 < sizes[2] <= 4096
    assert fake.produced[3].value == fake.produced[2].value
    assert truncated_count(registry) == 1
    assert unacked_retries(registry) == 1
    await producer.close()
