"""Transformer end to end in memory: Segment and Pinterest formats, rules, errors as data, fuzz."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.formats.segment import DEFAULT_EVENT_NAMES
from stream.hashing import digest
from stream.models import DeadLetter, PinterestEvent, Signal, Skipped
from stream.settings import Settings, SourceSettings
from stream.transform import Transformer
from tests.unit.spec_cases import OFFICIAL
from traffic.generator import ClickstreamGenerator

NOW = 1_800_000_000.0
HEX64 = re.compile(r"[0-9a-f]{64}")
ISO_NOW = "2027-01-15T08:00:00Z"  # = NOW
WEB = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0"}


def make(
    allowed_ad_accounts: tuple[str, ...] = (), **source: Any
) -> tuple[Transformer, SourceSettings]:
    settings = Settings(
        pinterest={"allowed_ad_accounts": list(allowed_ad_accounts)},
        sources=[SourceSettings(topic="t", **source)],
    )
    return Transformer(settings, clock=lambda: NOW), settings.sources[0]


def run(message: dict[str, Any] | bytes, **source: Any) -> Any:
    transformer, src = make(**source)
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    return transformer.transform(src, raw, int(NOW * 1000))


def event(message: dict[str, Any], **source: Any) -> dict[str, Any]:
    result = run(message, **source)
    assert isinstance(result, PinterestEvent), result
    OFFICIAL({"data": [orjson.loads(result.body)]})
    body: dict[str, Any] = orjson.loads(result.body)
    return body


def track(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "messageId": "m-1",
        "timestamp": ISO_NOW,
        "context": dict(WEB),
        **extra,
    }


@pytest.mark.parametrize(("segment", "pinterest"), sorted(DEFAULT_EVENT_NAMES.items()))
def test_every_segment_event_name(segment: str, pinterest: str) -> None:
    assert event(track(segment))["event_name"] == pinterest
    assert event(track(segment.lower().replace(" ", "_")))["event_name"] == pinterest


def test_page_screen_pinterest_names_and_unknown_events() -> None:
    assert event({**track("x"), "type": "page"})["event_name"] == "page_visit"
    assert event({**track("x"), "type": "screen"})["event_name"] == "page_visit"
    assert event(track("add_to_cart"))["event_name"] == "add_to_cart"
    assert event(track("Coupon Applied"))["event_name"] == "custom"
    assert isinstance(run(track("Coupon Applied"), unknown_events="skip"), Skipped)
    overrides = {"Coupon Applied": "lead", "Order Completed": "skip"}
    assert event(track("Coupon Applied"), event_names=overrides)["event_name"] == "lead"
    assert isinstance(run(track("Order Completed"), event_names=overrides), Skipped)
    for kind in ("identify", "group", "alias"):
        assert isinstance(run({"type": kind, "traits": {"email": "a@b.c"}}), Skipped)


def test_identity_fields_from_every_place() -> None:
    traits = {
        "email": "A@x.com",
        "phone": "+1 415 555 0100",
        "first_name": "Zoë",
        "lastName": "O'Brien",
        "gender": "female",
        "birthday": "1990-02-14",
        "address": {
            "city": "San Francisco",
            "state": "California",
            "postal_code": "94107-1234",
            "country": "USA",
        },
    }
    message = track(
        "Signed Up",
        userId="User-1",
        traits={"email": "b@x.com"},
        properties={"email": "a@x.com", "firstName": "Zoe"},
    )
    message["context"]["traits"] = traits
    user = event(message)["user_data"]
    assert user["em"] == [digest("em", "a@x.com"), digest("em", "b@x.com")]
    assert user["ph"] == [digest("ph", "14155550100")]
    assert user["fn"] == [digest("fn", "zoe"), digest("fn", "zoë")]
    assert user["ln"] == [digest("ln", "o'brien")]
    assert user["ge"] == [digest("ge", "f")]
    assert user["db"] == [digest("db", "19900214")]
    assert user["ct"] == [digest("ct", "sanfrancisco")]
    assert user["st"] == [digest("st", "ca")]
    assert user["zp"] == [digest("zp", "94107")]
    assert user["country"] == [digest("country", "us")]
    assert user["external_id"] == [digest("external_id", "user-1")]
    assert user["client_ip_address"] == "203.0.113.9"
    assert user["client_user_agent"] == "Mozilla/5.0"
    assert "a@x.com" not in orjson.dumps(user).decode()


def test_advertising_id_and_tracking_opt_out() -> None:
    device = {
        "type": "ios",
        "advertisingId": "EA7583CD-A667-48BC-B806-42ECB2B48606",
        "manufacturer": "Apple",
        "model": "iPhone15,2",
    }
    screen = {
        "type": "screen",
        "messageId": "s",
        "timestamp": ISO_NOW,
        "context": {
            "device": device,
            "app": {"name": "Shop", "version": "5.2", "namespace": "com.example"},
            "os": {"version": "17.5"},
            "network": {"carrier": "T-Mobile", "wifi": True},
        },
    }
    body = event(screen)
    assert body["action_source"] == "app_ios"
    assert body["user_data"]["hashed_maids"] == [
        digest("hashed_maids", "ea7583cd-a667-48bc-b806-42ecb2b48606")
    ]
    assert "opt_out" not in body
    assert (body["app_id"], body["app_name"], body["app_version"]) == ("com.example", "Shop", "5.2")
    assert (body["device_brand"], body["device_model"], body["os_version"]) == (
        "Apple",
        "iPhone15,2",
        "17.5",
    )
    assert (body["device_carrier"], body["wifi"]) == ("T-Mobile", True)
    device["adTrackingEnabled"] = False
    screen["context"].update(WEB)
    body = event(screen)
    assert body["opt_out"] is True
    assert "hashed_maids" not in body["user_data"]


@pytest.mark.parametrize(
    ("properties", "context", "source_default", "expected"),
    [
        ({"action_source": "offline"}, {}, "web", "offline"),
        ({}, {"action_source": "app_android"}, "web", "app_android"),
        ({"action_source": "email"}, {"device": {"type": "android"}}, "web", "app_android"),
        ({}, {"device": {"type": "iOS"}}, "web", "app_ios"),
        ({}, {}, "offline", "offline"),
        ({}, {}, "web", "web"),
    ],
)
def test_action_source_rules(
    properties: dict[str, Any], context: dict[str, Any], source_default: str, expected: str
) -> None:
    message = track("Order Completed", properties=properties)
    message["context"].update(context)
    assert event(message, action_source=source_default)["action_source"] == expected


def test_click_id_from_properties_else_epik_in_page_url() -> None:
    message = track("Product Viewed")
    message["context"]["page"] = {"url": "https://s.example/p?utm=1&epik=dj0yJnU9abc"}
    body = event(message)
    assert body["user_data"]["click_id"] == "dj0yJnU9abc"
    assert body["event_source_url"] == "https://s.example/p?utm=1&epik=dj0yJnU9abc"
    message["properties"] = {"click_id": "from-cookie"}
    assert event(message)["user_data"]["click_id"] == "from-cookie"


def test_values_prices_quantities_and_contents() -> None:
    products = [
        {
            "product_id": "p1",
            "price": 14.99,
            "quantity": 2,
            "name": "Vase",
            "category": "Home",
            "brand": "K",
        },
        {"sku": "P2", "price": "42.41", "quantity": 1.0},
    ]
    body = event(
        track(
            "Order Completed",
            properties={
                "revenue": 72.39,
                "total": 80,
                "currency": "usd",
                "order_id": 100045,
                "products": products,
            },
        )
    )
    custom = body["custom_data"]
    assert custom["value"] == "72.39"
    assert custom["currency"] == "USD"
    assert custom["order_id"] == "100045"
    assert custom["contents"] == [
        {
            "id": "p1",
            "item_price": "14.99",
            "quantity": 2,
            "item_name": "Vase",
            "item_category": "Home",
            "item_brand": "K",
        },
        {"id": "P2", "item_price": "42.41", "quantity": 1},
    ]
    assert custom["content_ids"] == ["p1", "P2"]
    assert custom["num_items"] == 3
    single = event(
        track("Product Added", properties={"product_id": "p9", "price": 5, "quantity": 1})
    )["custom_data"]
    assert single == {
        "value": "5",
        "contents": [{"id": "p9", "item_price": "5", "quantity": 1}],
        "content_ids": ["p9"],
        "num_items": 1,
    }
    tiny = event(track("Order Completed", properties={"value": 1e-7}))["custom_data"]
    assert tiny["value"] == "0.0000001"
    search = event(track("Products Searched", properties={"query": "vase"}))
    assert search["custom_data"] == {"search_string": "vase"}


def test_event_id_and_time_fallbacks() -> None:
    message = track("Order Completed", properties={"event_id": "e-9"})
    assert event(message)["event_id"] == "e-9"
    del message["properties"]
    del message["messageId"]
    raw = orjson.dumps(message)
    first, second = run(raw), run(raw)
    assert first.event_id == second.event_id == hashlib.blake2b(raw, digest_size=16).hexdigest()
    del message["timestamp"]
    message["originalTimestamp"] = int(NOW * 1000) - 5000
    assert event(message)["event_time"] == int(NOW) - 5
    del message["originalTimestamp"]
    assert event(message)["event_time"] == int(NOW)  # the Kafka timestamp


@pytest.mark.parametrize(
    ("message", "reason", "mentions"),
    [
        (b"not json", "decode_error", "JSON"),
        (b"[1, 2]", "decode_error", "object"),
        ({"type": "page", "timestamp": ISO_NOW}, "invalid_event", "user_data"),
        ({**track("x"), "timestamp": "2026-12-01T00:00:00Z"}, "too_old", "event_time"),
        ({**track("x"), "timestamp": "2027-01-16T00:00:00Z"}, "invalid_event", "future"),
        ({**track("x"), "timestamp": "yesterday"}, "mapping_error", "timestamp"),
        ({**track("x"), "properties": {"products": "not-a-list"}}, "mapping_error", "products"),
        ({**track("x"), "event": {"not": "a name"}}, "mapping_error", "event"),
        ({**track("x"), "properties": {"value": "$12"}}, "mapping_error", "properties.value"),
        (
            {**track("x"), "traits": {"email": {"nested": "secret@x.com"}}},
            "mapping_error",
            "traits.email",
        ),
        ({**track("x"), "type": "unknown"}, "mapping_error", "type"),
    ],
)
def test_bad_messages_become_dead_letters_without_values(
    message: dict[str, Any] | bytes, reason: str, mentions: str
) -> None:
    result = run(message)
    assert isinstance(result, DeadLetter), result
    assert result.reason == reason
    assert mentions in result.message
    assert "secret@x.com" not in result.message
    assert "$12" not in result.message


def test_pinterest_format_hashes_routes_and_drops_nulls() -> None:
    hashed = hashlib.sha256(b"jane@example.com").hexdigest()
    message = {
        "ad_account_id": "549764106778",
        "event_name": "checkout",
        "action_source": "offline",
        "event_time": int(NOW) - 60,
        "event_id": "o-1",
        "event_source_url": None,
        "user_data": {
            "em": ["Jane@Example.com", hashed.upper()],
            "ph": "+1 650 555 1234",
            "client_ip_address": None,
        },
        "custom_data": {
            "value": "10.00",
            "contents": [{"id": "a", "item_name": None}, {}],
            "content_ids": [],
        },
        "app_info": {},
    }
    allowed = ("549764106778",)
    result = run(message, format="pinterest", ad_account_id="1", allowed_ad_accounts=allowed)
    assert isinstance(result, PinterestEvent)
    assert result.ad_account_id == "549764106778"
    body = orjson.loads(result.body)
    assert body == {
        "event_name": "checkout",
        "action_source": "offline",
        "event_time": int(NOW) - 60,
        "event_id": "o-1",
        "user_data": {"em": [hashed], "ph": [digest("ph", "16505551234")]},
        "custom_data": {"value": "10.00", "contents": [{"id": "a"}]},
    }
    assert result.signals == Signal.EMAIL
    del message["ad_account_id"]
    assert run(message, format="pinterest", ad_account_id="1").ad_account_id == "1"
    leaky = {**message, "user_data": {"email": "jane@example.com"}}
    dead = run(leaky, format="pinterest")
    assert isinstance(dead, DeadLetter)
    assert dead.message == "user_data: unknown key (not a Pinterest user_data field)"
    unknown = run({**message, "custom_data": {"category_name": "x"}}, format="pinterest")
    assert isinstance(unknown, DeadLetter)
    assert unknown.reason == "invalid_event"
    assert run({**message, "event_name": "purchase"}, format="pinterest").reason == "invalid_event"


def test_ldp_and_opt_out_rules() -> None:
    rules = {
        "ldp": {"field": "context.traits.address.state", "values": ["CA", "Virginia"]},
        "opt_out": {"field": "properties.consent", "values": [False, "no"]},
    }
    message = track("Order Completed", properties={"consent": False})
    message["context"]["traits"] = {"address": {"state": "ca"}}
    body = event(message, **rules)
    assert body["custom_data"]["opt_out_type"] == "LDP"
    assert body["opt_out"] is True
    message["properties"] = {"consent": True}
    message["context"]["traits"] = {"address": {"state": "Texas"}}
    body = event(message, **rules)
    assert "custom_data" not in body
    assert "opt_out" not in body
    offline = {
        "event_name": "lead",
        "action_source": "offline",
        "event_time": int(NOW),
        "event_id": "x",
        "user_data": {"em": ["a@b.c"]},
        "consent": "NO",
    }
    result = run(
        offline,
        format="pinterest",
        ldp={"field": "ldp", "values": [True]},
        opt_out={"field": "consent", "values": ["no"]},
    )
    # The rule field is not a spec key, so the event is refused; a spec key works:
    assert isinstance(result, DeadLetter)
    offline.pop("consent")
    offline["custom_data"] = {"opt_out_type": "RDP"}
    body = orjson.loads(
        run(
            {**offline, "opt_out": False},
            format="pinterest",
            ldp={"field": "action_source", "values": ["offline"]},
        ).body
    )
    assert body["custom_data"]["opt_out_type"] == "RDP,LDP"


def test_generated_clickstream_matches_the_generators_expectations() -> None:
    transformer, source = make()
    generator = ClickstreamGenerator(7, now=lambda: NOW, poison_ratio=0.05)
    for generated in generator.messages(2000):
        result = transformer.transform(source, generated.value, int(NOW * 1000))
        if generated.kind == "valid":
            assert isinstance(result, PinterestEvent), result
            assert result.event_id == generated.event_id
            assert result.event_name == generated.event_name
            OFFICIAL({"data": [orjson.loads(result.body)]})
        elif generated.kind == "skipped":
            assert isinstance(result, Skipped)
        else:
            assert isinstance(result, DeadLetter)
            assert result.reason == generated.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(value: bytes) -> None:
    result = run(value)
    assert isinstance(result, DeadLetter | Skipped | PinterestEvent)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "event",
                    "properties",
                    "context",
                    "traits",
                    "email",
                    "products",
                    "timestamp",
                    "userId",
                    "device",
                    "page",
                    "url",
                    "price",
                    "quantity",
                    "user_data",
                    "custom_data",
                    "em",
                    "event_time",
                    "contents",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@pytest.mark.parametrize("fmt", ["segment", "pinterest"])
@given(message=JSON)
def test_random_json_never_raises_and_valid_output_is_spec_valid(fmt: str, message: Any) -> None:
    result = run(orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS), format=fmt)
    if isinstance(result, PinterestEvent):
        OFFICIAL({"data": [orjson.loads(result.body)]})
    else:
        assert isinstance(result, DeadLetter | Skipped)


def test_deeply_nested_and_huge_values_are_dead_letters_not_crashes() -> None:
    deep = b'{"type":"track","event":"x","properties":' + b'{"a":' * 900 + b"1" + b"}" * 901
    assert isinstance(run(deep), DeadLetter | PinterestEvent)
    # Just under kafka.max_message_bytes: larger messages are dead-lettered unparsed.
    huge = track("Order Completed", properties={"email": "x" * 1_000_000})
    assert isinstance(run(huge), PinterestEvent)
    assert isinstance(run(b"[" * 5000 + b"]" * 5000), DeadLetter)


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["email", "phone", "firstName", "lastName", "birthday", "gender"]),
    raw=st.text(min_size=6, max_size=40).filter(lambda v: not v.strip().isdigit()),
)
def test_raw_identity_values_never_reach_the_event(field: str, raw: str) -> None:
    message = track("Order Completed", traits={field: raw, "email": "x@example.com"})
    result = run(message)
    assert isinstance(result, PinterestEvent | DeadLetter), result
    if isinstance(result, DeadLetter):
        assert raw.strip() not in result.message
        return
    user_data = orjson.loads(result.body)["user_data"]
    hashed = [
        value for values in user_data.values() if isinstance(values, list) for value in values
    ]
    assert all(HEX64.fullmatch(value) for value in hashed)
    assert raw.strip() not in hashed


@pytest.mark.parametrize(
    ("url", "click_id"),
    [
        ("https://s.example/p?epik=abc", "abc"),
        ("https://s.example/p?x=1&epik=abc&y=2", "abc"),
        ("https://s.example/p?epik=a%2Bb", "a+b"),
        ("https://s.example/p?q=epik=3&epik=4", "4"),
        ("https://s.example/p?xepik=1", None),
        ("https://s.example/p?epik=", None),
        ("https://s.example/p#epik=1", None),
    ],
)
def test_epik_query_parameter(url: str, click_id: str | None) -> None:
    message = track("Product Viewed")
    message["context"]["page"] = {"url": url}
    assert event(message)["user_data"].get("click_id") == click_id
