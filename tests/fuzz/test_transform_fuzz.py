"""Hostile messages through `transform`: never a crash, always an event, a reasoned dead letter
or a skip, and nothing raw from the input in a dead letter's message."""

from __future__ import annotations

import time

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.dlq.contract import DEAD_LETTER_REASONS
from stream.models import DeadLetter, PinterestEvent, Skipped
from stream.settings import Settings
from stream.transform import MAX_MESSAGE_CHARS, Transformer
from stream.validate import event_problem
from tests.fuzz.strategies import hostile_message

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def transformer() -> tuple[Transformer, Settings]:
    config = Settings(
        pinterest={"ad_account_id": "1"},
        sources=[{"topic": "web"}, {"topic": "crm", "format": "pinterest"}],
    )
    return Transformer(config, time.time), config


def check(value: bytes, crm: bool) -> None:
    engine, config = transformer()
    result = engine.transform(config.sources[1 if crm else 0], value, int(time.time() * 1000))
    if isinstance(result, DeadLetter):
        assert result.reason in DEAD_LETTER_REASONS
        assert len(result.message) <= MAX_MESSAGE_CHARS
        assert "@example" not in result.message.lower(), "no raw email in a dead letter"
    elif isinstance(result, PinterestEvent):
        body = orjson.loads(result.body)
        assert event_problem(body) is None
        for field in ("em", "ph", "fn", "ln"):
            for digest in body["user_data"].get(field, []):
                assert len(digest) == 64
                assert int(digest, 16) >= 0
    else:
        assert isinstance(result, Skipped)


@SETTINGS
@given(value=hostile_message())
def test_hostile_segment_messages(value: bytes) -> None:
    check(value, crm=False)


@SETTINGS
@given(value=hostile_message(crm=True))
def test_hostile_pinterest_format_messages(value: bytes) -> None:
    check(value, crm=True)


@settings(max_examples=50, deadline=None)
@given(value=st.binary(min_size=1, max_size=64))
def test_random_bytes_prefixed_to_valid_json_are_decode_errors_or_events(value: bytes) -> None:
    check(value + b'{"type": "page"}', crm=False)
