"""The msgspec check of an encoded event agrees with the closure checker and the official schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings

from stream.validate import encoded_checker, event_problem
from tests.unit.spec_cases import MUTATIONS, official_accepts, random_edits, rich_event


def encoded_problem(event: Any) -> Any:
    return encoded_checker()(orjson.dumps(event), event)


def test_a_complete_event_passes() -> None:
    assert encoded_problem(rich_event()) is None


@pytest.mark.parametrize(("name", "mutate"), MUTATIONS, ids=[name for name, _ in MUTATIONS])
def test_wrong_events_fail_with_the_closures_problem(
    name: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    event = rich_event()
    mutate(event)
    problem = encoded_problem(event)
    assert problem is not None, name
    assert problem == event_problem(event)


def test_identifier_rule_is_checked() -> None:
    event = rich_event()
    event["user_data"] = {"ph": ["a" * 64], "client_user_agent": "Mozilla/5.0"}
    assert encoded_problem(event) == ("user_data", event_problem(event)[1])  # type: ignore[index]


@settings(max_examples=400, deadline=None)
@given(event=random_edits())
def test_agrees_with_the_official_schema_on_random_edits(event: dict[str, Any]) -> None:
    try:
        body = orjson.dumps(event)
    except TypeError:  # integers beyond 64 bits: never produced by decoding JSON
        return
    verdict = encoded_checker()(body, event)
    assert (verdict is None) == official_accepts(event)
    assert verdict == event_problem(event)


def test_an_integral_float_in_an_integer_field_is_refused_where_json_schema_would_allow_it() -> (
    None
):
    # Pinterest's integer fields get integers: a float 2.0 would reach its servers as `2.0`.
    event = rich_event()
    event["custom_data"]["num_items"] = 2.0
    assert official_accepts(event)
    verdict = encoded_checker()(orjson.dumps(event), event)
    assert verdict is not None
    assert verdict[0] == "custom_data.num_items"
