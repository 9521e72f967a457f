"""Events for the schema-check tests: a rich valid event, deliberately wrong ones, random edits,
and the official schema (via fastjsonschema) as the reference verdict."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import fastjsonschema
from hypothesis import strategies as st

from stream.spec import schema

NOW = 1_800_000_000
HEX = "a" * 64


def as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema: `nullable` becomes a "null" type, and `required` next to a
    `$ref` (which plain JSON Schema ignores) is kept by moving the `$ref` into `allOf`."""
    if isinstance(node, list):
        return [as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: as_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "$ref" in out and len(set(out) - {"description", "title"}) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _official() -> Callable[[Any], Any]:
    root = as_json_schema(schema("ConversionEvents"))
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


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**40),
    # An integral float (2.0) is an integer to JSON Schema but not to the encoded check, which
    # refuses it on purpose; test_validate_encoded covers that case on its own.
    st.floats(allow_nan=False).filter(lambda number: not number.is_integer()),
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


# Keys set or dropped by a random edit, at every depth of PATHS (most exist at only some).
EDIT_KEYS = [
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


def edited(path: tuple[Any, ...], key: str, value: Any, drop: bool) -> dict[str, Any]:
    """A rich event whose `key` below `path` is dropped, or else set to `value`."""
    event = copy.deepcopy(rich_event())
    target: Any = event
    for part in path:
        target = target[part]
    if drop:
        target.pop(key, None)
    else:
        target[key] = value
    return event


def random_edits() -> st.SearchStrategy[dict[str, Any]]:
    """Rich events with one random edit each: mostly invalid, sometimes still valid."""
    return st.builds(
        edited, st.sampled_from(PATHS), st.sampled_from(EDIT_KEYS), VALUES, st.booleans()
    )
