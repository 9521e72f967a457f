"""Segment format additions (DESIGN §3) and its per-message caps (DESIGN §4), with the message
shapes Segment's server-side libraries send."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import decode
from stream.formats.base import MAX_CONTENTS
from stream.formats.segment import SegmentMapper, _epik
from stream.hashing import MAX_VALUES_PER_FIELD, Hasher, digest
from stream.models import PinterestEvent
from stream.settings import SourceSettings
from tests.unit.test_transform import NOW, WEB, event, run, track

ISO_NOW = "2027-01-15T08:00:00Z"


def mapped(message: dict[str, Any]) -> tuple[dict[str, Any], Hasher]:
    """The mapper's event object and the hasher holding its truncation counts."""
    hasher = Hasher()
    mapper = SegmentMapper(SourceSettings(topic="t"), hasher)
    result = mapper.map(orjson.dumps(message), int(NOW * 1000))
    assert isinstance(result, tuple), result
    return result[0], hasher


def test_page_url_from_properties_when_there_is_no_context_page() -> None:
    message = track("Product Viewed", properties={"url": "https://s.example/p?epik=dj0yJnU9abc"})
    body = event(message)
    assert body["event_source_url"] == "https://s.example/p?epik=dj0yJnU9abc"
    assert body["user_data"]["click_id"] == "dj0yJnU9abc"
    # context.page.url wins, and its epik with it; properties.click_id wins over any epik.
    message["context"]["page"] = {"url": "https://s.example/q?epik=from-page"}
    body = event(message)
    assert body["event_source_url"] == "https://s.example/q?epik=from-page"
    assert body["user_data"]["click_id"] == "from-page"
    message["properties"]["click_id"] = "from-cookie"
    assert event(message)["user_data"]["click_id"] == "from-cookie"
    # An empty page URL is no URL: properties.url is used.
    message["context"]["page"] = {"url": ""}
    assert event(message)["event_source_url"] == "https://s.example/p?epik=dj0yJnU9abc"


def test_a_malformed_properties_url_is_named() -> None:
    result = run(track("Product Viewed", properties={"url": {"href": "x"}}))
    assert (result.reason, result.message) == ("mapping_error", "properties.url: expected a string")


@pytest.mark.parametrize(
    ("price", "quantity", "value"),
    [
        (14.99, 3, "44.97"),
        ("0.10", 3, "0.30"),
        (5, "2", "10"),
        (5, 2.0, "10"),
        (19.5, None, "19.5"),
        (19.5, 1, "19.5"),
        (1e-7, 3, "0.0000003"),
        ("-1.5", 2, "-3.0"),
        ("12345678901234567890.12", 3, "37037036703703703670.36"),
        (2, 123456789012345678, "246913578024691356"),
    ],
)
def test_value_of_a_single_product_is_price_times_quantity(
    price: Any, quantity: Any, value: str
) -> None:
    properties = {"product_id": "p1", "price": price, "quantity": quantity}
    custom = event(track("Product Added", properties=properties))["custom_data"]
    assert custom["value"] == value


def test_value_revenue_or_total_win_over_price_times_quantity() -> None:
    for key in ("value", "revenue", "total"):
        properties = {key: 7, "product_id": "p1", "price": 2.5, "quantity": 4}
        assert event(track("Product Added", properties=properties))["custom_data"]["value"] == "7"
    # Without a product id the price and quantity are still the event's own.
    properties = {"price": "2.50", "quantity": 4}
    assert event(track("Product Added", properties=properties))["custom_data"]["value"] == "10.00"


def test_a_bad_quantity_is_reported_where_the_product_reports_it() -> None:
    properties = {"product_id": {"x": 1}, "price": 2, "quantity": "lots"}
    result = run(track("Product Added", properties=properties))
    assert result.message == "properties.product_id: expected a string"
    result = run(track("Product Added", properties={"price": 2, "quantity": "lots"}))
    assert result.message == "properties.quantity: expected an integer"


def test_content_fields_of_a_single_product_event() -> None:
    properties = {
        "product_id": "p1",
        "name": "Vase",
        "category": "Home",
        "brand": "Kiln",
        "price": 14.99,
        "quantity": 2,
    }
    custom = event(track("Product Added", properties=properties))["custom_data"]
    assert custom == {
        "value": "29.98",
        "contents": [
            {
                "id": "p1",
                "item_price": "14.99",
                "quantity": 2,
                "item_name": "Vase",
                "item_category": "Home",
                "item_brand": "Kiln",
            }
        ],
        "content_ids": ["p1"],
        "num_items": 2,
        "content_name": "Vase",
        "content_category": "Home",
        "content_brand": "Kiln",
    }
    # Several products describe no single content; a page's name and category (analytics.js
    # puts them in properties) are no product's.
    products = [properties, {**properties, "product_id": "p2"}]
    custom = event(track("Order Completed", properties={"products": products}))["custom_data"]
    assert not {"content_name", "content_category", "content_brand"} & custom.keys()
    page = {**track("x"), "type": "page", "properties": {"name": "Home", "category": "Docs"}}
    assert "custom_data" not in event(page)


@pytest.mark.parametrize("name", ["Product List Viewed", "Product Category Viewed"])
def test_content_category_of_a_list_view(name: str) -> None:
    properties = {"list_id": "l1", "category": "Deals", "products": [{"product_id": "p1"}]}
    body = event(track(name, properties=properties))
    assert body["event_name"] == "view_category"
    assert body["custom_data"]["content_category"] == "Deals"
    assert "content_name" not in body["custom_data"]


def test_numeric_ids_keep_every_digit() -> None:
    long_id = 123456789012345678901234567890  # beyond 64 bits: orjson reads a float
    head = b'{"type":"track","event":"Order Completed","timestamp":"%s","context":%s,' % (
        ISO_NOW.encode(),
        orjson.dumps(WEB),
    )
    first = run(head + b'"messageId":%d}' % long_id)
    second = run(head + b'"messageId":%d}' % (long_id + 1))
    assert isinstance(first, PinterestEvent)
    assert isinstance(second, PinterestEvent)
    assert (first.event_id, second.event_id) == (str(long_id), str(long_id + 1))
    result = run(
        head
        + b'"messageId":"m","properties":{"event_id":%d,"order_id":%d}}'
        % (
            long_id,
            long_id + 7,
        )
    )
    assert isinstance(result, PinterestEvent)
    assert result.event_id == str(long_id)
    assert orjson.loads(result.body)["custom_data"]["order_id"] == str(long_id + 7)
    # A written float stays the number it is, even with more digits than a float holds.
    assert event(track("Order Completed", properties={"event_id": 12.5}))["event_id"] == "12.5"
    fractions = [run(head + b'"messageId":12345678901234567890.%d}' % last) for last in (5, 6)]
    assert [result.event_id for result in fractions if isinstance(result, PinterestEvent)] == [
        "12345678901234567890.5",
        "12345678901234567890.6",
    ]
    # Product ids too, in a list of products and on a single-product event (`sku` as well).
    products = b'[{"product_id":"p0"},{"product_id":%d},{"sku":%d}]' % (long_id, long_id + 1)
    listed = run(head + b'"messageId":"m","properties":{"products":%s}}' % products)
    assert isinstance(listed, PinterestEvent)
    assert orjson.loads(listed.body)["custom_data"]["content_ids"] == [
        "p0",
        str(long_id),
        str(long_id + 1),
    ]
    for key in (b"product_id", b"sku"):
        single = run(head + b'"messageId":"m","properties":{"%s":%d}}' % (key, long_id + 2))
        assert isinstance(single, PinterestEvent)
        assert orjson.loads(single.body)["custom_data"]["content_ids"] == [str(long_id + 2)]


def test_one_message_is_read_again_once_whatever_its_number_of_float_ids() -> None:
    # 1,000 products with float ids used to decode the whole message 1,000 times (1.5 s for a
    # message near 1 MB); benchmarks/bench_worst_message.py times that message now.
    products = [{"product_id": float(index)} for index in range(1000)]
    decode._exact_tree.cache_clear()
    body = event(track("Order Completed", messageId=12.5, properties={"products": products}))
    assert body["custom_data"]["content_ids"][-1] == "999"
    assert decode._exact_tree.cache_info().misses == 1


def test_a_float_phone_hashes_as_the_integers_digits() -> None:
    expected = digest("ph", "4155550100")
    for traits in ({"phone": 4155550100.0}, {"phone": [4155550100.0, "4155550100"]}):
        user_data = event(track("Signed Up", traits=traits))["user_data"]
        assert user_data["ph"] == [expected]


def test_a_field_keeps_50_distinct_hashes_and_counts_the_rest_unhashed() -> None:
    emails = [f"person{index}@example.com" for index in range(20_000)]
    message = track(
        "Signed Up",
        # Repeats (verbatim or after normalization) are no loss and take no place.
        context={**WEB, "traits": {"email": ["PERSON0@example.com", *emails[:3], *emails]}},
        traits={"email": "late@example.com"},
        properties={"email": emails[0]},
    )
    event_object, hasher = mapped(message)
    kept = event_object["user_data"]["em"]
    assert len(kept) == MAX_VALUES_PER_FIELD
    assert kept == [digest("em", email) for email in emails[:MAX_VALUES_PER_FIELD]]
    # The 19,950 emails past the cap and the later trait, none of them hashed.
    assert hasher.truncated["em"] == 20_000 - 49 + 1 - 1
    assert len(hasher.memos["em"]) <= MAX_VALUES_PER_FIELD + 4
    assert isinstance(run(message), PinterestEvent)


def test_scalars_after_a_full_field_are_counted_once_each() -> None:
    emails = [f"p{index}@example.com" for index in range(MAX_VALUES_PER_FIELD)]
    message = track(
        "Signed Up",
        properties={"email": emails},
        context={**WEB, "traits": {"email": "other@example.com"}},
        traits={"email": emails[3]},  # already kept: no loss
    )
    event_object, hasher = mapped(message)
    assert len(event_object["user_data"]["em"]) == MAX_VALUES_PER_FIELD
    assert hasher.truncated["em"] == 1


def test_at_most_1000_contents_and_ids_de_duplicated_in_order() -> None:
    products = [{"sku": f"sku-{index % 15_000}", "price": 1.5} for index in range(20_000)]
    event_object, hasher = mapped(track("Order Completed", properties={"products": products}))
    custom = event_object["custom_data"]
    assert len(custom["contents"]) == MAX_CONTENTS
    assert custom["content_ids"] == [f"sku-{index}" for index in range(MAX_CONTENTS)]
    assert hasher.truncated["contents"] == 20_000 - MAX_CONTENTS
    repeated = [{"product_id": "b"}, {"product_id": "a"}, {"product_id": "b"}]
    custom = event(track("Order Completed", properties={"products": repeated}))["custom_data"]
    assert custom["content_ids"] == ["b", "a"]
    assert len(custom["contents"]) == 3


@pytest.mark.parametrize(
    ("url", "click_id"),
    [
        ("https://s.example/p?epik=&epik=abc", "abc"),
        ("https://s.example/p?a=1#x?epik=2", None),
        ("https://s.example/p#?epik=2", None),
        ("https://s.example/p?epik=a+b&epik=c", "a b"),
        ("https://s.example/epik=1", None),
        ("https://s.example/p?" + "&".join(f"epik=v{n}" for n in range(50_000)), "v0"),
    ],
)
def test_epik_edges(url: str, click_id: str | None) -> None:
    assert _epik(url) == click_id


_URL_PARTS = st.sampled_from(["epik=", "epik", "=", "&", "a", "%2B", "%", "+", "#", "?", "x="])


@given(st.lists(_URL_PARTS, max_size=12).map("".join))
def test_epik_reads_what_parse_qs_reads(tail: str) -> None:
    url = "https://s.example/p?" + tail
    expected = parse_qs(urlsplit(url).query).get("epik")
    assert _epik(url) == (expected[0] if expected else None)


# The shapes Segment's server-side libraries send (analytics-python's `Client._enqueue` after
# `clean`, analytics-node's `enqueue`): the page's URL in `properties`, no `context.page`, the
# library in `context`, ISO timestamps with an offset, the app passing ip and user agent.
ANALYTICS_PYTHON_PAGE: dict[str, Any] = {
    "properties": {
        "url": "https://shop.example/products/vase?utm_source=pinterest&epik=dj0yJnU9srv",
        "path": "/products/vase",
        "title": "Vase",
        "referrer": "https://www.pinterest.com/",
    },
    "integrations": {},
    "anonymousId": None,
    "timestamp": "2027-01-15T07:59:58.123456+00:00",
    "context": {
        "ip": "203.0.113.20",
        "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
        "library": {"name": "analytics-python", "version": "2.3.3"},
    },
    "category": "Products",
    "userId": "user-4711",
    "type": "page",
    "name": "Vase",
    "messageId": "0b0f7c52-94a3-4c48-9f7a-4f4b5c1b6d0e",
}
ANALYTICS_PYTHON_TRACK: dict[str, Any] = {
    "properties": {
        "product_id": "vase-01",
        "sku": "VASE-01",
        "name": "Ceramic Vase",
        "category": "Home",
        "brand": "Kiln",
        "price": 24.5,  # `clean` turns a Decimal into a float
        "quantity": 2,
        "currency": "usd",
        "url": "https://shop.example/products/vase?epik=dj0yJnU9srv",
        "email": "Alice@Example.com",
    },
    "integrations": {},
    "anonymousId": None,
    "timestamp": "2027-01-15T07:59:59.5+00:00",
    "context": {
        "ip": "203.0.113.20",
        "userAgent": "Mozilla/5.0",
        "library": {"name": "analytics-python", "version": "2.3.3"},
    },
    "userId": "user-4711",
    "type": "track",
    "event": "Product Added",
    "messageId": "3c8e1d4a-2b70-4a77-8f6e-0e2b1b9f3a11",
}
ANALYTICS_NODE_LIST: dict[str, Any] = {
    "type": "track",
    "event": "Product List Viewed",
    "properties": {
        "list_id": "summer",
        "category": "Garden",
        "products": [{"product_id": "g1", "price": 9}, {"product_id": "g2", "price": 12}],
        "url": "https://shop.example/c/garden",
    },
    "userId": "user-4711",
    "context": {
        "ip": "198.51.100.4",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
        "library": {"name": "@segment/analytics-node", "version": "2.1.2"},
    },
    "_metadata": {"jsRuntime": "node"},
    "timestamp": "2027-01-15T07:59:59.000Z",
    "messageId": "node-next-1736928000000-8c1e2f",
}


def test_server_side_library_messages() -> None:
    page = event(ANALYTICS_PYTHON_PAGE)
    assert page["event_name"] == "page_visit"
    assert page["event_time"] == int(NOW) - 2
    assert page["event_source_url"] == ANALYTICS_PYTHON_PAGE["properties"]["url"]
    assert page["user_data"]["click_id"] == "dj0yJnU9srv"
    assert page["user_data"]["external_id"] == [digest("external_id", "user-4711")]
    assert page["user_data"]["client_ip_address"] == "203.0.113.20"
    assert "custom_data" not in page  # a page's name and category are no product's

    added = event(ANALYTICS_PYTHON_TRACK)
    assert added["event_name"] == "add_to_cart"
    assert added["event_source_url"] == "https://shop.example/products/vase?epik=dj0yJnU9srv"
    assert added["user_data"]["em"] == [digest("em", "alice@example.com")]
    assert added["user_data"]["click_id"] == "dj0yJnU9srv"
    custom = added["custom_data"]
    assert (custom["value"], custom["currency"], custom["num_items"]) == ("49.0", "USD", 2)
    assert (custom["content_name"], custom["content_category"], custom["content_brand"]) == (
        "Ceramic Vase",
        "Home",
        "Kiln",
    )
    assert custom["content_ids"] == ["vase-01"]

    listed = event(ANALYTICS_NODE_LIST)
    assert listed["event_name"] == "view_category"
    assert listed["event_source_url"] == "https://shop.example/c/garden"
    assert listed["custom_data"]["content_category"] == "Garden"
    assert listed["custom_data"]["content_ids"] == ["g1", "g2"]
