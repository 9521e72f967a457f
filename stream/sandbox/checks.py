"""Checks a request body like Pinterest: schema errors fail the request, rule breaks fail one event.

The bundled `ConversionEvents` schema is compiled once into msgspec struct types, so decoding
and type checking happen together in C. Two decoders are built: a strict one whose hashed
`user_data` items must be 64 characters long, and a lenient one without that limit. For a batch
that passes the strict decoder, every hashed value is checked at once, in C, by joining them and
parsing the result as hex; only a batch that fails that (or the strict decoder) pays for the
per-event Python check that finds which events carry a bad hash. The lenient decoder tells a
malformed request (400) from a batch in which some events carry a bad hash (those events
fail, the others are processed).

Deliberate departures from a plain JSON Schema validator, following Pinterest's behaviour:
- the `user_data` `anyOf` (em, or hashed_maids, or IP + user agent) is a per-event rule,
  checked by `evaluate`, not a reason to refuse the whole request;
- OpenAPI's `nullable: true` admits `null`.
"""

from __future__ import annotations

import itertools
import operator
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from stream.spec import ACTION_SOURCES, EVENT_NAMES, HASHED_FIELDS, schema
from stream.spec.compiled import StructCompiler

MAX_AGE_S: Final = 7 * 24 * 3600
# Clocks of sender and Pinterest are never exactly in step; five minutes (the forwarder's own
# limit in stream/validate.py) covers ordinary drift while still catching milliseconds sent as
# seconds.
FUTURE_TOLERANCE_S: Final = 300

_USER_DATA_SCHEMA: Final = "ConversionEventsUserDataProperties"
_HASH_OK: Final = re.compile("[0-9a-f]{64}").fullmatch
_HEX64_LIST: Final = list[Annotated[str, Meta(min_length=64, max_length=64)]]


def compile_events_type(strict_hashes: bool = False) -> Any:
    """The msgspec type of a whole `ConversionEvents` request body."""
    root = schema("ConversionEvents")
    overrides = {(_USER_DATA_SCHEMA, field): _HEX64_LIST for field in HASHED_FIELDS}
    # user_data's anyOf (its identifier rule) is checked per event by `evaluate`.
    compiler = StructCompiler(
        root["definitions"], nested_any_of=True, overrides=overrides if strict_hashes else None
    )
    return compiler.type_of(root, "ConversionEvents")


@dataclass(frozen=True, slots=True)
class Decoded:
    """A schema-valid body: `events` are msgspec structs; `hashes_checked` if all were 64-hex."""

    events: list[Any]
    hashes_checked: bool


@dataclass(frozen=True, slots=True)
class RequestInvalid:
    """Why the whole request is refused (HTTP 400); names the path, never a value."""

    message: str


class BodyChecker:
    """Decodes and schema-checks request bodies; build once, use for every request."""

    def __init__(self) -> None:
        self._strict = msgspec.json.Decoder(compile_events_type(strict_hashes=True))
        self._lenient = msgspec.json.Decoder(compile_events_type(strict_hashes=False))

    def events_of(self, body: bytes) -> list[Any]:
        """The events of a body that `decode` already accepted."""
        events: list[Any] = self._lenient.decode(body).data
        return events

    def decode(self, body: bytes) -> Decoded | RequestInvalid:
        try:
            events: list[Any] = self._strict.decode(body).data
        except msgspec.DecodeError:
            pass
        else:
            return Decoded(events, hashes_checked=all_hashes_hex(events))
        try:
            return Decoded(self._lenient.decode(body).data, hashes_checked=False)
        except msgspec.ValidationError as exc:
            return RequestInvalid(f"Invalid request: {exc}")
        except msgspec.DecodeError:
            return RequestInvalid("Invalid request: the body is not valid JSON")


_user_data_of: Final = operator.attrgetter("user_data")
_hashed_fields_of: Final = operator.attrgetter(*HASHED_FIELDS)
_email_or_maid_of: Final = operator.attrgetter("em", "hashed_maids")
_ip_and_user_agent_of: Final = operator.attrgetter("client_ip_address", "client_user_agent")
_time_of: Final = operator.attrgetter("event_time")
_source_of: Final = operator.attrgetter("action_source")
_name_of: Final = operator.attrgetter("event_name")
_external_id_of: Final = operator.attrgetter("external_id")
# Pinterest's own words for the notes it attaches to processed events (seen live, see
# reference/pinterest-capi-notes.md): a missing external_id, a non-standard event name.
EXTERNAL_ID_MISSING: Final = "external_id is missing. We highly recommend this on all events."

# The batch checks below run entirely in C iterators (map, filter, chain over attrgetters):
# a Python loop over a thousand events would cost more than decoding them.


def all_hashes_hex(events: list[Any]) -> bool:
    """True if every hashed value of these events, each known to be 64 long, is lowercase hex.

    A non-hex character makes `bytes.fromhex` fail; whitespace (which it skips) or upper case
    makes the round trip through `hex()`, which writes lowercase, differ.
    """
    joined = "".join(
        itertools.chain.from_iterable(
            filter(
                None,
                itertools.chain.from_iterable(map(_hashed_fields_of, map(_user_data_of, events))),
            )
        )
    )
    try:
        return bytes.fromhex(joined).hex() == joined
    except ValueError:
        return False


def all_pass(events: list[Any], now: int, hashes_checked: bool) -> bool:
    """True if `evaluate` would pass every event and none needs a warning (batch fast path)."""
    times = list(map(_time_of, events))
    if min(times) < now - MAX_AGE_S or max(times) > now + FUTURE_TOLERANCE_S:
        return False
    if not set(map(_source_of, events)) <= ACTION_SOURCES:
        return False
    if not set(map(_name_of, events)) <= EVENT_NAMES:
        return False
    user_data = list(map(_user_data_of, events))
    if not all(map(_external_id_of, user_data)):
        return False  # those events get a warning
    identified = map(
        operator.or_,
        map(any, map(_email_or_maid_of, user_data)),
        map(all, map(_ip_and_user_agent_of, user_data)),
    )
    return hashes_checked and all(identified)


def identifiers_missing(user_data: Any) -> bool:
    """True when none of em, hashed_maids, or IP + user agent is present (UNSET is falsy)."""
    return not (
        user_data.em
        or user_data.hashed_maids
        or (user_data.client_ip_address and user_data.client_user_agent)
    )


def bad_hash_field(user_data: Any) -> str | None:
    """The first hashed field with an item that is not a lowercase SHA-256 hex digest."""
    for field in HASHED_FIELDS:
        values = getattr(user_data, field)
        if values:
            for index, value in enumerate(values):
                if not _HASH_OK(value):
                    return f"{field}[{index}]"
    return None


def evaluate(event: Any, now: int, hashes_checked: bool) -> tuple[str, str] | None:
    """Pinterest's per-event rules: `(reason, error_message)` if the event fails, else None.

    Reasons are short stable keys for the sandbox's counters; messages follow Pinterest's
    wording where it is known and never echo user data.
    """
    event_time = event.event_time
    if event_time > now + FUTURE_TOLERANCE_S:
        return (
            "event_time_future",
            "Invalid event_timestamp parameter. Given timestamp is in the future. "
            f"Current timestamp: {now}, Given event_timestamp: {event_time}",
        )
    if event_time < now - MAX_AGE_S:
        return (
            "event_time_too_old",
            "Invalid event_timestamp parameter. Given timestamp is in the past. "
            f"Current timestamp: {now}, Given event_timestamp: {event_time}",
        )
    if event.action_source not in ACTION_SOURCES:
        return (
            "action_source",
            "Invalid action_source parameter. Use one of app_android, app_ios, web, offline.",
        )
    user_data = event.user_data
    if identifiers_missing(user_data):
        return (
            "identifiers_missing",
            "user_data must contain em, hashed_maids, or both client_ip_address and "
            "client_user_agent.",
        )
    if not hashes_checked:
        field = bad_hash_field(user_data)
        if field is not None:
            return (
                "hash_invalid",
                f"Invalid user_data.{field}: expected a lowercase SHA-256 hex digest.",
            )
    return None


def warning_for(event: Any) -> str:
    """Pinterest's non-blocking notes for an event, `; `-separated, or "" (as Pinterest sends
    when there are none)."""
    notes = []
    if not event.user_data.external_id:
        notes.append(EXTERNAL_ID_MISSING)
    if event.event_name not in EVENT_NAMES:
        notes.append(f"Event name {event.event_name!r} is labeled as an 'Unknown' event.")
    return "; ".join(notes)
