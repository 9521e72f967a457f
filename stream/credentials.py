"""Hands a rotated kafka.sasl_password_file to running Kafka producers and readers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from confluent_kafka import KafkaError

from stream.errors import ConfigurationError

log = logging.getLogger(__name__)

REFUSED_CREDENTIALS: Final = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
)


class SaslClient(Protocol):
    def set_sasl_credentials(self, username: str, password: str) -> None: ...


class RotatedPassword:
    """When Kafka refuses a client's credentials, re-reads the password file; a new password is
    set on the client, which authenticates with it at its next connection (librdkafka keeps
    established connections). The consumer reconnects by itself (`KafkaSource`)."""

    def __init__(
        self, client_config: Mapping[str, object], reread: Callable[[], str | None] | None
    ) -> None:
        self._username = str(client_config.get("sasl.username", ""))
        self._password = client_config.get("sasl.password")
        self._reread = reread

    def on_error(self, error: KafkaError, what: str, *clients: SaslClient | None) -> None:
        """Called from the error callback of `clients` (those sharing one configuration)."""
        if self._reread is None or error.code() not in REFUSED_CREDENTIALS:
            return
        try:
            password = self._reread()
        except ConfigurationError:
            return  # mid-rotation the file may be briefly missing or empty
        if password is None or password == self._password:
            return
        self._password = password
        for client in clients:
            if client is not None:
                client.set_sasl_credentials(self._username, password)
        log.warning("kafka.sasl_password_file changed: the %s uses the new password", what)
