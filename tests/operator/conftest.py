"""Fixtures for the operator commands: configuration files and contract-shaped dead letters."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from stream.dlq import contract
from tests.kafka_helpers import Broker


@dataclass(frozen=True)
class Letter:
    """A dead letter as the forwarder writes it (DESIGN §4)."""

    value: bytes | None
    key: bytes | None = None
    reason: str = "rejected_by_pinterest"
    message: str = "Invalid event_timestamp parameter."
    source_topic: str = "clickstream"
    source_partition: int = 0
    source_offset: int = 0
    failed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: int | None = None
    attempts: int = 1
    extra_headers: tuple[tuple[str, bytes], ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (contract.REASON, self.reason.encode()),
            (contract.MESSAGE, self.message.encode()),
            (contract.SOURCE_TOPIC, self.source_topic.encode()),
            (contract.SOURCE_PARTITION, str(self.source_partition).encode()),
            (contract.SOURCE_OFFSET, str(self.source_offset).encode()),
        ]
        if self.status is not None:
            headers.append((contract.HTTP_STATUS, str(self.status).encode()))
        headers.append((contract.ATTEMPTS, str(self.attempts).encode()))
        headers.append(
            (contract.FAILED_AT, self.failed_at.isoformat(timespec="milliseconds").encode())
        )
        return headers + list(self.extra_headers)


def write_letters(kafka: Broker, topic: str, letters: list[Letter], partition: int = 0) -> None:
    """Produces the dead letters in order to one partition and waits for every ack."""
    producer = kafka.producer(**{"enable.idempotence": True})
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for letter in letters:
        producer.produce(
            topic,
            value=letter.value,
            key=letter.key,
            headers=letter.headers(),
            partition=partition,
            timestamp=int(letter.failed_at.timestamp() * 1000),
            on_delivery=on_delivery,
        )
    assert producer.flush(30) == 0
    assert not failures, failures


@dataclass(frozen=True)
class OperatorSetup:
    config: Path
    dlq: str
    group_id: str


@pytest.fixture
def operator_setup(
    kafka: Broker, new_topic: Callable[..., str], tmp_path: Path
) -> Callable[..., OperatorSetup]:
    """`operator_setup(partitions=1)`: a fresh dead-letter topic and a config file naming it."""

    def make(partitions: int = 1) -> OperatorSetup:
        dlq = new_topic(partitions=partitions)
        group_id = f"capi-stream-test-{uuid.uuid4().hex[:8]}"
        config = tmp_path / f"{dlq}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "kafka": {
                        "bootstrap_servers": kafka.bootstrap,
                        "group_id": group_id,
                        "dead_letter_topic": dlq,
                    },
                    "sources": [{"topic": "clickstream"}],
                }
            )
        )
        return OperatorSetup(config, dlq, group_id)

    return make
