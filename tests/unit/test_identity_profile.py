"""The identity stage's rules over an in-memory store: learn, add, link, expire."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.identity.profile import (
    LDP,
    NOTHING_LEARNED,
    OPT_OUT,
    REFRESH_S,
    IdentityProfiles,
    identity_key,
)
from stream.identity.store import MemoryStore

DAY = 86_400.0
EM_A, EM_B, PH = "a" * 64, "b" * 64, "c" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.puts += 1
        super().put(key, value)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def profiles(clock: Clock) -> IdentityProfiles:
    return IdentityProfiles(ttl_s=30 * DAY, clock=clock)


def event(event_time: int = 100, **user_data: Any) -> dict[str, Any]:
    return {"event_name": "checkout", "event_time": event_time, "user_data": dict(user_data)}


def test_first_seen_identifiers_are_added_to_later_events(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    message = {"userId": "u1"}
    profiles.learn(store, 0, message, {"em": [EM_A], "ph": [PH]}, 100, NOTHING_LEARNED)
    later = event(200, client_ip_address="1.2.3.4")
    profiles.enrich(store, 0, message, later, NOTHING_LEARNED)
    assert later["user_data"] == {"client_ip_address": "1.2.3.4", "em": [EM_A], "ph": [PH]}
    assert profiles.enriched["em"] == 1
    assert profiles.enriched["ph"] == 1
    assert profiles.enriched["fn"] == 0


def test_what_an_event_carries_is_never_overridden(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    message = {"userId": "u1"}
    profiles.learn(store, 0, message, {"em": [EM_A]}, 300, NOTHING_LEARNED)
    older = event(100, em=[EM_B])
    profiles.enrich(store, 0, message, older, NOTHING_LEARNED)
    assert older["user_data"]["em"] == [EM_B]
    assert profiles.enriched["em"] == 0


def test_newer_values_win_and_older_ones_only_fill_gaps(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    message = {"userId": "u1"}
    profiles.learn(store, 0, message, {"em": [EM_A]}, 200, NOTHING_LEARNED)
    # Older than what is known: its e-mail does not replace the newer one, its phone is new.
    profiles.learn(store, 0, message, {"em": [EM_B], "ph": [PH]}, 100, NOTHING_LEARNED)
    probe = event(400)
    profiles.enrich(store, 0, message, probe, NOTHING_LEARNED)
    assert probe["user_data"] == {"em": [EM_A], "ph": [PH]}
    # Newer: replaces.
    profiles.learn(store, 0, message, {"em": [EM_B]}, 300, NOTHING_LEARNED)
    probe = event(400)
    profiles.enrich(store, 0, message, probe, NOTHING_LEARNED)
    assert probe["user_data"]["em"] == [EM_B]


def test_profiles_expire_after_the_ttl(profiles: IdentityProfiles, clock: Clock) -> None:
    store = MemoryStore()
    message = {"userId": "u1"}
    profiles.learn(store, 0, message, {"em": [EM_A]}, 100, NOTHING_LEARNED)
    clock.now += 30 * DAY - 1
    kept = event()
    profiles.enrich(store, 0, message, kept, NOTHING_LEARNED)
    assert kept["user_data"] == {"em": [EM_A]}
    # Seeing the user refreshed the profile's time: 30 days from that sighting it expires.
    clock.now += 30 * DAY + 1
    expired = event()
    profiles.enrich(store, 0, message, expired, NOTHING_LEARNED)
    assert expired["user_data"] == {}


def test_an_unchanged_profile_is_rewritten_at_most_daily(
    profiles: IdentityProfiles, clock: Clock
) -> None:
    store = CountingStore()
    message = {"userId": "u1"}
    profiles.learn(store, 0, message, {"em": [EM_A]}, 100, NOTHING_LEARNED)
    for _ in range(50):
        clock.now += 60
        profiles.enrich(store, 0, message, event(100), NOTHING_LEARNED)
    assert store.puts == 1
    clock.now += REFRESH_S
    profiles.enrich(store, 0, message, event(100), NOTHING_LEARNED)
    assert store.puts == 2


def test_an_anonymous_id_seen_with_a_user_id_links_to_it(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    profiles.learn(
        store, 0, {"userId": "u1", "anonymousId": "a1"}, {"em": [EM_A]}, 100, NOTHING_LEARNED
    )
    anonymous = event()
    profiles.enrich(store, 0, {"anonymousId": "a1"}, anonymous, NOTHING_LEARNED)
    assert anonymous["user_data"] == {"em": [EM_A]}
    stranger = event()
    profiles.enrich(store, 0, {"anonymousId": "a2"}, stranger, NOTHING_LEARNED)
    assert stranger["user_data"] == {}


def test_what_an_anonymous_visitor_gave_joins_the_user_once_linked(
    profiles: IdentityProfiles,
) -> None:
    store = MemoryStore()
    profiles.learn(store, 0, {"anonymousId": "a1"}, {"ph": [PH]}, 100, NOTHING_LEARNED)
    profiles.learn(
        store, 0, {"userId": "u1", "anonymousId": "a1"}, {"em": [EM_A]}, 200, NOTHING_LEARNED
    )
    later = event(300)
    profiles.enrich(store, 0, {"userId": "u1"}, later, NOTHING_LEARNED)
    assert later["user_data"] == {"em": [EM_A], "ph": [PH]}


def test_privacy_learned_for_a_user_applies_to_later_events(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    message = {"userId": "u1"}
    profiles.learn(store, 0, message, {}, 100, OPT_OUT)
    assert profiles.enrich(store, 0, message, event(), NOTHING_LEARNED) == OPT_OUT
    profiles.enrich(store, 0, message, event(), LDP)
    # Sticky: a later event without the flags does not clear them.
    assert profiles.enrich(store, 0, message, event(), NOTHING_LEARNED) == OPT_OUT | LDP
    assert profiles.enrich(store, 0, {"userId": "u2"}, event(), NOTHING_LEARNED) == (
        NOTHING_LEARNED
    )


def test_messages_without_identity_keys_are_left_alone(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    for message in ({}, {"userId": ""}, {"userId": {"x": 1}}, {"anonymousId": True}):
        untouched = event(em=[EM_A])
        assert profiles.enrich(store, 0, message, untouched, NOTHING_LEARNED) == NOTHING_LEARNED
    assert store.entries == {}


def test_keys_and_values_in_the_store_are_hashes_only(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    message = {"userId": "canary-user-7731", "anonymousId": "canary-anon-7731"}
    profiles.learn(store, 0, message, {"em": [EM_A]}, 100, OPT_OUT | LDP)
    dump = b"".join(key + value for key, value in store.entries.items())
    assert b"canary" not in dump
    assert identity_key(b"u", "canary-user-7731") in store.entries
    for value in store.entries.values():
        stored = orjson.loads(value)
        assert set(stored) <= {"t", "e", "f", "o", "l", "to"}


def test_identity_keys_accept_text_and_integers_only() -> None:
    assert identity_key(b"u", 42) == identity_key(b"u", "42")
    assert identity_key(b"u", "42") != identity_key(b"a", "42")
    assert identity_key(b"u", 4.2) is None
    assert identity_key(b"u", None) is None


def test_a_key_on_two_partitions_is_counted(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    profiles.enrich(store, 0, {"userId": "u1"}, event(), NOTHING_LEARNED)
    profiles.enrich(store, 0, {"userId": "u1"}, event(), NOTHING_LEARNED)
    assert profiles.keys_on_two_partitions == 0
    profiles.enrich(store, 3, {"userId": "u1"}, event(), NOTHING_LEARNED)
    assert profiles.keys_on_two_partitions == 1


def test_a_corrupt_entry_reads_as_no_profile(profiles: IdentityProfiles) -> None:
    store = MemoryStore()
    store.put(identity_key(b"u", "u1") or b"", b"not json")
    probe = event()
    profiles.enrich(store, 0, {"userId": "u1"}, probe, NOTHING_LEARNED)
    assert probe["user_data"] == {}
