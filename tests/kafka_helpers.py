"""Small helpers for tests that talk to the real local Kafka broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, not in its stubs
    AdminClient,
    NewTopic,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_KAFKA = REPO_ROOT / "scripts" / "local_kafka.py"
ENV_FILE = REPO_ROOT / ".local" / "kafka.env"
# Set by `pytest --without-kafka` (`make test-fast`): no test may use or start a broker.
WITHOUT_KAFKA_ENV = "CAPI_TESTS_WITHOUT_KAFKA"
COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
    }
)


def headers_of(message: object) -> dict[str, str]:
    """A consumed message's headers as text (a header without a value reads as "")."""
    return {k: (v or b"").decode() for k, v in message.headers() or []}  # type: ignore[attr-defined]


def read_bootstrap(env_file: Path) -> str | None:
    if not env_file.exists():
        return None
    for line in env_file.read_text().splitlines():
        if line.startswith("KAFKA_BOOTSTRAP_SERVERS="):
            return line.split("=", 1)[1].strip()
    return None


def broker_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def require_kafka(what: str) -> None:
    """Fails the test when this run is without Kafka: it should have been marked `kafka`."""
    if os.environ.get(WITHOUT_KAFKA_ENV):
        pytest.fail(
            f"{what} needs a Kafka broker, but this run is --without-kafka (make test-fast): "
            "mark the test `kafka`",
            pytrace=False,
        )


def local_kafka(command: str, state_dir: Path, env_file: Path, *options: str) -> None:
    require_kafka(f"local_kafka {command}")
    subprocess.run(
        [
            sys.executable,
            str(LOCAL_KAFKA),
            command,
            "--dir",
            str(state_dir),
            "--env-file",
            str(env_file),
            *options,
        ],
        check=True,
    )


@dataclass
class Broker:
    bootstrap: str

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str | None = None, partitions: int = 1) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        admin = self.admin()  # must outlive the future, or librdkafka cancels the request
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
        futures[name].result(timeout=30)
        self.wait_for_topic(name, partitions)
        return name

    def wait_for_topic(self, name: str, partitions: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        admin = self.admin()
        while True:
            topic = admin.list_topics(name, timeout=5).topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and len(topic.partitions) == partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not ready")
            time.sleep(0.05)

    def producer(self, **config: object) -> Producer:
        return Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, **config})

    def produce(
        self,
        topic: str,
        values: Iterable[bytes | tuple[bytes | None, bytes]],
        partition: int | None = None,
    ) -> int:
        """Produces every value (or (key, value)) and waits for all acks; returns the count."""
        producer = self.producer(**{"enable.idempotence": True})
        failures: list[str] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        # -1 (produce's default, RD_KAFKA_PARTITION_UA): the partitioner chooses by key.
        target = -1 if partition is None else partition
        count = 0
        for item in values:
            key, value = item if isinstance(item, tuple) else (None, item)
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, partition=target, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
            count += 1
        remaining = producer.flush(60)
        assert remaining == 0, f"{remaining} messages not delivered"
        assert not failures, failures[:3]
        return count

    def consumer(self, group_id: str, **config: object) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **config,
            }
        )

    def read_all(self, topic: str, timeout: float = 30.0) -> list[object]:
        """Every message currently in the topic (all partitions), read without a group."""
        consumer = self.consumer(f"reader-{uuid.uuid4().hex[:8]}")
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in metadata.partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        messages: list[object] = []
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(messages)} of {sum(ends.values())} from {topic}")
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                offset = msg.offset()
                assert offset is not None, "a message without an error has its offset"
                messages.append(msg)
                positions[msg.partition()] = offset + 1
        consumer.close()
        return messages

    def end_offsets(self, topic: str) -> dict[int, int]:
        consumer = self.consumer(f"reader-{uuid.uuid4().hex[:8]}")
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
        consumer.close()
        return ends

    def committed_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        """The group's committed offsets; empty while the coordinator is moving or loading."""
        consumer = self.consumer(group_id)
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            committed = consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=10
            )
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in COORDINATOR_NOT_READY):
                raise
            return {}
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in committed}
