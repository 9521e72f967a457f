"""The local broker is a real Kafka: groups commit and resume; it survives a restart."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from tests.kafka_helpers import Broker, local_kafka, read_bootstrap

MESSAGES = 10_000


def consume_until(consumer: object, count: int, seen: list[tuple[int, int]]) -> None:
    idle_polls = 0
    while len(seen) < count and idle_polls < 60:
        batch = consumer.consume(500, 0.5)  # type: ignore[attr-defined]
        idle_polls = 0 if batch else idle_polls + 1
        for msg in batch:
            assert msg.error() is None, msg.error()
            seen.append((msg.partition(), msg.offset()))


def test_group_resumes_at_committed_offsets(kafka: Broker, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    kafka.produce(topic, (f"message-{i}".encode() for i in range(MESSAGES)))
    assert sum(kafka.end_offsets(topic).values()) == MESSAGES

    group = f"group-{uuid.uuid4().hex[:8]}"
    first = kafka.consumer(group)
    first.subscribe([topic])
    seen: list[tuple[int, int]] = []
    consume_until(first, MESSAGES // 2, seen)
    positions = first.position(first.assignment())
    first.commit(offsets=positions, asynchronous=False)
    first.close()
    committed = kafka.committed_offsets(group, topic)
    assert sum(committed.get(p, 0) for p in range(3) if committed.get(p, -1) >= 0) == len(seen)

    second = kafka.consumer(group)
    second.subscribe([topic])
    rest: list[tuple[int, int]] = []
    consume_until(second, MESSAGES - len(seen), rest)
    second.commit(asynchronous=False)
    second.close()

    assert not set(seen) & set(rest), "messages re-read after commit"
    assert len(seen) + len(rest) == MESSAGES
    # The sticky partitioner may leave a partition empty (batch boundaries depend on timing):
    # an empty partition has no position to commit, and nothing to resume.
    committed_now = kafka.committed_offsets(group, topic)
    for partition, end in kafka.end_offsets(topic).items():
        assert committed_now[partition] == end or (end == 0 and committed_now[partition] < 0)


@pytest.mark.kafka
def test_broker_restart_keeps_data(tmp_path: Path) -> None:
    env_file = tmp_path / "kafka.env"
    state_dir = tmp_path / "broker"
    local_kafka("up", state_dir, env_file)
    try:
        bootstrap = read_bootstrap(env_file)
        assert bootstrap is not None
        broker = Broker(bootstrap)
        topic = broker.create_topic(partitions=2)
        broker.produce(topic, [b"before-restart"] * 10)

        local_kafka("stop", state_dir, env_file)
        local_kafka("up", state_dir, env_file)
        assert read_bootstrap(env_file) == bootstrap, "restart must reuse the port"

        broker.produce(topic, [b"after-restart"] * 5)
        values = sorted(msg.value() for msg in broker.read_all(topic))  # type: ignore[attr-defined]
        assert values == [b"after-restart"] * 5 + [b"before-restart"] * 10
        consumer = broker.consumer("restart-check")
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.close()
        assert low == 0
        assert high > 0
    finally:
        local_kafka("down", state_dir, env_file)
    assert not state_dir.exists()
