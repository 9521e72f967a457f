"""A rotated password file reaches running clients when Kafka refuses their credentials."""

from __future__ import annotations

from confluent_kafka import KafkaError

from stream.credentials import RotatedPassword
from stream.errors import ConfigurationError


class Client:
    def __init__(self) -> None:
        self.credentials: list[tuple[str, str]] = []

    def set_sasl_credentials(self, username: str, password: str) -> None:
        self.credentials.append((username, password))


CONFIG = {"sasl.username": "capi", "sasl.password": "old"}
REFUSED = KafkaError(KafkaError._AUTHENTICATION)


def test_a_new_password_goes_to_every_client_once() -> None:
    current = ["old"]
    rotated = RotatedPassword(CONFIG, lambda: current[0])
    first, second = Client(), Client()
    rotated.on_error(REFUSED, "clients", first, second)
    assert first.credentials == second.credentials == []  # the file has not changed yet
    current[0] = "new"
    rotated.on_error(REFUSED, "clients", first, None, second)
    rotated.on_error(REFUSED, "clients", first, second)
    assert first.credentials == second.credentials == [("capi", "new")]


def test_other_errors_and_unreadable_files_change_nothing() -> None:
    def unreadable() -> str:
        raise ConfigurationError("kafka.sasl_password_file", "cannot read it")

    client = Client()
    RotatedPassword(CONFIG, lambda: "new").on_error(
        KafkaError(KafkaError._TRANSPORT), "clients", client
    )
    RotatedPassword(CONFIG, unreadable).on_error(REFUSED, "clients", client)
    RotatedPassword(CONFIG, None).on_error(REFUSED, "clients", client)
    assert client.credentials == []
