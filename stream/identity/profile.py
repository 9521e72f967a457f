"""Learns each user's hashed identifiers and adds them to that user's later events."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from stream.identity.store import Store
from stream.spec import HASHED_FIELDS

log = logging.getLogger(__name__)

IDENTITY_FIELDS: Final = HASHED_FIELDS
"""What a profile keeps: the hashed user_data fields (em, ph, …, external_id, hashed_maids).
Never a raw value: every one of them is a SHA-256 hex digest by the time it is learned."""
# A profile that has not changed is rewritten at most this often, so that the TTL (and the
# changelog's retention) count from the last time the user was seen, at one write a day.
REFRESH_S: Final = 86_400.0
# Keys remembered with their partition, to notice messages not keyed by user (bounded memory).
PARTITION_MEMORY: Final = 100_000


def identity_key(kind: bytes, raw_id: Any) -> bytes | None:
    """The store key of a `userId` (kind b"u") or `anonymousId` (b"a"): a hash, never the id.

    The `capi-stream identity forget` command computes the same key from the id it is given.
    """
    if raw_id.__class__ is str:
        if not raw_id:
            return None
        data = raw_id.encode()
    elif raw_id.__class__ is int:
        data = str(raw_id).encode()
    else:
        return None
    return kind + b":" + hashlib.blake2b(data, digest_size=16).hexdigest().encode()


@dataclass(frozen=True, slots=True)
class Learned:
    """What a profile adds to an event besides identifiers: the user's privacy flags."""

    opt_out: bool
    ldp: bool


NOTHING_LEARNED: Final = Learned(opt_out=False, ldp=False)


class IdentityProfiles:
    """Per identity key (a `userId`; an `anonymousId` seen with one links to it) the latest
    hashed identifiers, learned from identify calls and events, added to later events of that
    key that lack them; never overriding what an event carries.

    A profile is a JSON object in the store: `t` when it was last written (its TTL counts from
    there), `e` the newest event time learned from, `f` the identifiers, `o` / `l` the user's
    opt-out and LDP (sticky: once learned they apply until the profile expires or is
    forgotten). An anonymous key's entry is either such a profile or, once linked, `to` the
    user key. Identifiers from a newer event replace a field's values; from an older event they
    only fill fields the profile lacks.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self.enriched: dict[str, int] = dict.fromkeys(IDENTITY_FIELDS, 0)
        """Identifiers added to events, per field (read at scrape time)."""
        self.keys_on_two_partitions = 0
        self._partitions: dict[bytes, int] = {}
        self._warned_partitions = False

    def enrich(
        self,
        store: Store,
        partition: int,
        message: Mapping[str, Any],
        event: dict[str, Any],
        flags: Learned,
    ) -> Learned:
        """Learns from `event` (and the message's flags), then adds what its user's profile holds
        and the event lacks; returns the privacy flags the profile holds."""
        key, profile = self._profile(store, partition, message)
        if key is None:
            return NOTHING_LEARNED
        user_data = event.get("user_data")
        if user_data.__class__ is not dict:
            return NOTHING_LEARNED
        self._learn(store, key, profile, user_data, event.get("event_time", 0), flags)
        fields: dict[str, list[str]] = profile.get("f", {})
        enriched = self.enriched
        for field, hashes in fields.items():
            if field not in user_data and field in enriched:
                user_data[field] = hashes
                enriched[field] += 1
        return Learned(profile.get("o", False), profile.get("l", False))

    def learn(
        self,
        store: Store,
        partition: int,
        message: Mapping[str, Any],
        user_data: Mapping[str, Any],
        event_time: int,
        flags: Learned,
    ) -> None:
        """Learns from a message that is not sent itself (a Segment `identify`)."""
        key, profile = self._profile(store, partition, message)
        if key is not None:
            self._learn(store, key, profile, user_data, event_time, flags)

    def _profile(
        self, store: Store, partition: int, message: Mapping[str, Any]
    ) -> tuple[bytes | None, dict[str, Any]]:
        """The key the message's identifiers are kept under and its live profile ({} if none);
        links the message's anonymousId to its userId on the way."""
        now = self._clock()
        user = identity_key(b"u", message.get("userId"))
        anonymous = identity_key(b"a", message.get("anonymousId"))
        if user is None:
            if anonymous is None:
                return None, {}
            self._note_partition(anonymous, partition)
            entry = self._read(store, anonymous, now)
            linked = entry.get("to")
            if linked.__class__ is str:
                return linked.encode(), self._read(store, linked.encode(), now)
            return anonymous, entry
        self._note_partition(user, partition)
        profile = self._read(store, user, now)
        if anonymous is not None:
            entry = self._read(store, anonymous, now)
            target = user.decode()
            if entry.get("to") != target or now - entry.get("t", 0) >= REFRESH_S:
                if _fill(profile, entry):
                    profile["t"] = 0  # _learn writes the merged profile
                store.put(anonymous, orjson.dumps({"t": int(now), "to": target}))
        return user, profile

    def _read(self, store: Store, key: bytes, now: float) -> dict[str, Any]:
        found = store.get(key)
        if found is None:
            return {}
        try:
            entry = orjson.loads(found)
        except orjson.JSONDecodeError:
            return {}
        if entry.__class__ is not dict or now - entry.get("t", 0) > self._ttl_s:
            return {}
        return entry

    def _learn(
        self,
        store: Store,
        key: bytes,
        profile: dict[str, Any],
        user_data: Mapping[str, Any],
        event_time: Any,
        flags: Learned,
    ) -> None:
        fields: dict[str, list[str]] = profile.get("f") or {}
        newer = event_time.__class__ is int and event_time >= profile.get("e", 0)
        changed = profile.get("t") == 0  # an anonymous profile was merged in
        for field in IDENTITY_FIELDS:
            hashes = user_data.get(field)
            if not hashes or hashes.__class__ is not list:
                continue
            if field not in fields or (newer and fields[field] != hashes):
                fields[field] = list(hashes)
                changed = True
        if flags.opt_out and not profile.get("o"):
            profile["o"] = changed = True
        if flags.ldp and not profile.get("l"):
            profile["l"] = changed = True
        if not (fields or profile.get("o") or profile.get("l")):
            return  # nothing worth remembering about this user yet
        now = self._clock()
        if changed or now - profile.get("t", 0) >= REFRESH_S:
            profile["f"] = fields
            if newer:
                profile["e"] = event_time
            profile["t"] = int(now)
            store.put(key, orjson.dumps(profile))

    def _note_partition(self, key: bytes, partition: int) -> None:
        partitions = self._partitions
        seen = partitions.get(key)
        if seen is None:
            if len(partitions) >= PARTITION_MEMORY:
                partitions.clear()
            partitions[key] = partition
        elif seen != partition:
            partitions[key] = partition
            self.keys_on_two_partitions += 1
            if not self._warned_partitions:
                self._warned_partitions = True
                log.warning(
                    "a user's messages arrived on two partitions: identity enrichment assumes "
                    "messages keyed by user (userId or anonymousId), as Segment's and "
                    "RudderStack's Kafka outputs key them; counted in "
                    "capi_stream_identity_keys_on_two_partitions_total, logged once"
                )


def _fill(profile: dict[str, Any], anonymous: Mapping[str, Any]) -> bool:
    """Adds what an anonymous profile learned before the user was known to the user's profile
    (the user's own values win); True if that changed it."""
    changed = False
    learned = anonymous.get("f")
    if learned.__class__ is dict and learned:
        fields = profile.setdefault("f", {})
        for field, hashes in learned.items():
            if field in IDENTITY_FIELDS and field not in fields and hashes.__class__ is list:
                fields[field] = hashes
                changed = True
    for flag in ("o", "l"):
        if anonymous.get(flag) and not profile.get(flag):
            profile[flag] = changed = True
    return changed
