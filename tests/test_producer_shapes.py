"""Realistic messages of each real producer's shape through `capi-stream transform`, with the
example configuration in config/ for that producer (issue 16: Segment's client and server
libraries, RudderStack, a custom web backend in Pinterest's shape; the CRM export has its own
test in test_transform_cli.py)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tests.test_transform_cli import _transform
from tests.unit.spec_cases import OFFICIAL

REPO = Path(__file__).resolve().parent.parent
NOW = time.time()
ISO = datetime.fromtimestamp(NOW - 60, UTC).isoformat(timespec="milliseconds")
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605"


def sha(text: str) -> list[str]:
    return [hashlib.sha256(text.encode()).hexdigest()]


def run(tmp_path: Path, config: str, messages: list[dict[str, Any]], *args: str) -> list[Any]:
    lines = [orjson.dumps(message) for message in messages]
    out = _transform(tmp_path, lines, "--config", str(REPO / "config" / config), *args)
    assert len(out) == len(messages)
    for produced in out:
        if "dead_letter" not in produced and "skipped" not in produced:
            OFFICIAL({"data": [produced]})
    return out


def test_segment_browser_and_server_library_events(tmp_path: Path) -> None:
    browser = {  # analytics.js
        "type": "track",
        "event": "Product Added",
        "messageId": "ajs-next-1",
        "anonymousId": "anon-1",
        "timestamp": ISO,
        "context": {
            "ip": "203.0.113.9",
            "userAgent": UA,
            "locale": "en-US",
            "page": {"url": "https://shop.example/p/cups?utm_source=pin&epik=dj0yJnU9"},
        },
        "properties": {"product_id": "sku-7", "name": "Cups", "price": 14.99, "quantity": 3},
    }
    server_page = {  # analytics-python page(): the URL in properties, no context.page
        "type": "page",
        "messageId": "py-1",
        "userId": "user-42",
        "timestamp": ISO.replace("Z", "+00:00"),
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
        "properties": {"url": "https://shop.example/checkout?epik=dj0yJnU9&email=a%40b.co"},
        "traits": {"email": "Alice@Example.com"},
    }
    server_order = {  # analytics-node track() from the order service
        "type": "track",
        "event": "Order Completed",
        "messageId": "node-1",
        "userId": "user-42",
        "timestamp": ISO,
        "context": {
            "library": {"name": "analytics-node"},
            "ip": "203.0.113.9",
            "userAgent": UA,
            "traits": {"email": "alice@example.com"},
        },
        "properties": {"order_id": "o-9001", "total": 44.97, "currency": "usd"},
    }
    identify = {"type": "identify", "userId": "user-42", "traits": {"email": "a@b.co"}}
    out = run(tmp_path, "segment.yaml", [browser, server_page, server_order, identify])
    added, page, order, skipped = out
    assert added["event_name"] == "add_to_cart"
    assert added["custom_data"]["value"] == "44.97"  # price x quantity
    assert added["custom_data"]["content_name"] == "Cups"
    assert added["user_data"]["click_id"] == "dj0yJnU9"
    assert page["event_source_url"] == "https://shop.example/checkout?epik=dj0yJnU9"
    assert page["user_data"]["click_id"] == "dj0yJnU9"
    assert page["user_data"]["em"] == sha("alice@example.com")
    assert order["event_name"] == "checkout"
    assert order["event_id"] == "o-9001"  # event_id_path: the Tag's id
    assert order["custom_data"]["value"] == "44.97"
    assert order["custom_data"]["currency"] == "USD"
    assert skipped == {"skipped": {"reason": "segment identify message"}}


def test_rudderstack_events(tmp_path: Path) -> None:
    web = {
        "type": "track",
        "event": "Checkout Started",
        "rudderId": "r-1",
        "messageId": "rs-1",
        "anonymousId": "anon-9",
        "channel": "web",
        "originalTimestamp": ISO,
        "sentAt": ISO,
        "context": {"ip": "203.0.113.10", "userAgent": UA, "traits": {"email": "bob@example.org"}},
        "properties": {"revenue": 30, "currency": "EUR", "products": [{"sku": "b-1", "price": 30}]},
    }
    app = {
        "type": "track",
        "event": "Application Opened",
        "messageId": "rs-2",
        "channel": "mobile",
        "originalTimestamp": ISO,
        "context": {
            "device": {"type": "ios", "advertisingId": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
            "os": {"version": "17.5"},
            "app": {"name": "Shop", "version": "4.2.0"},
        },
    }
    unknown = {"type": "track", "event": "Scrolled", "messageId": "rs-3", "originalTimestamp": ISO}
    started, opened, scrolled = run(tmp_path, "rudderstack.yaml", [web, app, unknown])
    assert started["event_name"] == "initiate_checkout"
    assert started["custom_data"]["value"] == "30"
    assert started["custom_data"]["content_ids"] == ["b-1"]
    assert opened["action_source"] == "app_ios"
    assert opened["user_data"]["hashed_maids"] == sha("6d92078a-8246-4ba4-ae5b-76104861e7dc")
    assert scrolled == {"skipped": {"reason": "event not mapped (unknown_events: skip)"}}


def test_custom_backend_in_pinterests_shape(tmp_path: Path) -> None:
    raw = {
        "event_name": "checkout",
        "event_time": int(NOW) - 30,
        "event_id": "ord-77",
        "event_source_url": "https://shop.example/thanks?order=77&phone=%2B1%20415%20555%200100",
        "user_data": {
            "em": [" Carol@Example.com "],
            "ph": ["+1 (415) 555-0100"],
            "client_ip_address": "203.0.113.11",
            "client_user_agent": UA,
        },
        "custom_data": {"currency": "USD", "value": 19.5, "order_id": "ord-77"},
    }
    prehashed = {**raw, "event_id": "ord-78", "user_data": {"em": sha("carol@example.com")}}
    unknown_key = {**raw, "event_id": "ord-79", "user_data": {"carol@example.com": ["x"]}}
    out = run(tmp_path, "custom-backend.yaml", [raw, prehashed, unknown_key])
    sent, hashed, refused = out
    assert sent["action_source"] == "web"
    assert sent["user_data"]["em"] == sha("carol@example.com")
    assert sent["user_data"]["ph"] == sha("14155550100")
    assert sent["custom_data"]["value"] == "19.5"
    assert sent["event_source_url"] == "https://shop.example/thanks?order=77"
    assert hashed["user_data"]["em"] == sha("carol@example.com")
    assert refused["dead_letter"]["reason"] == "invalid_event"
    assert "carol" not in refused["dead_letter"]["message"]
