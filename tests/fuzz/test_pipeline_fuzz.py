"""Hostile messages through the running forwarder: it keeps running, every message is delivered
or dead-lettered with a reason (or skipped), and the committed offsets reach the end."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.dlq.contract import DEAD_LETTER_REASONS
from stream.models import DeadLetter, PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer
from tests.forwarder.harness import forwarder_config, running_forwarder, wait_until
from tests.fuzz.strategies import hostile_message
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import SandboxProcess

SANDBOX_REASONS = {"rejected_by_pinterest", "request_invalid"}


def headers_of(message: object) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in message.headers() or []}  # type: ignore[attr-defined]


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
    with running_forwarder(config, tmp_path / uuid.uuid4().hex[:6]) as forwarder:
        for topic in topics.values():
            wait_until(
                lambda t=topic: kafka.committed_offsets(group, t) == kafka.end_offsets(t),
                120,
                f"offsets of {topic} at the end",
            )
        assert forwarder.process.poll() is None, "the forwarder is still running"
        assert forwarder.terminate() == 0
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
