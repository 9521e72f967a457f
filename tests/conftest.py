"""Shared fixtures: a real Kafka broker for the session and fresh topics per test.

`pytest --without-kafka` (what `make test-fast` runs) deselects every test marked `kafka`: each
test whose fixtures include a broker is marked automatically, a test that starts its own broker
carries the mark. A selected test that still asks for a broker fails instead of starting one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kafka_helpers import (
    ENV_FILE,
    WITHOUT_KAFKA_ENV,
    Broker,
    broker_answers,
    local_kafka,
    read_bootstrap,
    require_kafka,
)

pytest_plugins = ["tests.sandbox_helpers"]

# Fixtures that are, or start, a Kafka broker.
BROKER_FIXTURES = frozenset({"kafka", "sasl_kafka"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--without-kafka",
        action="store_true",
        help="run only the tests that need no Kafka broker; one that asks for a broker fails",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--without-kafka"):
        # An environment variable, so that tests/kafka_helpers.local_kafka sees it too.
        os.environ[WITHOUT_KAFKA_ENV] = "1"


def pytest_itemcollected(item: pytest.Item) -> None:
    if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.kafka)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--without-kafka"):
        return
    needs_kafka = [item for item in items if item.get_closest_marker("kafka")]
    if needs_kafka:
        config.hook.pytest_deselected(items=needs_kafka)
        items[:] = [item for item in items if not item.get_closest_marker("kafka")]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker of `make kafka-up` if one answers, else one started for this session."""
    require_kafka("the `kafka` fixture")
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
