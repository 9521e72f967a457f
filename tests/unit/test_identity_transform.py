"""Enrichment inside `Transformer.transform`: identify calls teach, later events are enriched,
and privacy learned for a user follows their later events."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from stream.identity.store import MemoryStore
from stream.models import PinterestEvent, Skipped
from stream.settings import Settings, SourceSettings
from stream.transform import Transformer

NOW = time.time()


def _iso(age_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - age_s))


def transformer(**source: Any) -> tuple[Transformer, SourceSettings]:
    settings = Settings(
        sources=[{"topic": "web", "enrich": "identity", **source}],  # type: ignore[list-item]
        pinterest={"ad_account_id": "1"},  # type: ignore[arg-type]
    )
    return Transformer(settings, clock=lambda: NOW), settings.sources[0]


def identify(**extra: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "identify",
            "userId": "u-7",
            "anonymousId": "a-7",
            "timestamp": _iso(100),
            "traits": {"email": "Ann@Example.com"},
            **extra,
        }
    )


def track(**extra: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": "Order Completed",
            "anonymousId": "a-7",
            "timestamp": _iso(10),
            "context": {"ip": "203.0.113.1", "userAgent": "UA"},
            "properties": {"total": 5, "currency": "USD"},
            **extra,
        }
    )


def sent(result: object) -> dict[str, Any]:
    assert type(result) is PinterestEvent
    body: dict[str, Any] = orjson.loads(result.body)
    return body


def test_an_identify_teaches_and_a_later_track_carries_the_hashed_email() -> None:
    transform, source = transformer()
    store = MemoryStore()
    assert transform.transform(source, identify(), None, store) == Skipped(
        "segment identify message"
    )
    event = sent(transform.transform(source, track(), None, store))
    assert event["user_data"]["em"] == [hashlib.sha256(b"ann@example.com").hexdigest()]
    assert event["user_data"]["external_id"] == [hashlib.sha256(b"u-7").hexdigest()]
    assert transform.profiles.enriched["em"] == 1
    # The store holds hashes only.
    assert b"ann@example.com" not in b"".join(store.entries.values())


def test_without_a_store_nothing_is_learned_or_added() -> None:
    transform, source = transformer()
    transform.transform(source, identify(), None)
    event = sent(transform.transform(source, track(), None))
    assert "em" not in event["user_data"]


def test_an_opt_out_learned_from_an_identify_applies_to_later_events() -> None:
    transform, source = transformer(opt_out={"field": "context.consent", "values": ["denied"]})
    store = MemoryStore()
    transform.transform(source, identify(context={"consent": "denied"}), None, store)
    assert sent(transform.transform(source, track(), None, store))["opt_out"] is True


def test_ldp_learned_for_a_user_flags_their_later_events() -> None:
    transform, source = transformer(
        ldp={"field": "context.location.region", "values": ["CA"], "state": "ca"}
    )
    store = MemoryStore()
    transform.transform(source, identify(context={"location": {"region": "CA"}}), None, store)
    event = sent(transform.transform(source, track(), None, store))
    assert event["custom_data"]["opt_out_type"] == "LDP"
    # The rule's state was learned with the flag, so Pinterest gets the state too.
    assert event["user_data"]["st"] == [hashlib.sha256(b"ca").hexdigest()]
