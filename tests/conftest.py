"""Shared fixtures: a real Kafka broker for the session and fresh topics per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kafka_helpers import ENV_FILE, Broker, broker_answers, local_kafka, read_bootstrap

pytest_plugins = ["tests.sandbox_helpers"]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker of `make kafka-up` if one answers, else one started for this session."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or read_bootstrap(ENV_FILE)
    if bootstrap and broker_answers(bootstrap):
        yield Broker(bootstrap)
        return
    state_dir = tmp_path_factory.mktemp("kafka")
    env_file = state_dir / "kafka.env"
    local_kafka("up", state_dir, env_file)
    try:
        started = read_bootstrap(env_file)
        assert started is not None
        yield Broker(started)
    finally:
        local_kafka("down", state_dir, env_file)


@pytest.fixture
def new_topic(kafka: Broker) -> Callable[..., str]:
    """Creates a uniquely named topic: `new_topic(partitions=3)`."""

    def create(partitions: int = 1) -> str:
        return kafka.create_topic(partitions=partitions)

    return create


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
