"""Hostile messages through `transform`: never a crash, always an event, a reasoned dead letter
or a skip, and nothing raw from the input in a dead letter's message; a message naming an ad
account that is not configured is never sent."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream.dlq.contract import DEAD_LETTER_REASONS
from stream.models import DeadLetter, PinterestEvent, Skipped
from stream.settings import Settings
from stream.transform import MAX_MESSAGE_CHARS, Transformer
from stream.validate import event_problem
from tests.fuzz.predict import Predictor
from tests.fuzz.strategies import Blob, hostile_message, poison_message, unknown_account

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Arrays of 10^4 to 10^5 items and messages of about 1 MiB: a few examples each. Each one is
# generated, mapped and checked in well under a second once per-message work is linear; while
# the Segment mapper de-duplicates in quadratic time, 10^5 emails take about a minute.
EXPENSIVE = settings(
    max_examples=4,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # shrinking megabytes is hopeless
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
CONFIGURED_ACCOUNT = "1"


def transformer() -> tuple[Transformer, Settings]:
    config = Settings(
        pinterest={"ad_account_id": CONFIGURED_ACCOUNT},
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


@pytest.mark.timeout(600)
@EXPENSIVE
@given(message=poison_message())
def test_huge_arrays_and_messages_near_1mib_in_segment_format(message: Blob) -> None:
    check(message.value, crm=False)


@EXPENSIVE
@given(message=poison_message(crm=True))
def test_huge_arrays_and_messages_near_1mib_in_pinterest_format(message: Blob) -> None:
    check(message.value, crm=True)


@settings(max_examples=100, deadline=None)
@given(value=unknown_account({CONFIGURED_ACCOUNT}))
def test_a_message_for_an_unconfigured_ad_account_is_an_invalid_event(value: bytes) -> None:
    check(value, crm=True)
    _engine, config = transformer()
    outcome = Predictor(config).outcome(config.sources[1], value, int(time.time() * 1000))
    assert (outcome.fate, outcome.reason) == ("dead_letter", "invalid_event")
    if outcome.event is not None:
        # Left to the dispatcher to refuse: the event still names the message's own account,
        # never the configured default it would otherwise be sent to.
        assert outcome.event.ad_account_id == str(orjson.loads(value)["ad_account_id"])
