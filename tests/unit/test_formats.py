"""The format registry: every configurable format resolves to a mapper, an unknown one is a
configuration error naming its key, and the `Mapper` protocol is all a new format needs."""

from __future__ import annotations

from typing import Any, Final, get_args

import orjson
import pytest

from stream.errors import ConfigurationError, InvalidMessage
from stream.formats import FORMATS, Mapped, Mapper
from stream.hashing import Hasher, digest
from stream.models import DeadLetter, PinterestEvent, Skipped
from stream.settings import OptOutRule, Settings, SourceSettings
from stream.transform import Transformer

NOW = 1_800_000_000.0


WEB_IDENTITY: Final = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0"}
# One message each configurable format maps to the same page visit.
PAGE_VISITS: Final[dict[str, dict[str, Any]]] = {
    "segment": {"type": "page", "timestamp": "2027-01-15T08:00:00Z", "context": WEB_IDENTITY},
    "pinterest": {
        "event_name": "page_visit",
        "action_source": "web",
        "event_time": int(NOW),
        "user_data": {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0"},
    },
}


def test_the_registry_holds_exactly_the_formats_settings_accept() -> None:
    accepted = get_args(SourceSettings.model_fields["format"].annotation)
    assert sorted(FORMATS) == sorted(accepted) == sorted(PAGE_VISITS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_name_resolves_to_its_mapper(name: str) -> None:
    source = SourceSettings(topic="t", format=name)  # type: ignore[arg-type]
    mapper = FORMATS[name](source, Hasher())
    assert isinstance(mapper.spec_typed, bool)
    mapped = mapper.map(orjson.dumps(PAGE_VISITS[name]), int(NOW * 1000))
    assert not isinstance(mapped, Skipped)
    assert mapped[0]["event_name"] == "page_visit"
    # The Transformer finds the same format by the source's setting.
    transformer = Transformer(Settings(sources=[source]), clock=lambda: NOW)
    result = transformer.transform(source, orjson.dumps(PAGE_VISITS[name]), int(NOW * 1000))
    assert isinstance(result, PinterestEvent), result
    assert (result.event_name, result.event_time) == ("page_visit", int(NOW))


def test_an_unknown_format_is_a_configuration_error_naming_the_key() -> None:
    # Settings refuse the value (tests/test_config.py); a source built around that validation
    # still cannot reach a mapper.
    source = SourceSettings(topic="clicks").model_copy(update={"format": "avro"})
    with pytest.raises(ConfigurationError) as raised:
        Transformer(Settings(sources=[source]))
    assert raised.value.key == "sources.clicks.format"
    assert "avro" in str(raised.value)


class CsvMapper:
    """A minimal non-JSON format: `event_name,event_time,event_id,email[,ad_account_id]`."""

    spec_typed: Final = False  # passes the event name through unchecked: the schema decides

    def __init__(self, source: SourceSettings, hasher: Hasher) -> None:
        self._hasher = hasher

    def map(self, value: bytes, kafka_timestamp_ms: int | None) -> Mapped | Skipped:
        fields = value.decode().split(",")
        if len(fields) < 4:
            raise InvalidMessage("decode_error", "expected 4 or 5 comma-separated fields")
        name, event_time, event_id, email = fields[:4]
        if name == "heartbeat":
            return Skipped("csv heartbeat")
        event: dict[str, Any] = {
            "event_name": name,
            "action_source": "offline",
            "event_time": int(event_time),
            "event_id": event_id,
            "user_data": {"em": self._hasher.hash_values("em", [email])},
        }
        message = {"name": name, "email": email}
        return event, message, fields[4] if len(fields) > 4 else None


def test_a_format_registered_through_the_protocol_alone_maps_messages() -> None:
    mapper: Mapper = CsvMapper(SourceSettings(topic="t"), Hasher())  # satisfies the protocol
    assert mapper.spec_typed is False
    settings = Settings(
        pinterest={"allowed_ad_accounts": ["222"]}, sources=[SourceSettings(topic="t")]
    )
    source = settings.sources[0].model_copy(
        update={
            "format": "csv",
            "ad_account_id": "111",
            "opt_out": OptOutRule(field="name", values=["lead"]),
        }
    )
    transformer = Transformer(settings, clock=lambda: NOW, formats={**FORMATS, "csv": CsvMapper})

    def run(line: str) -> Any:
        return transformer.transform(source, line.encode(), None)

    sent = run(f"checkout,{int(NOW)},order-1, Ada@Example.com ")
    assert isinstance(sent, PinterestEvent), sent
    assert (sent.event_id, sent.event_name, sent.ad_account_id) == ("order-1", "checkout", "111")
    body = orjson.loads(sent.body)
    assert body["user_data"] == {"em": [digest("em", "ada@example.com")]}
    assert "opt_out" not in body
    # The rules read the message the mapper decoded; the mapper's own account routes the event.
    routed = run(f"lead,{int(NOW)},lead-1,ada@example.com,222")
    assert isinstance(routed, PinterestEvent), routed
    assert routed.ad_account_id == "222"
    assert orjson.loads(routed.body)["opt_out"] is True
    assert run("heartbeat,0,h,x") == Skipped("csv heartbeat")
    assert run("checkout") == DeadLetter("decode_error", "expected 4 or 5 comma-separated fields")
    # Not spec-typed: the encoded event is validated, so a name Pinterest lacks is refused.
    refused = run(f"purchase,{int(NOW)},p-1,ada@example.com")
    assert isinstance(refused, DeadLetter)
    assert refused.reason == "invalid_event"
    assert transformer.transform(source, None, None) == DeadLetter(
        "decode_error", "message has no value"
    )
