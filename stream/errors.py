"""The error tree of capi-stream; every error says whether retrying can help.

    CapiStreamError(retriable)
    ├── ConfigurationError            invalid settings or usage → exit 2, names the key
    ├── InvalidMessage                one message cannot become an event → dead letter
    │   (reason: decode_error | invalid_event | mapping_error | too_old)
    ├── DeliveryError                 a request to Pinterest did not settle its events
    │   ├── TransientDeliveryError    429, 5xx, timeout, connection error → retry (retriable)
    │   ├── RequestInvalidError       400 for the whole request → bisect, then dead letter
    │   └── SetupError                401/403/404, bad ad account → pause that account, never DLQ
    └── DeadLetterError               the DLQ producer could not get an ack → retry, commit nothing

Messages never carry raw PII or tokens: they name fields and reasons, not values.
"""

from __future__ import annotations

from typing import ClassVar, Literal

DeadLetterReason = Literal[
    "decode_error",
    "invalid_event",
    "mapping_error",
    "too_old",
    "rejected_by_pinterest",
    "request_invalid",
    "retries_exhausted",
]
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = (
    "decode_error",
    "invalid_event",
    "mapping_error",
    "too_old",
    "rejected_by_pinterest",
    "request_invalid",
    "retries_exhausted",
)


class CapiStreamError(Exception):
    """Root of every error raised on purpose by capi-stream."""

    retriable: ClassVar[bool] = False


class ConfigurationError(CapiStreamError):
    """Settings or command-line usage are invalid; `key` names the (first) offending setting
    and `problems` holds every (key, message) found, so one attempt reports them all."""

    def __init__(self, key: str, message: str, *more: tuple[str, str]) -> None:
        self.problems: tuple[tuple[str, str], ...] = ((key, message), *more)
        super().__init__("\n".join(f"{k}: {m}" for k, m in self.problems))
        self.key = key


class InvalidMessage(CapiStreamError):
    """A message cannot be turned into a valid Pinterest event."""

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason: DeadLetterReason = reason
        self.message = message


class DeliveryError(CapiStreamError):
    """A request to Pinterest did not settle its events."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientDeliveryError(DeliveryError):
    """Worth retrying: throttled, server error, timeout or connection failure."""

    retriable = True

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class RequestInvalidError(DeliveryError):
    """Pinterest refused the whole request as malformed (400)."""


class SetupError(DeliveryError):
    """Token or ad account problem; fixing it needs an operator, not a retry storm."""

    retriable = True


class DeadLetterError(CapiStreamError):
    """The dead-letter topic did not acknowledge a record."""

    retriable = True
