"""The compiled checker agrees with the official schema (via fastjsonschema) and adds the rules."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.spec import schema
from stream.validate import MAX_AGE_S, check_event, check_rules, event_problem

NOW = 1_800_000_000
HEX = "a" * 64


def _as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema: `nullable` becomes a "null" type, and `required` next to a
    `$ref` (which plain JSON Schema ignores) is kept by moving the `$ref` into `allOf`."""
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _as_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "$ref" in out and len(set(out) - {"description", "title"}) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _official() -> Callable[[Any], Any]:
    root = _as_json_schema(schema("ConversionEvents"))
    return fastjsonschema.compile(root)  # type: ignore[no-any-return]


OFFICIAL = _official()


def official_accepts(event: Any) -> bool:
    try:
        OFFICIAL({"data": [event]})
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def rich_event() -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": NOW,
        "event_id": "order-1",
        "event_source_url": "https://shop.example.com/checkout",
        "opt_out": False,
        "language": "en",
        "user_data": {
            "em": [HEX],
            "ph": [HEX],
            "external_id": [HEX],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
            "click_id": "dj0yJnU9",
        },
        "custom_data": {
            "currency": "USD",
            "value": "72.39",
            "order_id": "1",
            "num_items": 3,
            "content_ids": ["a", "b"],
            "contents": [
                {"id": "a", "item_price": "14.99", "quantity": 2},
                {"id": "b", "item_price": "42.41", "quantity": 1, "item_brand": "x"},
            ],
            "opt_out_type": "LDP",
        },
        "app_name": "Shop",
        "wifi": True,
        "device_info": {"form_factor": "cellphone", "battery_level": 50},
        "app_info": {"window_width": 1024},
    }


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("unknown top key", lambda e: e.update(extra=1)),
    ("unknown custom_data key", lambda e: e["custom_data"].update(category_name="x")),
    ("unknown contents key", lambda e: e["custom_data"]["contents"][0].update(sku="x")),
    ("value as number", lambda e: e["custom_data"].update(value=72.39)),
    ("item_price as number", lambda e: e["custom_data"]["contents"][1].update(item_price=1)),
    ("quantity as string", lambda e: e["custom_data"]["contents"][0].update(quantity="2")),
    ("quantity as bool", lambda e: e["custom_data"]["contents"][0].update(quantity=True)),
    ("event_time as string", lambda e: e.update(event_time="1800000000")),
    ("event_time as float", lambda e: e.update(event_time=1.5)),
    ("em as string", lambda e: e["user_data"].update(em=HEX)),
    ("em item as number", lambda e: e["user_data"].update(em=[1])),
    ("missing event_id", lambda e: e.pop("event_id")),
    ("missing user_data", lambda e: e.pop("user_data")),
    (
        "no identifier",
        lambda e: e.update(user_data={"ph": [HEX], "client_ip_address": "203.0.113.9"}),
    ),
    ("bad enum", lambda e: e["device_info"].update(form_factor="phablet")),
    ("over maximum", lambda e: e["device_info"].update(battery_level=101)),
    ("under minimum", lambda e: e["app_info"].update(window_width=-1)),
    ("opt_out as string", lambda e: e.update(opt_out="true")),
    ("custom_data as list", lambda e: e.update(custom_data=[])),
]


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


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=5),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "em", "value", "x", "quantity"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)
PATHS = [
    (),
    ("user_data",),
    ("custom_data",),
    ("custom_data", "contents", 0),
    ("device_info",),
    ("app_info",),
]


@settings(max_examples=400, deadline=None)
@given(
    path=st.sampled_from(PATHS),
    key=st.sampled_from(
        [
            "event_time",
            "value",
            "em",
            "quantity",
            "item_price",
            "id",
            "battery_level",
            "locale",
            "wifi",
            "form_factor",
            "languages",
            "extra",
            "client_user_agent",
            "contents",
        ]
    ),
    value=VALUES,
    drop=st.booleans(),
)
def test_agrees_with_the_official_schema_on_random_edits(
    path: tuple[Any, ...], key: str, value: Any, drop: bool
) -> None:
    event = copy.deepcopy(rich_event())
    target: Any = event
    for part in path:
        target = target[part]
    if drop:
        target.pop(key, None)
    else:
        target[key] = value
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
