"""`capi-stream transform` end to end: a realistic Segment file in, one line out per line."""

from __future__ import annotations

import hashlib
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


REPO = Path(__file__).resolve().parent.parent


def _ms(age_s: float) -> int:
    return int((time.time() - age_s) * 1000)


def test_multi_source_crm_event_becomes_an_offline_event(tmp_path: Path) -> None:
    # The CRM row: no action_source, which the `crm` source's default fills.
    row = {
        "event_name": "checkout",
        "event_time": int(time.time()) - 60,
        "event_id": "o-1",
        "user_data": {"em": ["alice@example.com"]},
        "custom_data": {"value": "12.5", "currency": "USD"},
    }
    config = str(REPO / "config" / "multi-source.yaml")
    [out] = _transform(tmp_path, [orjson.dumps(row)], "--config", config, "--source", "crm")
    OFFICIAL({"data": [out]})
    assert out["action_source"] == "offline"
    assert out["event_id"] == "o-1"
    assert out["custom_data"] == {"value": "12.5", "currency": "USD"}
    assert out["user_data"]["em"] == [hashlib.sha256(b"alice@example.com").hexdigest()]


def _crm_export() -> list[bytes]:
    """Lines as a CRM's export job writes them: numbers, ms and ISO times, LDP rows."""
    rows: list[Any] = [
        {
            "event_name": "checkout",
            "event_time": _ms(3600),
            "event_id": "row-1",
            "user_data": {
                "em": "Alice@Example.com",
                "ph": 4155550100.0,
                "fn": "Alice",
                "ln": "Smith",
                "ct": "San Francisco",
                "st": "CA",
                "zp": 94107,
                "external_id": 881234,
            },
            "custom_data": {
                "currency": "USD",
                "value": 72.39,
                "order_id": 100045,
                "num_items": 3,
                "contents": [
                    {"id": "sku-1", "item_price": 14.99, "quantity": 2},
                    {"id": "sku-2", "item_price": 42.41, "quantity": 1},
                ],
            },
        },
        {
            "event_name": "checkout",
            "event_time": _iso(7200),
            "event_id": "row-2",
            "user_data": {"em": "bob@example.com", "st": "California"},
            "custom_data": {"currency": "USD", "value": 0.1, "order_id": "100046"},
        },
        {
            # A plugin's LDP flag in user_data, without the state: counted, still sent.
            "event_name": "lead",
            "event_time": str(_ms(600)),
            "event_id": "row-3",
            "user_data": {"em": "carol@example.com", "opt_out_type": "LDP"},
        },
        {
            "event_name": "checkout",
            "event_time": _ms(60),
            "user_data": {"em": "dave@example.com"},
            "custom_data": {"value": 12, "currency": "USD", "order_id": "X"},
        },
    ]
    lines = [orjson.dumps(row) for row in rows]
    # An order number beyond 64 bits, which orjson alone would read as a rounded float.
    lines[3] = lines[3].replace(b'"X"', b"123456789012345678901234567890")
    lines.append(orjson.dumps({**rows[1], "event_time": _ms(9 * 86400)}))
    return lines


def test_crm_offline_export(tmp_path: Path) -> None:
    config = str(REPO / "config" / "crm-offline.yaml")
    out = _transform(tmp_path, _crm_export(), "--config", config, "--source", "crm")
    for produced in out[:4]:
        OFFICIAL({"data": [produced]})
        assert produced["action_source"] == "offline"
    first, second, third, fourth = out[:4]
    assert first["event_id"] == "100045"
    assert abs(first["event_time"] - (time.time() - 3600)) < 60
    assert first["custom_data"]["value"] == "72.39"
    assert [c["item_price"] for c in first["custom_data"]["contents"]] == ["14.99", "42.41"]
    assert first["user_data"]["ph"] == [hashlib.sha256(b"4155550100").hexdigest()]
    assert first["user_data"]["zp"] == [hashlib.sha256(b"94107").hexdigest()]
    # California: LDP, the state as sent and the rule's country.
    state = [hashlib.sha256(b"ca").hexdigest()]
    country = [hashlib.sha256(b"us").hexdigest()]
    for californian in (first, second):
        assert californian["custom_data"]["opt_out_type"] == "LDP"
        assert californian["user_data"]["st"] == state
        assert californian["user_data"]["country"] == country
    assert second["event_id"] == "100046"
    assert abs(second["event_time"] - (time.time() - 7200)) < 60
    assert second["custom_data"]["value"] == "0.1"
    assert third["event_id"] == "row-3"
    assert third["custom_data"] == {"opt_out_type": "LDP"}
    assert "opt_out_type" not in third["user_data"]
    assert abs(third["event_time"] - (time.time() - 600)) < 60
    assert fourth["event_id"] == "123456789012345678901234567890"
    assert fourth["custom_data"]["value"] == "12"
    assert out[4] == {
        "dead_letter": {"reason": "too_old", "message": "event_time: older than 7 days"}
    }
    text = b"\n".join(orjson.dumps(o) for o in out).decode()
    for raw in ("Alice@Example.com", "alice", "4155550100", "San Francisco", "881234"):
        assert raw not in text


def test_identity_enrichment_previews_an_identify_then_a_track(tmp_path: Path) -> None:
    config = tmp_path / "capi.yaml"
    config.write_text("sources:\n  - topic: web\n    enrich: identity\n")
    web = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (Macintosh)"}
    identify = {
        "type": "identify",
        "userId": "user-41",
        "anonymousId": "anon-41",
        "timestamp": _iso(120),
        "traits": {"email": "Jane.Doe@Example.com", "firstName": "Jane"},
    }
    added = {
        "type": "track",
        "event": "Product Added",
        "anonymousId": "anon-41",
        "timestamp": _iso(60),
        "context": web,
        "properties": {"product_id": "sku-1", "price": 14.99},
    }
    stranger = {**added, "anonymousId": "anon-99"}
    lines = [orjson.dumps(m) for m in (identify, added, stranger)]
    out = _transform(tmp_path, lines, "--config", str(config))
    assert out[0] == {"skipped": {"reason": "segment identify message"}}
    OFFICIAL({"data": [out[1]]})
    user_data = out[1]["user_data"]
    assert user_data["em"] == [hashlib.sha256(b"jane.doe@example.com").hexdigest()]
    assert user_data["fn"] == [hashlib.sha256(b"jane").hexdigest()]
    assert user_data["external_id"] == [hashlib.sha256(b"user-41").hexdigest()]
    assert "em" not in out[2]["user_data"]
    # Without enrichment the same lines map on their own.
    plain = tmp_path / "plain.yaml"
    plain.write_text("sources:\n  - topic: web\n")
    assert "em" not in _transform(tmp_path, lines, "--config", str(plain))[1]["user_data"]
