"""The immutable records that cross pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from stream.dlq.contract import DeadLetterReason


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka message as consumed; `value` is kept byte for byte for the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: list[tuple[str, bytes | None]] | None = None
    """The message's headers as confluent-kafka returns them; dead letters carry them over."""


class Signal(IntFlag):
    """Matching signals an event carries (for identifier coverage and resilience status)."""

    NONE = 0
    IP_AND_USER_AGENT = 1
    EMAIL = 2
    HASHED_MAIDS = 4
    EXTERNAL_ID = 8
    CLICK_ID = 16


@dataclass(frozen=True, slots=True)
class PinterestEvent:
    """A validated, hashed Pinterest event, already encoded as the spec's JSON object.

    `body` is exactly what goes into the request's `data` array, so a batch is encoded by joining
    bodies and its byte size is known without re-serialising.
    """

    event_id: str
    event_name: str
    action_source: str
    event_time: int
    ad_account_id: str | None
    body: bytes
    signals: Signal = Signal.NONE


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that must go to the dead-letter topic; `message` never contains PII."""

    reason: DeadLetterReason
    message: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A message deliberately not sent (e.g. a Segment `identify`), settled without delivery."""

    reason: str


TransformResult = PinterestEvent | DeadLetter | Skipped
