"""Turns one Conversions API answer into per-event outcomes or a request-level classification."""

from __future__ import annotations

import email.utils
import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from stream.dlq.contract import DeadLetterReason
from stream.retry import RetryReason
from stream.spec import HASHED_FIELDS

ErrorKind = Literal["timeout", "connection"]

MAX_API_MESSAGE_CHARS = 300
"""Pinterest's messages are kept to this length in dead letters and logs."""
OTHER_WARNING = "other"
# Distinct warning notes whose outcome is kept: Pinterest's notes repeat (a missing field, an
# unknown event name), so a few dozen cover a stream.
WARNING_OUTCOMES_CACHED = 256
# Fields whose absence Pinterest warns about ("external_id is missing. We highly recommend…").
_MISSABLE = frozenset(
    {*HASHED_FIELDS, "click_id", "client_ip_address", "client_user_agent", "event_source_url"}
)
WARNINGS: tuple[str, ...] = (
    *sorted(f"{field}_missing" for field in _MISSABLE),
    "unknown_event_name",
    OTHER_WARNING,
)
_MISSING = re.compile(r"\b([a-z_]+) is missing")
_WINDOW = re.compile(r";\s*w=([0-9]+(?:\.[0-9]+)?)")
# Beyond this an x-ratelimit-reset value is an absolute Unix time, not a number of seconds.
EPOCH_THRESHOLD = 1_000_000_000


class AnswerKind(enum.Enum):
    """What an answer means for the events of the request, and what that implies.

    `retriable`: sending the same request again may succeed on its own (it also counts as
    congestion); `setup_error`: a token or account problem that pauses the account and never
    dead-letters; `dead_letter_reason`: what an event is dead-lettered as when this answer is
    final for it (failed per event, retries exhausted, or refused alone), None if never.
    """

    retriable: bool
    setup_error: bool
    dead_letter_reason: DeadLetterReason | None

    EVENTS = ("events", False, False, "rejected_by_pinterest")
    """Read per event: processed ones are delivered, failed ones dead-lettered."""
    RETRY = ("retry", True, False, "retries_exhausted")
    """Nothing settled: try again (after `retry_after` if the server said so)."""
    SETUP_ERROR = ("setup_error", False, True, None)
    """Token or account problem: pause the account, never dead-letter."""
    REQUEST_INVALID = ("request_invalid", False, False, "request_invalid")
    """The request as a whole was refused: bisect it down to the offending events."""

    def __init__(
        self,
        _label: str,
        retriable: bool,
        setup_error: bool,
        dead_letter_reason: DeadLetterReason | None,
    ) -> None:
        self.retriable = retriable
        self.setup_error = setup_error
        self.dead_letter_reason = dead_letter_reason


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """What came back for one request: an HTTP answer, or a transport error without one."""

    status: int | None
    body: bytes = b""
    headers: Mapping[str, str] | None = None
    error: ErrorKind | None = None


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """Pinterest's verdict on one event of the request, in request order."""

    processed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()
    """Short names (`WARNINGS`) of Pinterest's `warning_message` notes on a processed event."""


# Immutable, so every processed event of every response can share one (no per-event object).
PROCESSED = EventOutcome(True)

# A processed event's item without a note: Pinterest sends the messages as "", null or not at all
# (pinterest-capi-notes §13); the first is what it and the sandbox send today.
_NO_ERROR: tuple[dict[str, str | None], ...] = ({"error_message": ""}, {"error_message": None}, {})
_NO_WARNING: tuple[dict[str, str | None], ...] = (
    {"warning_message": ""},
    {"warning_message": None},
    {},
)
_CLEAN_ITEMS = tuple(
    {"status": "processed", **error, **warning} for error in _NO_ERROR for warning in _NO_WARNING
)


@dataclass(frozen=True, slots=True)
class Classification:
    """One answer, classified: its kind, and what the dispatcher needs to act on it."""

    kind: AnswerKind
    status: int | None
    outcomes: tuple[EventOutcome, ...] = ()
    reason: RetryReason | None = None
    message: str = ""
    retry_after: float | None = None
    exhausted_for: float | None = None
    """Set when x-ratelimit-remaining says the window is used up: seconds until it resets."""
    server_limit: float | None = None
    """Pinterest's x-ratelimit-limit (requests per window), when the answer carried it."""


def classify(response: ApiResponse, sent: int, now: float) -> Classification:
    """Classifies the answer to a request that carried `sent` events; `now` is Unix time."""
    status = response.status
    if response.error is not None or status is None:
        reason: RetryReason = "timeout" if response.error == "timeout" else "connection_error"
        return Classification(
            AnswerKind.RETRY, None, reason=reason, message=reason.replace("_", " ")
        )
    payload = _json(response.body)
    message = _message(payload)
    if 200 <= status < 300:
        outcomes = _outcomes(payload, sent)
        if outcomes is None:
            return Classification(
                AnswerKind.RETRY, status, reason="bad_response", message="unreadable response"
            )
        return Classification(
            AnswerKind.EVENTS,
            status,
            outcomes,
            exhausted_for=_exhausted_for(response, now),
            server_limit=_server_limit(response),
        )
    if status == 422:
        details = payload.get("details") if isinstance(payload, dict) else None
        outcomes = _outcomes(details, sent)
        if outcomes is None:
            outcomes = (EventOutcome(False, message or "rejected"),) * sent
        return Classification(AnswerKind.EVENTS, status, outcomes, message=message)
    if status in (401, 403, 404):
        return Classification(AnswerKind.SETUP_ERROR, status, message=message or f"HTTP {status}")
    if status == 429:
        hint = retry_after(response.headers or {}, now)
        return Classification(
            AnswerKind.RETRY,
            status,
            reason="rate_limited",
            message=message,
            retry_after=hint,
            server_limit=_server_limit(response),
        )
    if status == 408:
        return Classification(
            AnswerKind.RETRY, status, reason="timeout", message=message or "HTTP 408"
        )
    if status >= 500:
        hint = retry_after(response.headers or {}, now)
        return Classification(
            AnswerKind.RETRY, status, reason="server_error", message=message, retry_after=hint
        )
    if 400 <= status < 500:
        return Classification(
            AnswerKind.REQUEST_INVALID, status, message=message or f"HTTP {status}"
        )
    return Classification(AnswerKind.RETRY, status, reason="bad_response", message=f"HTTP {status}")


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from Retry-After, else x-ratelimit-reset; None when neither is usable."""
    lowered = {name.lower(): value for name, value in headers.items()}
    value = lowered.get("retry-after")
    if value is not None:
        seconds = _number(value)
        if seconds is None:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError, IndexError):
                seconds = None
        if seconds is not None:
            return max(seconds, 0.0)
    reset = _number(lowered.get("x-ratelimit-reset", "").split(",")[0])
    if reset is None:
        return None
    return max(reset - now if reset > EPOCH_THRESHOLD else reset, 0.0)


def _server_limit(response: ApiResponse) -> float | None:
    """x-ratelimit-limit per minute: `120000, 120000;w=60;name="…"` (RFC draft form, the window
    in seconds after `w=`) or a bare number (per minute)."""
    for name, value in (response.headers or {}).items():
        if name.lower() == "x-ratelimit-limit":
            limit = _number(value.split(",")[0])
            window = _WINDOW.search(value)
            if limit is not None and window is not None and float(window.group(1)) > 0:
                return limit * 60.0 / float(window.group(1))
            return limit
    return None


def _exhausted_for(response: ApiResponse, now: float) -> float | None:
    headers = {name.lower(): value for name, value in (response.headers or {}).items()}
    remaining = _number(headers.get("x-ratelimit-remaining", "").split(",")[0])
    if remaining is None or remaining > 0:
        return None
    return retry_after({"x-ratelimit-reset": headers.get("x-ratelimit-reset", "")}, now)


def _outcomes(payload: Any, sent: int) -> tuple[EventOutcome, ...] | None:
    if not isinstance(payload, dict):
        return None
    events = payload.get("events")
    if not isinstance(events, list) or len(events) != sent:
        return None
    # The usual answer, every event processed without a note, is recognised by C-level counting:
    # no Python per event (benchmarks/bench_bookkeeping.py, classify).
    if sent and events[0] in _CLEAN_ITEMS and events.count(events[0]) == sent:
        return (PROCESSED,) * sent
    outcomes: list[EventOutcome] = []
    append = outcomes.append
    for item in events:
        if type(item) is not dict:
            return None
        status = item.get("status")
        if status == "processed":
            note = item.get("warning_message")
            append(_warned_outcome(note) if note and type(note) is str else PROCESSED)
        elif status == "failed":
            text = item.get("error_message")
            append(EventOutcome(False, _clip(text) if text else "failed"))
        else:
            return None
    return tuple(outcomes)


@functools.lru_cache(maxsize=WARNING_OUTCOMES_CACHED)
def _warned_outcome(note: str) -> EventOutcome:
    """The outcome of a processed event with this note: Pinterest repeats a few notes for most
    events of an answer, so each is parsed once, not per event (benchmarks/bench_bookkeeping)."""
    return EventOutcome(True, _clip(note), warning_names(note))


def warning_names(text: str) -> tuple[str, ...]:
    """Pinterest's free-text warning as short, bounded names (one per `;`-separated note):
    `<field>_missing` for a spec field, `unknown_event_name`, else `other`."""
    names = []
    for note in text.split(";"):
        missing = _MISSING.search(note)
        if missing is not None and missing.group(1) in _MISSABLE:
            names.append(f"{missing.group(1)}_missing")
        elif "'Unknown' event" in note:
            names.append("unknown_event_name")
        elif note.strip():
            names.append(OTHER_WARNING)
    return tuple(names)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _message(payload: Any) -> str:
    if isinstance(payload, dict):
        text = payload.get("message")
        if isinstance(text, str) and text:
            return _clip(text)
    return ""


def _clip(text: object) -> str:
    return str(text)[:MAX_API_MESSAGE_CHARS]


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None
