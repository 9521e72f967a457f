"""IdentityState on the real broker: restore from the changelog (tombstones included), resume
from a store's checkpoint, rebuild a store that is ahead of a recreated changelog, and commit
gating on the changelog flush."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource

from stream.identity.state import IdentityState
from stream.settings import Settings
from tests.forwarder.harness import wait_until
from tests.kafka_helpers import Broker


def settings_for(kafka: Broker, topic: str, state_dir: Path, group: str) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": kafka.bootstrap, "group_id": group},  # type: ignore[arg-type]
        sources=[{"topic": topic, "enrich": "identity"}],  # type: ignore[list-item]
        identity={"state_dir": state_dir},  # type: ignore[arg-type]
    )


@pytest.fixture
def state_factory(
    kafka: Broker, new_topic: Callable[..., str], tmp_path: Path
) -> Iterator[Callable[..., tuple[IdentityState, str, str]]]:
    """IdentityStates on one fresh source topic (2 partitions); each is closed at the end."""
    topic = new_topic(partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    made: list[IdentityState] = []

    def make(directory: str = "a") -> tuple[IdentityState, str, str]:
        state = IdentityState(settings_for(kafka, topic, tmp_path / directory, group))
        state.ensure_changelogs()
        made.append(state)
        return state, topic, f"{group}-{topic}-identity-changelog"

    yield make
    for state in made:
        state.close()


def test_changelog_is_created_compacted_with_the_source_partitions(
    kafka: Broker, state_factory: Callable[..., tuple[IdentityState, str, str]]
) -> None:
    _, _, changelog = state_factory()
    admin = kafka.admin()
    metadata = admin.list_topics(changelog, timeout=10)
    assert len(metadata.topics[changelog].partitions) == 2
    resource = ConfigResource(ConfigResource.Type.TOPIC, changelog)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact,delete"
    assert int(configs["retention.ms"].value) == 30 * 86_400_000


def test_a_fresh_store_restores_its_partition_tombstones_included(
    kafka: Broker, state_factory: Callable[..., tuple[IdentityState, str, str]]
) -> None:
    state, topic, changelog = state_factory("writer")
    state.assigned([(topic, 0), (topic, 1)])
    writer = state.stores[(topic, 0)]
    writer.put(b"u:1", b'{"t":1}')
    writer.put(b"u:2", b'{"t":2}')
    writer.delete(b"u:1")
    state.stores[(topic, 1)].put(b"u:9", b'{"t":9}')
    assert state.flush(30)
    state.released([(topic, 0), (topic, 1)])

    # Another member (another directory) takes partition 0: only its records, the deletion kept.
    other, _, _ = state_factory("other")
    other.assigned([(topic, 0)])
    store = other.stores[(topic, 0)].local
    assert store.get(b"u:1") is None
    assert store.get(b"u:2") == b'{"t":2}'
    assert store.get(b"u:9") is None
    assert other.restores.records == 3
    assert store.checkpoint() == kafka.end_offsets(changelog)[0]


def test_a_reassigned_store_resumes_from_its_checkpoint(
    kafka: Broker, state_factory: Callable[..., tuple[IdentityState, str, str]]
) -> None:
    state, topic, changelog = state_factory()
    state.assigned([(topic, 0)])
    store = state.stores[(topic, 0)]
    for user in range(5):
        store.put(b"u:%d" % user, b'{"t":1}')
    assert state.flush(30)
    end = kafka.end_offsets(changelog)
    assert end[0] == 5
    # Each flush records how far the tail has read the changelog back.
    wait_until(lambda: state.flush(30) and store.local.checkpoint() == end[0], 30, "the checkpoint")
    state.released([(topic, 0)])
    before = state.restores.records
    state.assigned([(topic, 0)])
    assert state.restores.records == before, "nothing below the checkpoint is read again"
    assert state.stores[(topic, 0)].get(b"u:4") == b'{"t":1}'


def test_a_store_ahead_of_a_recreated_changelog_is_rebuilt(
    kafka: Broker, state_factory: Callable[..., tuple[IdentityState, str, str]]
) -> None:
    state, topic, changelog = state_factory()
    state.assigned([(topic, 0)])
    store = state.stores[(topic, 0)].local
    store.put(b"u:stale", b'{"t":1}')
    store.set_checkpoint(1_000_000)
    state.released([(topic, 0)])
    state.assigned([(topic, 0)])
    assert state.stores[(topic, 0)].get(b"u:stale") is None
    assert state.stores[(topic, 0)].local.checkpoint() == kafka.end_offsets(changelog)[0]


def test_forget_tombstones_reach_an_owned_store_at_the_next_flush(
    kafka: Broker, state_factory: Callable[..., tuple[IdentityState, str, str]]
) -> None:
    state, topic, changelog = state_factory()
    state.assigned([(topic, 1)])
    state.stores[(topic, 1)].put(b"u:5", b'{"t":5}')
    assert state.flush(30)
    kafka.produce(changelog, [(b"u:5", None)], partition=1)  # type: ignore[list-item]
    # The tail reads what has been fetched when the flush runs, as the commit loop's would.
    wait_until(lambda: state.flush(30) and state.forgotten == 1, 30, "the tombstone applied")
    assert state.stores[(topic, 1)].get(b"u:5") is None
