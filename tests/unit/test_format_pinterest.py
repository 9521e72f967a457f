"""The `pinterest` format on what CRM exports really write: the source's defaults fill what the
message lacks, and numbers, millisecond or ISO times and a misplaced `opt_out_type` are
normalized (and counted), not dead-lettered."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.formats.pinterest import NORMALIZATIONS, PinterestMapper
from stream.hashing import Hasher, digest
from stream.models import DeadLetter, PinterestEvent
from stream.settings import Settings, SourceSettings
from stream.transform import Transformer
from tests.unit.spec_cases import OFFICIAL

NOW = 1_800_000_000
CRM: dict[str, Any] = {"topic": "crm", "format": "pinterest", "action_source": "offline"}


def order(**fields: Any) -> dict[str, Any]:
    """The issue's CRM row: no action_source, the value as text."""
    return {
        "event_name": "checkout",
        "event_time": NOW - 60,
        "event_id": "o-1",
        "user_data": {"em": ["alice@example.com"]},
        "custom_data": {"value": "12.5", "currency": "USD"},
        **fields,
    }


def run(message: dict[str, Any] | bytes, **source: Any) -> tuple[Any, Transformer]:
    settings = Settings(pinterest={"ad_account_id": "549755885175"}, sources=[{**CRM, **source}])
    transformer = Transformer(settings, clock=lambda: float(NOW))
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    return transformer.transform(settings.sources[0], raw, NOW * 1000), transformer


def sent(message: dict[str, Any] | bytes, **source: Any) -> dict[str, Any]:
    result, _ = run(message, **source)
    assert isinstance(result, PinterestEvent), result
    body: dict[str, Any] = orjson.loads(result.body)
    OFFICIAL({"data": [body]})
    return body


def test_the_sources_action_source_fills_a_message_without_one() -> None:
    result, _ = run(order())
    assert isinstance(result, PinterestEvent)
    assert result.action_source == "offline"
    assert orjson.loads(result.body)["action_source"] == "offline"
    assert sent(order(), action_source="web")["action_source"] == "web"
    # The message's own value wins over the default.
    assert sent(order(action_source="web"))["action_source"] == "web"
    assert sent(order(action_source=None))["action_source"] == "offline"
    assert sent(order(action_source=""))["action_source"] == "offline"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12.5, "12.5"),
        (12, "12"),
        (0.30000000000000004, "0.30000000000000004"),
        (0.3, "0.3"),
        (72.39, "72.39"),
        (1e-7, "0.0000001"),
        (-5.25, "-5.25"),
    ],
)
def test_numbers_become_exact_decimal_strings(value: float, text: str) -> None:
    contents = [{"id": "sku-1", "item_price": value, "quantity": 1}, {"id": "sku-2"}]
    body = sent(order(custom_data={"value": value, "currency": "USD", "contents": contents}))
    assert body["custom_data"]["value"] == text
    assert body["custom_data"]["contents"] == [
        {"id": "sku-1", "item_price": text, "quantity": 1},
        {"id": "sku-2"},
    ]


def test_the_decimal_string_is_the_number_as_written_in_the_message() -> None:
    raw = orjson.dumps(order()).replace(b'"12.5"', b"19.99")
    assert sent(raw)["custom_data"]["value"] == "19.99"


@pytest.mark.parametrize(
    ("event_time", "what"),
    [
        ((NOW - 60) * 1000, "event_time_ms"),
        ((NOW - 60) * 1000 + 999, "event_time_ms"),
        (float((NOW - 60) * 1000), "event_time_ms"),
        (str((NOW - 60) * 1000), "event_time_ms"),
        ("2027-01-15T07:59:00Z", "event_time_iso"),
        ("2027-01-15T07:59:00.250+00:00", "event_time_iso"),
        ("2027-01-15 09:59:00+02:00", "event_time_iso"),
        ("2027-01-15T07:59:00", "event_time_iso"),
        (str(NOW - 60), "event_time_text"),
        (float(NOW - 60), "event_time_float"),
        (NOW - 60 + 0.75, "event_time_float"),
    ],
)
def test_event_time_shapes_become_unix_seconds(event_time: Any, what: str) -> None:
    assert NOW == 1_800_000_000  # 2027-01-15T08:00:00Z
    result, transformer = run(order(event_time=event_time))
    assert isinstance(result, PinterestEvent), result
    assert result.event_time == NOW - 60
    assert orjson.loads(result.body)["event_time"] == NOW - 60
    counts = transformer.normalized()
    assert counts[what] == 1
    assert sum(counts.values()) == 1


def test_seconds_are_left_alone_and_not_counted() -> None:
    result, transformer = run(order())
    assert isinstance(result, PinterestEvent)
    assert result.event_time == NOW - 60
    assert transformer.normalized() == dict.fromkeys(NORMALIZATIONS, 0)


def test_an_unreadable_time_is_still_the_schemas_to_report() -> None:
    result, transformer = run(order(event_time="yesterday"))
    assert result == DeadLetter("invalid_event", "event_time: expected integer")
    assert transformer.normalized()["event_time_iso"] == 0


def test_opt_out_type_in_user_data_moves_to_custom_data() -> None:
    body = sent(order(user_data={"em": "alice@example.com", "opt_out_type": "LDP"}))
    assert body["custom_data"] == {"value": "12.5", "currency": "USD", "opt_out_type": "LDP"}
    assert body["user_data"] == {"em": [digest("em", "alice@example.com")]}
    both = order(
        user_data={"em": "alice@example.com", "opt_out_type": "LDP"},
        custom_data={"opt_out_type": "RDP"},
    )
    assert sent(both)["custom_data"] == {"opt_out_type": "RDP,LDP"}
    alone = order(user_data={"em": "alice@example.com", "opt_out_type": "LDP"})
    del alone["custom_data"]
    assert sent(alone)["custom_data"] == {"opt_out_type": "LDP"}
    ignored = order(user_data={"em": "alice@example.com", "opt_out_type": ""})
    assert "opt_out_type" not in sent(ignored)["custom_data"]


def test_a_numeric_event_id_keeps_every_digit() -> None:
    assert sent(order(event_id=100045))["event_id"] == "100045"
    # Beyond 64 bits orjson reads a float; the two ids differ only in their last digit.
    raw = orjson.dumps(order(event_id="X")).replace(b'"X"', b"{}")
    first = sent(raw.replace(b"{}", b"123456789012345678901234567891"))
    second = sent(raw.replace(b"{}", b"123456789012345678901234567892"))
    assert first["event_id"] == "123456789012345678901234567891"
    assert second["event_id"] == "123456789012345678901234567892"
    # A fraction with more digits than a float holds is read again the same way.
    third = sent(raw.replace(b"{}", b"98765432109876543.21"))
    fourth = sent(raw.replace(b"{}", b"98765432109876543.22"))
    assert [third["event_id"], fourth["event_id"]] == [
        "98765432109876543.21",
        "98765432109876543.22",
    ]


def test_numeric_order_and_product_ids_become_their_digits() -> None:
    custom = {
        "order_id": 100045,
        "content_ids": [3001, "sku-2", 3003.0],
        "contents": [{"id": 3001, "quantity": 1}, {"id": "sku-2"}],
    }
    result, transformer = run(order(custom_data=custom))
    assert isinstance(result, PinterestEvent), result
    body = orjson.loads(result.body)
    assert body["custom_data"] == {
        "order_id": "100045",
        "content_ids": ["3001", "sku-2", "3003"],
        "contents": [{"id": "3001", "quantity": 1}, {"id": "sku-2"}],
    }
    counts = transformer.normalized()
    assert (counts["order_id_number"], counts["content_id_number"]) == (1, 3)
    raw = orjson.dumps(order(custom_data={"order_id": "X"}))
    long = sent(raw.replace(b'"X"', b"123456789012345678901234567891"))
    assert long["custom_data"]["order_id"] == "123456789012345678901234567891"
    # Product ids beyond 64 bits keep their digits too, wherever they are in their arrays.
    products = {"content_ids": ["sku-1", "X"], "contents": [{"id": "sku-1"}, {"id": "Y"}]}
    raw = orjson.dumps(order(custom_data=products))
    raw = raw.replace(b'"X"', b"123456789012345678901234567892")
    raw = raw.replace(b'"Y"', b"123456789012345678901234567893")
    custom = sent(raw)["custom_data"]
    assert custom["content_ids"] == ["sku-1", "123456789012345678901234567892"]
    assert custom["contents"] == [{"id": "sku-1"}, {"id": "123456789012345678901234567893"}]


def test_every_normalization_is_counted_per_kind() -> None:
    mapper = PinterestMapper(SourceSettings(**CRM), Hasher())
    assert mapper.normalized == dict.fromkeys(NORMALIZATIONS, 0)
    row = order(
        event_id=7,
        event_time=(NOW - 60) * 1000,
        user_data={"em": "alice@example.com", "opt_out_type": "LDP"},
        custom_data={"value": 3, "contents": [{"item_price": 1.5}, {"item_price": 1.5}]},
    )
    for _ in range(2):
        mapper.map(orjson.dumps(row), None)
    assert mapper.normalized == {
        **dict.fromkeys(NORMALIZATIONS, 0),
        "event_id_number": 2,
        "event_time_ms": 2,
        "value_number": 2,
        "item_price_number": 4,
        "opt_out_type_in_user_data": 2,
    }


def test_the_transformer_sums_the_counts_of_every_source() -> None:
    settings = Settings(
        pinterest={"ad_account_id": "1"},
        sources=[{"topic": "web"}, CRM, {**CRM, "topic": "crm-2"}],
    )
    transformer = Transformer(settings, clock=lambda: float(NOW))
    row = orjson.dumps(order(custom_data={"value": 1.25}))
    for source in settings.sources[1:]:
        assert isinstance(transformer.transform(source, row, None), PinterestEvent)
    assert transformer.normalized()["value_number"] == 2
    assert set(transformer.normalized()) == set(NORMALIZATIONS)
