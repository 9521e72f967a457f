"""The dead-letter contract of DESIGN §4: the reasons and the header names, defined once."""

from __future__ import annotations

from typing import Final, Literal, get_args

DeadLetterReason = Literal[
    "decode_error",
    "invalid_event",
    "mapping_error",
    "too_old",
    "rejected_by_pinterest",
    "request_invalid",
    "retries_exhausted",
]
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = get_args(DeadLetterReason)

REASON: Final = "capi.error.reason"
MESSAGE: Final = "capi.error.message"
SOURCE_TOPIC: Final = "capi.source.topic"
SOURCE_PARTITION: Final = "capi.source.partition"
SOURCE_OFFSET: Final = "capi.source.offset"
HTTP_STATUS: Final = "capi.http.status"
ATTEMPTS: Final = "capi.attempts"
FAILED_AT: Final = "capi.failed_at"
REPLAYED: Final = "capi.replayed"
REPLAYED_FROM: Final = "capi.replayed_from"
VALUE_TRUNCATED: Final = "capi.value.truncated"
VALUE_BYTES: Final = "capi.value.bytes"
VALUE_SHA256: Final = "capi.value.sha256"
TRUNCATED: Final = b"true"
"""The value of `capi.value.truncated` on a dead letter whose value was cut to fit its topic."""

ERROR_HEADERS: Final = frozenset(
    {
        REASON,
        MESSAGE,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        HTTP_STATUS,
        ATTEMPTS,
        FAILED_AT,
    }
)
"""The headers that describe one failure. A message carrying copies of them from an earlier
failure (it was replayed) gets them replaced when it fails again, and drops them when replayed;
every other header, `capi.replayed` included, is carried over so the message keeps its history."""

TRUNCATION_HEADERS: Final = frozenset({VALUE_TRUNCATED, VALUE_BYTES, VALUE_SHA256})
"""Set only on a dead letter whose value was cut to fit the dead-letter topic: the original
value's size in bytes (decimal) and SHA-256 (lowercase hex). They describe that one dead letter,
so the producer never copies them over from the message that failed."""
