"""The compiled checker agrees with the official schema (via fastjsonschema) and adds the rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings

from stream.validate import MAX_AGE_S, check_event, check_rules, event_problem
from tests.unit.spec_cases import MUTATIONS, NOW, official_accepts, random_edits, rich_event


def test_a_complete_event_is_valid_for_both() -> None:
    event = rich_event()
    assert official_accepts(event)
    assert check_event(event) is None
    assert check_event(event) is None  # second pass goes through the shape cache


@pytest.mark.parametrize(("name", "mutate"), MUTATIONS, ids=[name for name, _ in MUTATIONS])
def test_deliberately_wrong_events_fail_both(
    name: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    check_event(rich_event())  # warm the shape cache so the cached path is exercised
    event = rich_event()
    mutate(event)
    assert not official_accepts(event), name
    assert check_event(event) is not None


def test_problem_names_the_path_not_the_value() -> None:
    event = rich_event()
    event["custom_data"]["contents"][1]["item_price"] = 99.5
    assert event_problem(event) == ("custom_data.contents[1].item_price", "expected string")


def test_nullable_fields_accept_null_like_the_spec() -> None:
    event = rich_event()
    event["event_source_url"] = None
    assert official_accepts(event)
    assert check_event(event) is None


@settings(max_examples=400, deadline=None)
@given(event=random_edits())
def test_agrees_with_the_official_schema_on_random_edits(event: dict[str, Any]) -> None:
    assert (check_event(event) is None) == official_accepts(event)


def test_rules_beyond_the_schema() -> None:
    event = rich_event()
    assert check_rules(event, NOW) is None
    assert check_rules({**event, "event_time": NOW - MAX_AGE_S - 1}, NOW).reason == "too_old"  # type: ignore[union-attr]
    future = check_rules({**event, "event_time": NOW + 301}, NOW)
    assert future is not None
    assert future.reason == "invalid_event"
    assert check_rules({**event, "event_time": NOW + 299}, NOW) is None
    assert check_rules({**event, "event_name": "purchase"}, NOW) is not None
    assert check_rules({**event, "action_source": "email"}, NOW) is not None
    assert check_rules({**event, "event_id": ""}, NOW) is not None
