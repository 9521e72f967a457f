"""What every format gets from `Transformer` after its mapper (issue 15): the size limit, the
ad-account allowlist, scrubbed URLs, capped arrays and dead-letter texts without input."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream.formats.base import MAX_CONTENTS
from stream.hashing import MAX_VALUES_PER_FIELD, digest
from stream.metrics import Metrics
from stream.models import DeadLetter, PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer
from stream.urls import DEFAULT_KEPT_PARAMETERS
from stream.validate import UNKNOWN_KEY, safe_path

NOW = 1_800_000_000.0
ISO_NOW = "2027-01-15T08:00:00Z"  # = NOW
LEAKY_URL = "https://shop.example/checkout?email=alice%40example.com&phone=4155550100"


def transformer(**pinterest: Any) -> tuple[Transformer, dict[str, Any]]:
    settings = Settings(
        kafka=pinterest.pop("kafka", {}),
        pinterest={"ad_account_id": "1", **pinterest},
        sources=[
            {"topic": "web"},
            {"topic": "crm", "format": "pinterest", "ad_account_id": "2"},
            {"topic": "shop", "url_parameters_kept": ["email", "utm_*"]},
        ],
    )
    engine = Transformer(settings, clock=lambda: NOW)
    return engine, {source.topic: source for source in settings.sources}


def run(message: dict[str, Any] | bytes, topic: str = "web", **pinterest: Any) -> Any:
    engine, sources = transformer(**pinterest)
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    return engine.transform(sources[topic], raw, int(NOW * 1000))


def segment(**extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "timestamp": ISO_NOW,
        "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0"},
        **extra,
    }


def crm(**extra: Any) -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "action_source": "offline",
        "event_time": int(NOW) - 60,
        "event_id": "o-1",
        "user_data": {"em": ["jane@example.com"]},
        **extra,
    }


def body_of(result: Any) -> dict[str, Any]:
    assert isinstance(result, PinterestEvent), result
    body: dict[str, Any] = orjson.loads(result.body)
    return body


# --- size ---------------------------------------------------------------------------------------


def test_a_message_over_max_message_bytes_is_dead_lettered_unparsed() -> None:
    limit = {"max_message_bytes": 2048}
    fits = orjson.dumps(crm(event_id="x" * 100))
    assert isinstance(run(fits, "crm", kafka=limit), PinterestEvent)
    over = orjson.dumps(crm(event_id="alice@example.com" + "x" * 2048))
    assert run(over, "crm", kafka=limit) == DeadLetter(
        "invalid_event", f"message of {len(over)} bytes over kafka.max_message_bytes (2048)"
    )
    # Unparsed: not even a decode error for bytes that are no JSON at all.
    assert run(b"\xff" * 2049, kafka=limit).reason == "invalid_event"
    exactly = orjson.dumps(crm(event_id="x"))
    padded = exactly[:-1] + b" " * (2048 - len(exactly)) + b"}"
    assert len(padded) == 2048
    assert isinstance(run(padded, "crm", kafka=limit), PinterestEvent)


def test_the_default_limit_is_one_mebibyte() -> None:
    huge = segment(properties={"email": "x" * (1024 * 1024)})
    result = run(huge)
    assert isinstance(result, DeadLetter)
    assert "over kafka.max_message_bytes (1048576)" in result.message


# --- ad-account allowlist -----------------------------------------------------------------------


@pytest.mark.parametrize("account", ["1", "2", "3", 3])
def test_a_message_may_route_itself_to_a_configured_account(account: str | int) -> None:
    result = run(crm(ad_account_id=account), "crm", allowed_ad_accounts=["3"])
    assert isinstance(result, PinterestEvent), result
    assert result.ad_account_id == str(account)


def test_a_message_routed_to_an_unconfigured_account_is_an_invalid_event() -> None:
    result = run(crm(ad_account_id="549764106778"), "crm", allowed_ad_accounts=["3"])
    assert result == DeadLetter(
        "invalid_event", "ad_account_id: not one of the configured ad accounts"
    )
    # Checked before the event is: the routing problem is the one reported.
    assert run(crm(ad_account_id="4", event_name="purchase"), "crm") == result


# --- caps ---------------------------------------------------------------------------------------


def test_contents_are_capped_and_every_cap_is_counted() -> None:
    engine, sources = transformer()
    contents = [{"id": f"sku-{i}", "quantity": 1} for i in range(MAX_CONTENTS + 500)]
    emails = [f"person{i}@example.com" for i in range(MAX_VALUES_PER_FIELD + 30)]
    message = crm(
        user_data={"em": emails, "ph": "4155550100"},
        custom_data={"contents": contents},
    )
    result = engine.transform(sources["crm"], orjson.dumps(message), None)
    body = body_of(result)
    assert body["custom_data"]["contents"] == contents[:MAX_CONTENTS]
    assert body["user_data"]["em"] == [digest("em", e) for e in emails[:MAX_VALUES_PER_FIELD]]
    assert engine.truncated["contents"] == 500
    assert engine.truncated["em"] == 30
    assert engine.truncated["ph"] == 0
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_transformer(dict, int, lambda: engine.truncated)
    engine.transform(sources["crm"], orjson.dumps(message), None)
    # Read at scrape time: the second message counts without any call into the metrics.
    exposition = generate_latest(registry).decode()
    assert 'capi_stream_truncated_values_total{field="contents"} 1000.0' in exposition
    assert 'capi_stream_truncated_values_total{field="em"} 60.0' in exposition
    assert 'capi_stream_truncated_values_total{field="ph"} 0.0' in exposition


# --- URLs ---------------------------------------------------------------------------------------


def test_the_issues_url_reaches_pinterest_without_its_email_and_phone() -> None:
    page = segment(context={"ip": "203.0.113.9", "userAgent": "UA", "page": {"url": LEAKY_URL}})
    assert body_of(run(page))["event_source_url"] == "https://shop.example/checkout"
    offline = crm(event_source_url=LEAKY_URL)
    assert body_of(run(offline, "crm"))["event_source_url"] == "https://shop.example/checkout"


def test_epik_and_utm_parameters_are_kept_and_epik_still_becomes_the_click_id() -> None:
    url = "https://shop.example/p?epik=dj0yJnU9MTIzNDU2Nzg5MA&utm_term=a%40b.co&e=a%40b.co"
    page = segment(context={"ip": "203.0.113.9", "userAgent": "UA", "page": {"url": url}})
    body = body_of(run(page))
    assert body["event_source_url"] == url.removesuffix("&e=a%40b.co")
    assert body["user_data"]["click_id"] == "dj0yJnU9MTIzNDU2Nzg5MA"


def test_the_kept_parameters_are_configured_per_source() -> None:
    assert Settings(sources=[{"topic": "t"}]).sources[0].url_parameters_kept == list(
        DEFAULT_KEPT_PARAMETERS
    )
    page = segment(context={"ip": "203.0.113.9", "userAgent": "UA", "page": {"url": LEAKY_URL}})
    kept = body_of(run(page, "shop"))["event_source_url"]
    assert kept == "https://shop.example/checkout?email=alice%40example.com"


# --- dead-letter texts --------------------------------------------------------------------------

CANARY_EMAIL = "canary.alice@example.com"
CANARY_PHONE = "4155550199"
CANARIES = (CANARY_EMAIL, CANARY_PHONE, "+1 (415) 555-0199")
NEEDLES = ("canary", "alice", CANARY_PHONE, "555-0199")


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _containers(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        yield prefix
        for key, item in value.items():
            yield from _containers(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _containers(item, (*prefix, index))


def _at(message: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        message = message[step]
    return message


def _poisoned(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The message with a canary as the value at every path, and as a key in every object."""
    plants = [*CANARIES, [CANARY_EMAIL], {CANARY_EMAIL: CANARY_PHONE}, int(CANARY_PHONE)]
    for path in _paths(message):
        for plant in plants:
            copied = copy.deepcopy(message)
            _at(copied, path[:-1])[path[-1]] = plant
            yield copied
    for path in _containers(message):
        for key in CANARIES:
            for value in (CANARY_EMAIL, 1, {}, [CANARY_PHONE]):
                copied = copy.deepcopy(message)
                _at(copied, path)[key] = value
                yield copied


RICH_SEGMENT = segment(
    userId="u-1",
    context={
        "ip": "203.0.113.9",
        "userAgent": "Mozilla/5.0",
        "locale": "en-US",
        "page": {"url": "https://shop.example/p?epik=abc"},
        "device": {"type": "ios", "advertisingId": "ad-1", "model": "x"},
        "traits": {
            "email": "jane@example.com",
            "phone": "+1 650 555 1234",
            "firstName": "Jane",
            "birthday": "1990-01-31",
            "address": {"city": "Paris", "state": "CA", "postalCode": "94025", "country": "US"},
        },
    },
    properties={
        "revenue": 10.5,
        "currency": "usd",
        "order_id": "o-1",
        "products": [{"product_id": "p-1", "price": 5.25, "quantity": 2, "name": "Shoe"}],
    },
)
RICH_CRM = crm(
    ad_account_id="2",
    user_data={"em": ["jane@example.com"], "ph": "+1 650 555 1234", "client_ip_address": "1.2.3.4"},
    custom_data={
        "currency": "USD",
        "value": "10.00",
        "contents": [{"id": "a", "item_price": "5.00", "quantity": 2}],
    },
    app_info={"app_id": "x"},
    device_info={"os_version": "17"},
)


@pytest.mark.parametrize(
    ("topic", "message"), [("web", RICH_SEGMENT), ("crm", RICH_CRM), ("web", RICH_CRM)]
)
def test_no_dead_letter_message_echoes_an_input_key_or_value(
    topic: str, message: dict[str, Any]
) -> None:
    engine, sources = transformer()
    dead_letters = 0
    for poisoned in _poisoned(message):
        result = engine.transform(sources[topic], orjson.dumps(poisoned), int(NOW * 1000))
        if isinstance(result, DeadLetter):
            dead_letters += 1
            text = result.message.lower()
            assert not any(needle in text for needle in NEEDLES), (result, poisoned)
    assert dead_letters >= 50  # the canaries were planted where they break the message


def test_an_unknown_user_data_key_is_named_by_what_it_is_not() -> None:
    result = run(crm(user_data={"alice@example.com": "x", "em": "a@b.co"}), "crm")
    assert result == DeadLetter(
        "invalid_event", "user_data: unknown key (not a Pinterest user_data field)"
    )
    elsewhere = run(crm(custom_data={"contents": [{"id": "a", "alice@example.com": 1}]}), "crm")
    assert elsewhere == DeadLetter(
        "invalid_event", f"custom_data.contents[0].{UNKNOWN_KEY}: unknown field"
    )


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("custom_data.contents[1].item_price", "custom_data.contents[1].item_price"),
        ("user_data", "user_data"),
        ("", ""),
        ("alice@example.com", UNKNOWN_KEY),
        ("custom_data.alice@example.com", f"custom_data.{UNKNOWN_KEY}"),
        ("app_info.x.app_id[0]", f"app_info.{UNKNOWN_KEY}"),
        ("custom_data.contents[0].4155550100", f"custom_data.contents[0].{UNKNOWN_KEY}"),
        ("[3].event_id", "[3].event_id"),
        ("custom_data.[12]", f"custom_data.{UNKNOWN_KEY}"),
        ("custom_data.value[4155550100]", f"custom_data.{UNKNOWN_KEY}"),
        ("custom_data.contents[1][2]", "custom_data.contents[1][2]"),
    ],
)
def test_safe_path_keeps_spec_names_and_stops_at_the_first_unknown_key(
    path: str, safe: str
) -> None:
    assert safe_path(path) == safe
