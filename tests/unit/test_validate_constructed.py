"""The construction check of Segment events agrees with the full encoded check and the official
schema on everything the Segment mapper builds, from generated, mutated and hostile messages."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings

from stream.errors import InvalidMessage
from stream.formats.segment import SegmentMapper
from stream.hashing import Hasher
from stream.models import Skipped
from stream.settings import SourceSettings
from stream.validate import constructed_checker, encoded_checker, event_problem
from tests.fuzz.strategies import hostile_message, paths_in
from tests.unit.spec_cases import official_accepts
from traffic.generator import ClickstreamGenerator

NOW = 1_800_000_000.0
MAPPER = SegmentMapper(SourceSettings(topic="t"), Hasher())
# Values planted at random places of real messages: every JSON type, and the strings that
# normalization treats specially.
PLANTED: tuple[Any, ...] = (
    None,
    True,
    0,
    -7,
    2.5,
    1e300,
    "",
    " ",
    "x",
    "A" * 64,
    [],
    ["a@example.com", ""],
    [3, None],
    {},
    {"city": "Paris", "country": "fr"},
    "2027-01-15T08:00:00.000Z",
)


def _mapped(value: bytes) -> dict[str, Any] | None:
    try:
        mapped = MAPPER.map(value, int(NOW * 1000))
    except (InvalidMessage, RecursionError):
        return None
    return None if isinstance(mapped, Skipped) else mapped[0]


def assert_agrees(event: dict[str, Any]) -> None:
    for flagged in (False, True):
        if flagged:  # what the source's opt_out and ldp rules add
            event["opt_out"] = True
            event.setdefault("custom_data", {})["opt_out_type"] = "LDP"
        try:
            body = orjson.dumps(event)
        except TypeError:  # integers beyond 64 bits: the Transformer dead-letters these
            return
        verdict = constructed_checker()(event)
        assert verdict == encoded_checker()(body, event)
        assert verdict == event_problem(event)
        assert (verdict is None) == official_accepts(event)


def _generated() -> list[bytes]:
    values = []
    for mix in ("realistic", "order_completed", "page"):
        generator = ClickstreamGenerator(11, now=lambda: NOW, poison_ratio=0.1, mix=mix)
        values += [m.value for m in generator.messages(400)]
    return values


def test_agrees_on_generated_messages() -> None:
    events = [event for event in map(_mapped, _generated()) if event is not None]
    assert len(events) > 1000
    for event in events:
        assert_agrees(event)


def test_agrees_on_messages_with_values_planted_anywhere() -> None:
    rng = random.Random(5)
    messages = [orjson.loads(value) for value in _generated()[:300] if value.endswith(b"}")]
    refused = accepted = 0
    for _ in range(3000):
        message = orjson.loads(orjson.dumps(rng.choice(messages)))
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(paths_in(message))
            target = message
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = orjson.loads(orjson.dumps(rng.choice(PLANTED)))
        event = _mapped(orjson.dumps(message))
        if event is not None:
            assert_agrees(event)
            if constructed_checker()(event) is None:
                accepted += 1
            else:
                refused += 1
    # Both answers occur, so the agreement is not vacuous.
    assert accepted > 100
    assert refused > 10


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(value=hostile_message())
def test_agrees_on_hostile_messages(value: bytes) -> None:
    event = _mapped(value)
    if event is not None:
        assert_agrees(event)
