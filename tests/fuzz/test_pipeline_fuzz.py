"""Hostile messages through the running forwarder: it keeps running, every message is delivered
or dead-lettered with a reason (or skipped) as transform predicts, and the committed offsets
reach the end; dead letters too large for their topic arrive cut, saying so."""

from __future__ import annotations

import hashlib
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream.dlq.contract import DEAD_LETTER_REASONS
from stream.models import DeadLetter, PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer
from tests.forwarder.harness import forwarder_config, running_forwarder, wait_until
from tests.forwarder.scenario import all_committed
from tests.fuzz.predict import Predictor
from tests.fuzz.strategies import (
    SOURCE_TOPIC_MAX_BYTES,
    Blob,
    hostile_message,
    poison_message,
    unknown_account,
)
from tests.kafka_helpers import Broker, headers_of
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess

SANDBOX_REASONS = {"rejected_by_pinterest", "request_invalid"}
# Smaller than the near-1 MiB messages: those that do not compress must be cut to fit.
DLQ_MAX_BYTES = 256 * 1024


def forward_to_the_end(
    kafka: Broker,
    config: dict[str, Any],
    tmp_path: Path,
    group: str,
    topics: Iterable[str],
    timeout_s: float,
) -> None:
    """Runs one forwarder until every topic's offsets are committed at their end; it must still
    be running then (no message stopped it) and stop cleanly."""
    with running_forwarder(config, tmp_path / uuid.uuid4().hex[:6]) as forwarder:
        for topic in topics:
            wait_until(
                lambda t=topic: all_committed(kafka, group, t),
                timeout_s,
                f"offsets of {topic} at the end",
            )
        assert forwarder.process.poll() is None, "the forwarder is still running"
        assert forwarder.terminate() == 0


@settings(
    max_examples=2,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(
    web=st.lists(hostile_message(), min_size=60, max_size=120),
    crm=st.lists(hostile_message(crm=True), min_size=20, max_size=40),
)
def test_hostile_messages_through_the_running_forwarder(
    kafka: Broker, sandbox: SandboxProcess, tmp_path: Path, web: list[bytes], crm: list[bytes]
) -> None:
    topics = {"web": kafka.create_topic(), "crm": kafka.create_topic()}
    dlq = kafka.create_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    sources = [
        {"topic": topics["web"], "format": "segment"},
        {"topic": topics["crm"], "format": "pinterest", "action_source": "offline"},
    ]
    kafka.produce(topics["web"], web)
    kafka.produce(topics["crm"], crm)
    config = forwarder_config(
        kafka.bootstrap, sandbox, group_id=group, dead_letter_topic=dlq, sources=sources
    )
    # What each message should become, decided by the same transform in this process.
    predicted_settings = Settings(pinterest={"ad_account_id": "1"}, sources=sources)
    predicted = Transformer(predicted_settings, time.time)
    forward_to_the_end(kafka, config, tmp_path, group, topics.values(), timeout_s=120)
    letters = {
        (h["capi.source.topic"], int(h["capi.source.offset"])): h["capi.error.reason"]
        for h in map(headers_of, kafka.read_all(dlq))
    }
    assert set(letters.values()) <= set(DEAD_LETTER_REASONS)
    delivered = {record["event"]["event_id"] for record in sandbox.events()}
    for source, messages in zip(predicted_settings.sources, (web, crm), strict=True):
        for offset, value in enumerate(messages):
            result = predicted.transform(source, value, int(time.time() * 1000))
            letter = letters.get((source.topic, offset))
            if isinstance(result, DeadLetter):
                assert letter == result.reason, (source.format, offset, value[:200])
            elif isinstance(result, PinterestEvent):
                assert result.event_id in delivered or letter in SANDBOX_REASONS, (
                    source.format,
                    offset,
                    value[:200],
                )
            else:
                assert letter is None


def now_ms() -> int:
    return int(time.time() * 1000)


def topic_with_limit(kafka: Broker, max_message_bytes: int) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = kafka.admin()
    config = {"max.message.bytes": str(max_message_bytes)}
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(timeout=30)
    kafka.wait_for_topic(name, 1)
    return name


def produce_large(kafka: Broker, topic: str, values: list[bytes]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "enable.idempotence": True,
            "message.max.bytes": 2 * SOURCE_TOPIC_MAX_BYTES,
        }
    )
    failures: list[str] = []
    for value in values:
        producer.produce(
            topic, value=value, on_delivery=lambda err, _m: err and failures.append(str(err))
        )
        producer.flush(60)  # one at a time: each may be as large as librdkafka's queue
    assert not failures, failures[:3]


def check_fitted(letter_value: bytes, headers: dict[str, str], original: bytes) -> bool:
    """The dead letter holds the original value, or a prefix of it with the truncation headers
    describing the whole; returns whether it was cut."""
    if headers.get("capi.value.truncated") != "true":
        assert letter_value == original
        assert "capi.value.bytes" not in headers
        return False
    assert headers["capi.value.bytes"] == str(len(original))
    assert headers["capi.value.sha256"] == hashlib.sha256(original).hexdigest()
    assert len(letter_value) < min(len(original), DLQ_MAX_BYTES)
    assert original.startswith(letter_value)
    return True


# Each example maps its messages twice (forwarder and prediction): seconds once per-message work
# is linear, minutes while 10^5 values are de-duplicated quadratically.
@pytest.mark.timeout(900)
@settings(
    max_examples=2,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # shrinking megabytes is hopeless
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(
    web_messages=st.lists(
        st.one_of(hostile_message().map(Blob), poison_message()), min_size=4, max_size=8
    ),
    crm_messages=st.lists(
        st.one_of(poison_message(crm=True), unknown_account({DEFAULT_AD_ACCOUNT}).map(Blob)),
        min_size=4,
        max_size=8,
    ),
)
def test_huge_near_1mib_and_foreign_account_messages_through_the_running_forwarder(
    kafka: Broker,
    sandbox: SandboxProcess,
    tmp_path: Path,
    web_messages: list[Blob],
    crm_messages: list[Blob],
) -> None:
    web = [message.value for message in web_messages]
    crm = [message.value for message in crm_messages]
    topics = {
        "web": topic_with_limit(kafka, SOURCE_TOPIC_MAX_BYTES),
        "crm": topic_with_limit(kafka, SOURCE_TOPIC_MAX_BYTES),
    }
    dlq = topic_with_limit(kafka, DLQ_MAX_BYTES)
    group = f"g-{uuid.uuid4().hex[:8]}"
    sources = [
        {"topic": topics["web"], "format": "segment"},
        {"topic": topics["crm"], "format": "pinterest", "action_source": "offline"},
    ]
    produce_large(kafka, topics["web"], web)
    produce_large(kafka, topics["crm"], crm)
    config = forwarder_config(
        kafka.bootstrap, sandbox, group_id=group, dead_letter_topic=dlq, sources=sources
    )
    predictor = Predictor(Settings(**config))
    forward_to_the_end(kafka, config, tmp_path, group, topics.values(), timeout_s=300)
    letters: dict[tuple[str, int], list[tuple[dict[str, str], bytes]]] = {}
    for message in kafka.read_all(dlq, timeout=60):
        headers = headers_of(message)
        where = (headers["capi.source.topic"], int(headers["capi.source.offset"]))
        letters.setdefault(where, []).append((headers, message.value()))  # type: ignore[attr-defined]
    delivered: dict[str, list[object]] = {}
    for record in sandbox.events():
        delivered.setdefault(record["event"]["event_id"], []).append(record["event"])
    predicted = [
        (topic, offset, value, predictor.outcome(predictor.source(topic), value, now_ms()))
        for topic, messages in ((topics["web"], web), (topics["crm"], crm))
        for offset, value in enumerate(messages)
    ]
    # Copies of one event_id and event_name in a batch are sent once: only a unique event's
    # body is compared with what the sandbox received.
    identities = Counter(
        (o.event.event_id, o.event.event_name) for *_, o in predicted if o.event is not None
    )
    for topic, offset, value, outcome in predicted:
        found = letters.get((topic, offset), [])
        where = (topic == topics["crm"], offset, len(value), value[:120])
        if outcome.fate == "dead_letter":
            assert len(found) == 1, where
            headers, letter_value = found[0]
            assert headers["capi.error.reason"] == outcome.reason, where
            assert headers["capi.source.partition"] == "0"
            cut = check_fitted(letter_value, headers, value)
            if len(zlib.compress(value, 1)) > 2 * DLQ_MAX_BYTES:
                assert cut, f"an incompressible {len(value)}-byte dead letter was not cut {where}"
        elif outcome.fate == "deliver":
            assert outcome.event is not None
            if found:
                assert found[0][0]["capi.error.reason"] in SANDBOX_REASONS, where
                continue
            sent = delivered.get(outcome.event.event_id, [])
            assert sent, where
            if identities[outcome.event.event_id, outcome.event.event_name] == 1:
                assert orjson.loads(outcome.event.body) in sent, where
        else:
            assert not found, where
