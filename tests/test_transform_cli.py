"""`capi-stream transform` end to end: a realistic Segment file in, one line out per line."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stream.spec import HASHED_FIELDS
from tests.unit.spec_cases import OFFICIAL


def _iso(age_s: float) -> str:
    return datetime.fromtimestamp(time.time() - age_s, UTC).isoformat().replace("+00:00", "Z")


def _lines() -> list[bytes]:
    web = {
        "ip": "203.0.113.9",
        "userAgent": "Mozilla/5.0 (Macintosh)",
        "locale": "en-US",
        "page": {"url": "https://shop.example.com/p?epik=dj0yJnU9abc"},
    }
    traits = {
        "email": "Jane.Doe@Example.com",
        "phone": "+1 (415) 555-0100",
        "firstName": "Jane",
        "lastName": "Doe",
        "gender": "female",
        "birthday": "1990-02-14",
        "address": {"city": "San Francisco", "state": "CA", "postalCode": "94107", "country": "US"},
    }
    products = [
        {"product_id": "sku-1", "price": 14.99, "quantity": 2, "name": "Vase"},
        {"product_id": "sku-2", "price": 42.41, "quantity": 1},
    ]
    messages: list[Any] = [
        {"type": "page", "messageId": "p-1", "timestamp": _iso(60), "context": web},
        {
            "type": "track",
            "event": "Product Viewed",
            "messageId": "v-1",
            "timestamp": _iso(50),
            "context": web,
            "properties": {"product_id": "sku-1", "price": 14.99},
        },
        {
            "type": "track",
            "event": "Product Added",
            "messageId": "a-1",
            "timestamp": _iso(40),
            "context": web,
            "properties": {"product_id": "sku-1", "price": 14.99, "quantity": 2},
        },
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "o-1",
            "timestamp": _iso(30),
            "userId": "user-42",
            "context": {**web, "traits": traits},
            "properties": {
                "order_id": "100045",
                "revenue": 72.39,
                "currency": "usd",
                "products": products,
            },
        },
        {
            "type": "track",
            "event": "Signed Up",
            "messageId": "s-1",
            "timestamp": _iso(20),
            "context": web,
            "traits": {"email": "new@example.com"},
        },
        {
            "type": "screen",
            "messageId": "i-1",
            "timestamp": _iso(10),
            "context": {
                "device": {"type": "ios", "advertisingId": "EA7583CD-A667-48BC-B806-42ECB2B48606"},
                "app": {"name": "Shop", "version": "5.2.1"},
            },
        },
        {"type": "identify", "messageId": "id-1", "userId": "user-42", "traits": traits},
    ]
    lines = [orjson.dumps(m) for m in messages]
    lines.append(b'{"type": "page", "messageId": ')
    lines.append(orjson.dumps({"type": "page", "timestamp": _iso(5)}))
    lines.append(
        orjson.dumps(
            {"type": "page", "messageId": "old", "timestamp": _iso(30 * 86400), "context": web}
        )
    )
    return lines


def _transform(tmp_path: Path, lines: list[bytes], *args: str) -> list[Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "stream", "transform", *args],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    return [orjson.loads(line) for line in completed.stdout.splitlines()]


def test_realistic_file_line_for_line(tmp_path: Path) -> None:
    lines = _lines()
    out = _transform(tmp_path, lines)
    assert len(out) == len(lines)
    names = [o.get("event_name") for o in out[:6]]
    assert names == ["page_visit", "page_visit", "add_to_cart", "checkout", "signup", "page_visit"]
    for produced in out[:6]:
        OFFICIAL({"data": [produced]})
    checkout = out[3]
    assert checkout["event_id"] == "o-1"
    assert checkout["custom_data"]["value"] == "72.39"
    assert checkout["custom_data"]["num_items"] == 3
    assert checkout["user_data"]["click_id"] == "dj0yJnU9abc"
    # Every hashed field but the device's advertising id, which only the app event has.
    assert set(checkout["user_data"]) >= set(HASHED_FIELDS) - {"hashed_maids"}
    assert out[5]["action_source"] == "app_ios"
    assert "hashed_maids" in out[5]["user_data"]
    assert out[6] == {"skipped": {"reason": "segment identify message"}}
    assert out[7]["dead_letter"]["reason"] == "decode_error"
    assert out[8]["dead_letter"]["reason"] == "invalid_event"
    assert out[9]["dead_letter"]["reason"] == "too_old"
    text = b"\n".join(orjson.dumps(o) for o in out).decode()
    for raw in (
        "Jane.Doe@Example.com",
        "jane.doe@example.com",
        "555-0100",
        "San Francisco",
        "user-42",
    ):
        assert raw not in text


def test_config_source_and_ldp_rule(tmp_path: Path) -> None:
    config = tmp_path / "capi.yaml"
    config.write_text(
        "sources:\n"
        "  - topic: web\n"
        "  - topic: crm\n"
        "    name: offline-crm\n"
        "    action_source: offline\n"
        "    unknown_events: skip\n"
        "    ldp: {field: context.traits.address.state, values: [CA, California]}\n"
        "    opt_out: {field: properties.do_not_track, values: [true]}\n"
    )
    lines = _lines()
    unknown = orjson.dumps(
        {
            "type": "track",
            "event": "Coupon Applied",
            "timestamp": _iso(1),
            "context": {"ip": "203.0.113.9", "userAgent": "UA"},
        }
    )
    tracked = orjson.loads(lines[3])
    tracked["properties"]["do_not_track"] = True
    out = _transform(
        tmp_path,
        [lines[3], unknown, orjson.dumps(tracked)],
        "--config",
        str(config),
        "--source",
        "offline-crm",
    )
    assert out[0]["action_source"] == "offline"
    assert out[0]["custom_data"]["opt_out_type"] == "LDP"
    assert "opt_out" not in out[0]
    assert out[1] == {"skipped": {"reason": "event not mapped (unknown_events: skip)"}}
    assert out[2]["opt_out"] is True
    web = _transform(tmp_path, [lines[3]], "--config", str(config), "--source", "web")
    assert "opt_out_type" not in web[0]["custom_data"]


def test_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "stream", "transform", "--source", "nope"],
        input=b"",
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert b"--source" in completed.stderr
