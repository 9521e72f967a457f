"""Hypothesis strategies for hostile Kafka messages: bytes, deep JSON, huge and odd strings,
real generated messages with a wrong-typed value planted at a random place, arrays of 10^4 to
10^5 items, messages close to 1 MiB on either side of `kafka.max_message_bytes`, and
pinterest-format messages naming an ad account that is not configured."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Collection
from functools import cache
from typing import Any

import orjson
from hypothesis import strategies as st

from traffic.generator import ClickstreamGenerator

# Kafka's default limit is 1 MB per message; stay under it with room for the key.
HUGE = 600_000
MIB = 1024 * 1024
# Messages close to `kafka.max_message_bytes` (default 1 MiB), on both sides of it. Topics that
# carry them need a larger max.message.bytes than the broker's default (1,048,588).
NEAR_LIMIT = st.integers(MIB - 4096, MIB + 4096)
SOURCE_TOPIC_MAX_BYTES = 4 * MIB
# Distinct values in one array: 10^5 short emails make about 1.3 MB, products about 1.5 MB.
LARGE_ITEMS = st.integers(10_000, 100_000)
UNICODE_EDGES = (
    "\\ud800",  # a lone surrogate, as JSON escapes it
    "\u0000",
    "\u202e",  # right-to-left override
    "\u200d",
    "e\u0301",  # combining accent
    "İ",  # lower() changes its length
    "\uff11\uff12\uff13\uff14",  # fullwidth digits
    "🤖" * 3,
    "\ufeff",
    "ß",
)
WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from(UNICODE_EDGES),
    st.text(max_size=30),
)


@cache
def valid_messages() -> list[dict[str, Any]]:
    now = time.time()
    generated = ClickstreamGenerator(31, now=lambda: now, poison_ratio=0.0).messages(60)
    return [orjson.loads(m.value) for m in generated if m.kind == "valid"]


def _crm_message() -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "action_source": "offline",
        "event_time": int(time.time()) - 3600,
        "event_id": "crm-1",
        "user_data": {"em": ["a@example.com"], "ph": ["+44 20 7946 0000"], "fn": ["Ada"]},
        "custom_data": {"currency": "EUR", "value": "10.00", "contents": [{"quantity": 1}]},
    }


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path below `value`, at any depth."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_in(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_in(item, (*prefix, index))
    return found


def _planted(message: dict[str, Any], path: tuple[Any, ...], value: Any) -> bytes:
    copy = orjson.loads(orjson.dumps(message))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    # The stdlib encoder takes integers beyond 64 bits, which orjson refuses.
    return json.dumps(copy, ensure_ascii=False).encode().replace(b'"\\\\ud800"', b'"\\ud800"')


@st.composite
def wrong_type_somewhere(draw: st.DrawFn, crm: bool = False) -> bytes:
    """A real message with one field (at any depth) replaced by a value of another type."""
    message = _crm_message() if crm else draw(st.sampled_from(valid_messages()))
    path = draw(st.sampled_from(paths_in(message)))
    return _planted(message, path, draw(WRONG_VALUES))


@st.composite
def huge_string(draw: st.DrawFn) -> bytes:
    message = draw(st.sampled_from(valid_messages()))
    path = draw(st.sampled_from([p for p in paths_in(message) if isinstance(p[-1], str)]))
    return _planted(message, path, draw(st.sampled_from(("x", "é", "🤖"))) * (HUGE // 4))


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(50, 5000))
    opener, closer = draw(st.sampled_from(((b'{"a":', b"}"), (b"[", b"]"))))
    inner = opener * depth + b"1" + closer * depth
    return b'{"type":"track","event":"Order Completed","properties":' + inner + b"}"


def hostile_message(crm: bool = False) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        deep_json(),
        huge_string(),
        wrong_type_somewhere(crm=crm),
        wrong_type_somewhere(crm=crm),
        st.sampled_from(UNICODE_EDGES).map(lambda s: orjson.dumps({"type": "page", "userId": s})),
    )


def distinct_emails(count: int, tag: str = "u") -> list[str]:
    """`count` different short addresses (about 12 bytes each)."""
    return [f"{tag}{i:x}@x.io" for i in range(count)]


@st.composite
def large_array(draw: st.DrawFn, crm: bool = False) -> bytes:
    """A valid message with 10^4 to 10^5 distinct emails, phones or products."""
    count = draw(LARGE_ITEMS)
    what = draw(st.sampled_from(("emails", "phones", "products")))
    if crm:
        message = _crm_message()
        if what == "products":
            contents = [{"id": f"{i:x}", "quantity": 1} for i in range(count)]
            message["custom_data"]["contents"] = contents
        elif what == "phones":
            message["user_data"]["ph"] = [f"+1 628 {i:07d}" for i in range(count)]
        else:
            message["user_data"]["em"] = distinct_emails(count)
        return orjson.dumps(message)
    message = orjson.loads(orjson.dumps(draw(st.sampled_from(valid_messages()))))
    if what == "products":
        message.update(type="track", event="Order Completed")
        message.setdefault("properties", {})["products"] = [{"sku": f"{i:x}"} for i in range(count)]
    else:
        traits = message.setdefault("context", {}).setdefault("traits", {})
        if what == "phones":
            traits["phone"] = [f"+1 628 {i:07d}" for i in range(count)]
        else:
            traits["email"] = distinct_emails(count)
    return orjson.dumps(message)


@st.composite
def near_limit(draw: st.DrawFn, crm: bool = False) -> bytes:
    """Exactly `NEAR_LIMIT` bytes: a valid message padded with a long string (an ignored
    property, or one long email for the pinterest format), or bytes that are not JSON and do not
    compress (a dead letter of them must be cut to fit a smaller dead-letter topic)."""
    size = draw(NEAR_LIMIT)
    if draw(st.booleans()):
        return random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    if crm:
        message = _crm_message()
        message["user_data"]["em"] = ["@example.com"]
        padding = size - len(orjson.dumps(message))
        message["user_data"]["em"] = ["x" * padding + "@example.com"]
    else:
        message = orjson.loads(orjson.dumps(draw(st.sampled_from(valid_messages()))))
        properties = message.setdefault("properties", {})
        properties["notes"] = ""
        properties["notes"] = "x" * (size - len(orjson.dumps(message)))
    value = orjson.dumps(message)
    assert len(value) == size
    return value


def unknown_account(configured: Collection[str]) -> st.SearchStrategy[bytes]:
    """A valid pinterest-format message whose `ad_account_id` is well formed (1 to 18 digits,
    as a string or a number) but not one of `configured`."""
    accounts = st.from_regex(r"\A[1-9][0-9]{0,17}\Z", fullmatch=True).filter(
        lambda account: account not in configured
    )

    def message(account: str, as_number: bool) -> bytes:
        event = _crm_message() | {"ad_account_id": int(account) if as_number else account}
        return orjson.dumps(event)

    return st.builds(message, accounts, st.booleans())


class Blob:
    """A message shown by its size and first bytes, so that a failing example's report stays
    short (Hypothesis would otherwise print how it was built, megabytes included)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Blob({len(self.value):,} bytes: {self.value[:60]!r}...)"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        printer.text(repr(self))


def poison_message(crm: bool = False) -> st.SearchStrategy[Blob]:
    """The expensive kinds: huge arrays and messages near 1 MiB (draw few of them)."""
    return st.one_of(large_array(crm=crm), near_limit(crm=crm)).map(Blob)
