"""The sandbox's compiled checker agrees with fastjsonschema on the official schema."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import fastjsonschema
import orjson
import pytest

from stream.sandbox.checks import BodyChecker, Decoded, RequestInvalid, all_hashes_hex
from stream.spec import schema
from tests.sandbox_helpers import valid_event


def _openapi_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable` → JSON Schema `null` type; the user_data anyOf → its shared $ref.

    The anyOf is left out on purpose: Pinterest fails the event, not the request, and the
    sandbox checks it per event (tested through HTTP).
    """
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _openapi_to_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) and "type" in converted:
        converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    if "anyOf" in converted:
        refs = {alternative["$ref"] for alternative in converted.pop("anyOf")}
        converted["$ref"] = refs.pop()
    return converted


@pytest.fixture(scope="module")
def reference() -> Any:
    return fastjsonschema.compile(
        _openapi_to_json_schema(copy.deepcopy(schema("ConversionEvents")))
    )


@pytest.fixture(scope="module")
def checker() -> BodyChecker:
    return BodyChecker()


def _rich() -> dict[str, Any]:
    event = valid_event("rich")
    event["user_data"]["hashed_maids"] = ["a" * 64]
    event["user_data"]["click_id"] = None
    event["user_data"]["unknown_but_allowed"] = "user_data has no additionalProperties: false"
    event["custom_data"].update(
        {
            "num_items": 2,
            "content_ids": ["sku-1"],
            "contents": [{"id": "sku-1", "item_price": "1.50", "quantity": 2}],
            "opt_out_type": "LDP",
            "search_string": None,
        }
    )
    event["app_info"] = {"app_id": "x", "install_time": 0, "window_width": 30720}
    event["device_info"] = {"form_factor": "tablet", "languages": ["en"], "battery_level": 100}
    event["language"] = "en"
    event["opt_out"] = False
    event["wifi"] = True
    event["partner_name"] = None
    return event


def _with(path: str, value: Any) -> dict[str, Any]:
    """A rich event with `value` set at a dotted path (`...=DELETE` removes the key)."""
    event = _rich()
    *parents, last = path.split(".")
    target: Any = event
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value == "DELETE":
        del target[last]
    else:
        target[last] = value
    return event


VALID_BODIES: list[Any] = [
    {"data": [valid_event("minimal")]},
    {"data": [_rich()]},
    {"data": [_rich() for _ in range(1000)]},
    {"data": [_with("event_source_url", None), _with("app_name", None)]},
    {"data": [_with("custom_data.currency", None)]},
]
INVALID_BODIES: list[Any] = [
    {},
    {"data": []},
    {"data": [valid_event()] * 1001},
    {"data": valid_event()},
    {"data": [valid_event()], "extra": 1},
    {"data": [_with("category_name", "x")]},
    {"data": [_with("custom_data.category_name", "x")]},
    {"data": [_with("custom_data.contents.0.sku", "x")]},
    {"data": [_with("event_id", "DELETE")]},
    {"data": [_with("user_data", "DELETE")]},
    {"data": [_with("event_id", None)]},
    {"data": [_with("event_time", "1700000000")]},
    {"data": [_with("event_time", 1.5)]},
    {"data": [_with("event_time", True)]},
    {"data": [_with("custom_data.value", 72.39)]},
    {"data": [_with("custom_data.num_items", "2")]},
    {"data": [_with("custom_data.contents.0.item_price", 1.5)]},
    {"data": [_with("user_data.em", "a" * 64)]},
    {"data": [_with("user_data.client_ip_address", None)]},
    {"data": [_with("device_info.form_factor", "phablet")]},
    {"data": [_with("device_info.battery_level", 101)]},
    {"data": [_with("device_info.timezone_abbr", "ABCDEF")]},
    {"data": [_with("device_info.languages", ["en"] * 101)]},
    {"data": [_with("app_info.install_time", -1)]},
    {"data": [_with("app_info.unknown", 1)]},
    {"data": [_with("opt_out", "false")]},
    {"data": ["not an object"]},
]


@pytest.mark.parametrize("body", VALID_BODIES, ids=lambda _: "valid")
def test_valid_bodies_agree(body: Any, reference: Any, checker: BodyChecker) -> None:
    reference(body)
    decoded = checker.decode(orjson.dumps(body))
    assert isinstance(decoded, Decoded)
    assert len(decoded.events) == len(body["data"])
    assert decoded.hashes_checked


@pytest.mark.parametrize("body", INVALID_BODIES, ids=lambda _: "invalid")
def test_invalid_bodies_agree(body: Any, reference: Any, checker: BodyChecker) -> None:
    with pytest.raises(fastjsonschema.JsonSchemaException):
        reference(body)
    assert isinstance(checker.decode(orjson.dumps(body)), RequestInvalid)


def test_request_invalid_message_names_the_path(checker: BodyChecker) -> None:
    body = {"data": [valid_event(), _with("custom_data.category_name", "x")]}
    answer = checker.decode(orjson.dumps(body))
    assert isinstance(answer, RequestInvalid)
    assert "category_name" in answer.message
    assert "$.data[1].custom_data" in answer.message


def test_not_json_is_request_invalid(checker: BodyChecker) -> None:
    answer = checker.decode(b'{"data": [')
    assert isinstance(answer, RequestInvalid)
    assert "not valid JSON" in answer.message


@pytest.mark.parametrize(
    "bad_hash",
    [
        "A" * 64,
        "g" * 64,
        "a" * 63,
        "a" * 65,
        "aa " * 21 + "a",
        "jane.doe@example.com",
        "é" * 64,
    ],
)
def test_bad_hash_is_not_a_request_error(bad_hash: str, checker: BodyChecker) -> None:
    event = valid_event()
    event["user_data"]["ph"] = [hashlib.sha256(b"x").hexdigest(), bad_hash]
    decoded = checker.decode(json.dumps({"data": [valid_event(), event]}).encode())
    assert isinstance(decoded, Decoded)
    assert not decoded.hashes_checked


def test_all_hashes_hex_accepts_lowercase_digests(checker: BodyChecker) -> None:
    decoded = checker.decode(orjson.dumps({"data": [_rich(), valid_event()]}))
    assert isinstance(decoded, Decoded)
    assert all_hashes_hex(decoded.events)
