"""The records that cross pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag
from typing import NamedTuple

from stream.dlq.contract import DeadLetterReason


@dataclass(slots=True)
class SourceRecord:
    """One Kafka message from its consumption until it settles; `value` is kept byte for byte for
    the dead-letter topic.

    The one object per message from the consumer to settlement (no ticket beside it): the
    consumer fills the message's fields, ingest sets `epoch` and `size` once when it tracks the
    record, and nothing changes it after that. Not frozen because a frozen dataclass costs
    ~1 µs per construction (benchmarks/bench_bookkeeping.py).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: list[tuple[str, bytes | None]] | None = None
    """The message's headers as confluent-kafka returns them; dead letters carry them over."""
    epoch: int = 0
    """Its partition's assignment when it was tracked: a settlement from an older one is void."""
    size: int = 0
    """Its bytes in the buffer account until it settles."""

    def origin(self) -> tuple[tuple[str, int], int]:
        """Its partition and its size in the buffer (for the stalled-account isolation)."""
        return (self.topic, self.partition), self.size


class Signal(IntFlag):
    """Matching signals an event carries (for identifier coverage and resilience status)."""

    NONE = 0
    IP_AND_USER_AGENT = 1
    EMAIL = 2
    HASHED_MAIDS = 4
    EXTERNAL_ID = 8
    CLICK_ID = 16


class PinterestEvent(NamedTuple):
    """A validated, hashed Pinterest event, already encoded as the spec's JSON object.

    `body` is exactly what goes into the request's `data` array, so a batch is encoded by joining
    bodies and its byte size is known without re-serialising. Immutable like the frozen
    dataclasses between the other stages, at a quarter of their construction cost (one per
    event: benchmarks/bench_bookkeeping.py).
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
