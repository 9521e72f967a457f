"""Per-source rules the Transformer applies to every format: `event_id_path`, and an LDP rule
that also sets the state of residence (counted and warned about when it stays missing)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from stream.errors import ConfigurationError
from stream.hashing import digest
from stream.models import DeadLetter, PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer
from tests.unit.spec_cases import OFFICIAL

NOW = 1_800_000_000.0
ISO_NOW = "2027-01-15T08:00:00Z"
WEB = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0"}
CCPA = {
    "field": "context.location.region",
    "values": ["California", "CA"],
    "state": "ca",
    "country": "us",
}


def transformer(**source: Any) -> tuple[Transformer, Any]:
    settings = Settings(pinterest={"ad_account_id": "1"}, sources=[{"topic": "t", **source}])
    return Transformer(settings, clock=lambda: NOW), settings.sources[0]


def sent(message: dict[str, Any] | bytes, **source: Any) -> dict[str, Any]:
    engine, src = transformer(**source)
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    result = engine.transform(src, raw, int(NOW * 1000))
    assert isinstance(result, PinterestEvent), result
    body: dict[str, Any] = orjson.loads(result.body)
    OFFICIAL({"data": [body]})
    assert result.event_id == body["event_id"]
    return body


def checkout(**properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "timestamp": ISO_NOW,
        "context": dict(WEB),
        "properties": {"revenue": 20, **properties},
    }


# --- event_id_path ---------------------------------------------------------------------------

TAG_DEDUP = {"event_id_path": ["properties.order_id", "messageId"]}


def test_the_first_path_found_gives_the_event_id() -> None:
    # The Tag sends `eventID` = the order id; the server event must carry the same.
    assert sent(checkout(order_id="100045"), **TAG_DEDUP)["event_id"] == "100045"
    assert sent(checkout(), **TAG_DEDUP)["event_id"] == "m-1"
    assert sent(checkout(order_id=""), **TAG_DEDUP)["event_id"] == "m-1"
    assert sent(checkout(order_id=None), **TAG_DEDUP)["event_id"] == "m-1"
    # Without the setting, the format's own rule (properties.event_id, then messageId).
    assert sent(checkout(order_id="100045", event_id="e-9"))["event_id"] == "e-9"


def test_without_any_path_the_formats_own_id_applies() -> None:
    message = checkout(event_id="e-9")
    del message["messageId"]
    assert sent(message, event_id_path=["properties.order_id"])["event_id"] == "e-9"


def test_numeric_ids_keep_their_exact_digits() -> None:
    assert sent(checkout(order_id=100045), **TAG_DEDUP)["event_id"] == "100045"
    raw = orjson.dumps(checkout(order_id="X"))
    ids = set()
    for digits in (b"98765432109876543210987651", b"98765432109876543210987652"):
        body = sent(raw.replace(b'"X"', digits), **TAG_DEDUP)
        assert body["event_id"] == digits.decode()
        ids.add(body["event_id"])
    assert len(ids) == 2, "two distinct ids never merge"


def test_paths_apply_to_the_pinterest_format_too() -> None:
    message = {
        "event_name": "checkout",
        "action_source": "offline",
        "event_time": int(NOW) - 60,
        "event_id": "row-17",
        "user_data": {"em": "alice@example.com"},
        "custom_data": {"order_id": "100045"},
    }
    body = sent(message, format="pinterest", event_id_path=["custom_data.order_id"])
    assert body["event_id"] == "100045"


def test_an_id_of_the_wrong_shape_is_a_dead_letter_naming_the_path() -> None:
    engine, source = transformer(**TAG_DEDUP)
    result = engine.transform(source, orjson.dumps(checkout(order_id={"n": 1})), None)
    assert result == DeadLetter("mapping_error", "properties.order_id: expected a string")


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b"])
def test_an_empty_path_segment_is_a_configuration_error(path: str) -> None:
    with pytest.raises(ValueError, match="event_id_path"):
        Settings(sources=[{"topic": "t", "event_id_path": [path]}])


# --- LDP with the state of residence ------------------------------------------------------------


def californian(**context: Any) -> dict[str, Any]:
    message = checkout()
    message["context"].update({"location": {"region": "California"}, **context})
    return message


def test_an_ldp_rule_sets_the_flag_state_and_country() -> None:
    body = sent(californian(), ldp=CCPA)
    assert body["custom_data"]["opt_out_type"] == "LDP"
    assert body["user_data"]["st"] == [digest("st", "ca")]
    assert body["user_data"]["country"] == [digest("country", "us")]
    # Hashed exactly as the same value sent by the producer would be.
    traits = californian(traits={"address": {"state": "CA", "country": "United States"}})
    assert sent(traits)["user_data"]["st"] == body["user_data"]["st"]
    assert sent(traits)["user_data"]["country"] == body["user_data"]["country"]


def test_the_events_own_state_and_country_are_kept() -> None:
    message = californian(traits={"address": {"state": "Nevada", "country": "MX"}})
    body = sent(message, ldp=CCPA)
    assert body["user_data"]["st"] == [digest("st", "nv")]
    assert body["user_data"]["country"] == [digest("country", "mx")]


def test_events_the_rule_does_not_match_get_nothing() -> None:
    message = checkout()
    message["context"]["location"] = {"region": "Texas"}
    body = sent(message, ldp=CCPA)
    assert "st" not in body["user_data"]
    assert "opt_out_type" not in body["custom_data"]


def test_one_rule_per_state_each_sets_its_own_state() -> None:
    region = "context.location.region"
    rules = [
        CCPA,
        {"field": region, "values": ["Colorado", "CO"], "state": "co", "country": "us"},
        {"field": "context.traits.address.state", "values": ["Virginia"], "state": "va"},
        {"field": region, "values": ["Utah"]},
    ]
    for where, state in (
        ({"location": {"region": "co"}}, "co"),
        ({"location": {"region": "CALIFORNIA"}}, "ca"),
        ({"location": {"region": "Texas"}, "traits": {"address": {"state": "Virginia"}}}, "va"),
    ):
        message = checkout()
        message["context"].update(where)
        body = sent(message, ldp=rules)
        assert body["custom_data"]["opt_out_type"] == "LDP"
        assert body["user_data"]["st"] == [digest("st", state)]
    utah = californian(location={"region": "Utah"})
    body = sent(utah, ldp=rules)
    assert body["custom_data"]["opt_out_type"] == "LDP"
    assert "st" not in body["user_data"]


def test_a_state_that_normalizes_to_nothing_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"sources\.t\.ldp\.country"):
        transformer(ldp={**CCPA, "country": "Atlantis"})
    with pytest.raises(ConfigurationError, match=r"sources\.t\.ldp\[1\]\.country"):
        transformer(ldp=[CCPA, {**CCPA, "country": "Atlantis"}])


def test_ldp_without_state_is_counted_and_warned_once_per_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="stream.transform")
    settings = Settings(
        pinterest={"ad_account_id": "1"},
        sources=[
            {"topic": "no-state", "ldp": {"field": "context.location.region", "values": ["CA"]}},
            {"topic": "with-state", "ldp": CCPA},
            {"topic": "crm", "format": "pinterest", "action_source": "offline"},
        ],
    )
    engine = Transformer(settings, clock=lambda: NOW)
    no_state, with_state, crm = settings.sources
    californians = orjson.dumps(californian(location={"region": "CA"}))
    for _ in range(3):
        assert isinstance(engine.transform(no_state, californians, None), PinterestEvent)
        assert isinstance(engine.transform(with_state, californians, None), PinterestEvent)
    assert engine.ldp_without_state() == 3
    row: dict[str, Any] = {
        "event_name": "checkout",
        "event_time": int(NOW) - 60,
        "user_data": {"em": "alice@example.com", "opt_out_type": "LDP"},
    }
    for _ in range(2):
        assert isinstance(engine.transform(crm, orjson.dumps(row), None), PinterestEvent)
    row["user_data"]["st"] = "CA"
    assert isinstance(engine.transform(crm, orjson.dumps(row), None), PinterestEvent)
    assert engine.ldp_without_state() == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "source no-state" in warnings[0]
    assert "source crm" in warnings[1]
    # A dead-lettered event is not sent, so not counted.
    del row["user_data"]["st"]
    late = orjson.dumps({**row, "event_time": int(NOW) - 30 * 86400})
    assert isinstance(engine.transform(crm, late, None), DeadLetter)
    assert engine.ldp_without_state() == 5
