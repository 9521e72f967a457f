"""The errors capi-stream raises on purpose.

    CapiStreamError                   a failure the command line reports (exit 1)
    ├── ConfigurationError            invalid settings or usage → exit 2, names the key
    └── InvalidMessage                one message cannot become an event → dead letter
        (reason: decode_error | invalid_event | mapping_error | too_old)

A Conversions API answer is not an error: stream.pinterest.classify says what it means (retry,
pause the account, dead-letter) and stream.policy decides what to do.
Messages never carry raw PII or tokens: they name fields and reasons, not values.
"""

from __future__ import annotations

from stream.dlq.contract import DeadLetterReason


class CapiStreamError(Exception):
    """Root of every error raised on purpose by capi-stream."""


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
