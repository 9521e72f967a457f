"""The contract of an input format: a mapper turns one message's bytes into a Pinterest event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

from stream.hashing import Hasher
from stream.models import Skipped
from stream.settings import SourceSettings

MAX_CONTENTS: Final = 1000
"""DESIGN §4: a format keeps at most this many `contents` items per message and counts what it
drops in `Hasher.truncated["contents"]` (the hasher is what every mapper shares)."""

Mapped: TypeAlias = tuple[dict[str, Any], Mapping[str, Any], str | None]
"""A mapped message: the event object, the decoded message and the message's own ad account.

The event object holds spec keys only, no nulls and no empty containers, with `user_data` already
hashed. The decoded message is what a source's `ldp` and `opt_out` rules read (their dotted paths
point into it). The ad account is None unless the message routes itself; the source's applies then.
A plain tuple: it is built once per message, where a dataclass would cost measurably more.
"""


@dataclass(frozen=True, slots=True)
class Identified:
    """A message that is not sent but tells who the user is (a Segment `identify`), returned only
    to sources with `enrich: identity`: its hashed `user_data`, the decoded message (for the
    identity keys and the privacy rules) and its time."""

    user_data: Mapping[str, Any]
    message: Mapping[str, Any]
    event_time: int
    opt_out: bool


class Mapper(Protocol):
    """Maps the messages of one source; built once per source by the format's `MapperFactory`.

    `map` decodes the bytes itself (JSON formats call `stream.decode.decode_json_object`), so a
    format is free to read any encoding. A message that cannot become an event raises
    `InvalidMessage` with a reason and a text naming fields, never values; a message the format
    deliberately ignores returns a `Skipped` (or, for an enriching source, an `Identified` when
    it names the user's identifiers). Anything else it raises is dead-lettered as a
    `mapping_error`, so a mapper bug costs one message, never the stream.
    """

    @property
    def spec_typed(self) -> bool:
        """True if `map` builds only spec keys with spec types, so the cheaper construction check
        suffices; False if it passes message values through, so the encoded bytes are checked
        against the schema."""
        ...

    def map(self, value: bytes, kafka_timestamp_ms: int | None) -> Mapped | Skipped | Identified:
        """The event for one message's value (never None: the caller dead-letters tombstones)."""
        ...


@runtime_checkable
class Normalizing(Protocol):
    """A mapper that also counts the message shapes it normalized instead of dead-lettering
    them, per kind (a bounded set): `capi_stream_normalized_total{what}` sums them at scrape
    time, so counting costs the hot path one dict add."""

    @property
    def normalized(self) -> Mapping[str, int]:
        """Messages normalized so far, per kind."""
        ...


MapperFactory: TypeAlias = Callable[[SourceSettings, Hasher], Mapper]
"""Builds a source's mapper from its settings and the hasher shared by every source.

Raises `ConfigurationError` naming the key if the source's settings do not suit the format.
"""
