"""The local broker's SASL_SSL listener (SCRAM-SHA-512, test CA) admits right credentials only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

from tests.kafka_helpers import Broker, local_kafka


@dataclass(frozen=True)
class SaslBroker:
    plain: Broker
    bootstrap: str
    username: str
    password_file: Path
    ca_file: Path

    def client_config(self, password: str | None = None) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": self.username,
            "sasl.password": password or self.password_file.read_text(),
            "ssl.ca.location": str(self.ca_file),
        }


def read_env(env_file: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    state_dir = tmp_path_factory.mktemp("sasl-kafka")
    env_file = state_dir / "kafka.env"
    local_kafka("up", state_dir / "broker", env_file, "--sasl")
    try:
        env = read_env(env_file)
        yield SaslBroker(
            plain=Broker(env["KAFKA_BOOTSTRAP_SERVERS"]),
            bootstrap=env["KAFKA_SASL_BOOTSTRAP_SERVERS"],
            username=env["KAFKA_SASL_USERNAME"],
            password_file=Path(env["KAFKA_SASL_PASSWORD_FILE"]),
            ca_file=Path(env["KAFKA_SSL_CA_LOCATION"]),
        )
    finally:
        local_kafka("down", state_dir / "broker", env_file)


def produce_one(config: dict[str, str], topic: str) -> list[KafkaError | None]:
    results: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 8000})
    producer.produce(topic, b"hello", on_delivery=lambda err, _msg: results.append(err))
    producer.flush(15)
    return results


def test_right_credentials_produce(sasl_kafka: SaslBroker) -> None:
    topic = sasl_kafka.plain.create_topic(partitions=1)
    assert produce_one(sasl_kafka.client_config(), topic) == [None]
    values = [m.value() for m in sasl_kafka.plain.read_all(topic)]  # type: ignore[attr-defined]
    assert values == [b"hello"]


def test_wrong_password_is_refused(sasl_kafka: SaslBroker) -> None:
    topic = sasl_kafka.plain.create_topic(partitions=1)
    results = produce_one(sasl_kafka.client_config(password="wrong-password"), topic)
    assert results, "the delivery report must arrive"
    assert results[0] is not None
    assert sasl_kafka.plain.end_offsets(topic) == {0: 0}
