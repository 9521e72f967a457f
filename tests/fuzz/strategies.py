"""Hypothesis strategies for hostile Kafka messages: bytes, deep JSON, huge and odd strings,
and real generated messages with a wrong-typed value planted at a random place."""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

import orjson
from hypothesis import strategies as st

from traffic.generator import ClickstreamGenerator

# Kafka's default limit is 1 MB per message; stay under it with room for the key.
HUGE = 600_000
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
