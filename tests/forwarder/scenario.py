"""A generated clickstream on fresh topics for the forwarder tests, and the checks they share.

run = scenario(kafka, new_topic, seed=5, count=20_000, partitions=3)
with running_forwarder(run.config(sandbox), tmp_path):
    wait_until(run.committed, 90, "all offsets committed")
assert_delivered_exactly_once(sandbox, run.expected)
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from tests.forwarder.harness import forwarder_config
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import SandboxProcess
from traffic.generator import ClickstreamGenerator, GeneratedMessage

EventKey = tuple[str | None, str | None]


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def produce(kafka: Broker, topic: str, messages: list[GeneratedMessage]) -> None:
    kafka.produce(topic, [(m.key, m.value) for m in messages])


def all_committed(kafka: Broker, group: str, topic: str) -> bool:
    return kafka.committed_offsets(group, topic) == kafka.end_offsets(topic)


def valid_keys(messages: Iterable[GeneratedMessage]) -> set[EventKey]:
    """(event_id, event_name) of every message the forwarder should deliver."""
    return {(m.event_id, m.event_name) for m in messages if m.kind == "valid"}


def delivered_keys(sandbox: SandboxProcess) -> list[EventKey]:
    """(event_id, event_name) of every event the sandbox processed, repeats included."""
    return [(r["event"]["event_id"], r["event"]["event_name"]) for r in sandbox.events()]


def assert_delivered_exactly_once(sandbox: SandboxProcess, expected: Collection[EventKey]) -> None:
    """Every expected event was processed, each exactly once, and nothing else was."""
    assert Counter(delivered_keys(sandbox)) == Counter(expected), "all delivered, each once"


@dataclass(frozen=True)
class Scenario:
    """Generated messages already on `topic`, with a fresh dead-letter topic and group."""

    kafka: Broker
    topic: str
    dlq: str
    group: str
    messages: list[GeneratedMessage]

    @property
    def valid(self) -> list[GeneratedMessage]:
        return [m for m in self.messages if m.kind == "valid"]

    @property
    def expected(self) -> set[EventKey]:
        return valid_keys(self.messages)

    def config(self, sandbox: SandboxProcess, **sections: dict[str, Any]) -> dict[str, Any]:
        """`forwarder_config` for this topic, group and dead-letter topic."""
        return forwarder_config(
            self.kafka.bootstrap,
            sandbox,
            [self.topic],
            group_id=self.group,
            dead_letter_topic=self.dlq,
            **sections,
        )

    def committed(self) -> bool:
        return all_committed(self.kafka, self.group, self.topic)


def scenario(
    kafka: Broker,
    new_topic: Callable[..., str],
    *,
    seed: int,
    count: int,
    partitions: int = 1,
    poison_ratio: float = 0.0,
    dlq: str | None = None,
) -> Scenario:
    """`count` generated messages produced to a new topic of `partitions` partitions."""
    topic = new_topic(partitions=partitions)
    messages = list(ClickstreamGenerator(seed=seed, poison_ratio=poison_ratio).messages(count))
    produce(kafka, topic, messages)
    return Scenario(kafka, topic, dlq or new_topic(), new_group(), messages)
