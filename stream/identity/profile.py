"""Learns each user's hashed identifiers and adds them to that user's later events."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
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
PARTITION_MEMORY: Final = 32_768
# The user's privacy flags a profile keeps besides identifiers, as bits: plain ints, since they
# cross the hot path twice per message.
NOTHING_LEARNED: Final = 0
OPT_OUT: Final = 1
LDP: Final = 2
_FIELDS: Final = frozenset(IDENTITY_FIELDS)
# Ids hashed into keys, and anonymous ids known to be linked, are remembered up to this many.
MEMO_SIZE: Final = 32_768
_UNSEEN: Final = object()
# Decoded entries by their stored bytes: a user's events come in bursts, and decoding a profile
# costs more than the rest of its enrichment. ~3.5 KB each, so at most ~14 MB.
DECODED_MEMO_SIZE: Final = 4_096


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
        self._user_keys: dict[str, bytes | None] = {}
        self._anonymous_keys: dict[str, bytes | None] = {}
        # anonymous key → (its user's key, when the link was last written or read).
        self._links: dict[bytes, tuple[bytes, float]] = {}
        self._decoded: dict[bytes, dict[str, Any]] = {}

    def enrich(
        self,
        store: Store,
        partition: int,
        message: Mapping[str, Any],
        event: dict[str, Any],
        flags: int,
    ) -> int:
        """Learns from `event` (and the message's flags: OPT_OUT, LDP), then adds what its
        user's profile holds and the event lacks; returns the privacy flags the profile holds."""
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
        return (OPT_OUT if profile.get("o") else 0) | (LDP if profile.get("l") else 0)

    def learn(
        self,
        store: Store,
        partition: int,
        message: Mapping[str, Any],
        user_data: Mapping[str, Any],
        event_time: int,
        flags: int,
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
        user = self._key(self._user_keys, b"u", message.get("userId"))
        anonymous = self._key(self._anonymous_keys, b"a", message.get("anonymousId"))
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
        if anonymous is None:
            return user, profile
        known = self._links.get(anonymous)
        if known is not None and known[0] == user and now - known[1] < REFRESH_S:
            return user, profile
        entry = self._read(store, anonymous, now)
        target = user.decode()
        written = entry.get("t", 0)
        if entry.get("to") != target or now - written >= REFRESH_S:
            merged = dict(profile)  # entries read are shared: change a copy
            if _fill(merged, entry):
                merged["t"] = 0  # _learn writes the merged profile
                profile = merged
            written = int(now)
            store.put(anonymous, orjson.dumps({"t": written, "to": target}))
        links = self._links
        if len(links) >= MEMO_SIZE:
            links.clear()
        links[anonymous] = (user, written)
        return user, profile

    @staticmethod
    def _key(memo: dict[str, bytes | None], kind: bytes, raw_id: Any) -> bytes | None:
        if raw_id.__class__ is not str:
            # Numbers are rare as ids (and True must not find the key of 1).
            return identity_key(kind, raw_id)
        found = memo.get(raw_id, _UNSEEN)
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]
        key = identity_key(kind, raw_id)
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[raw_id] = key
        return key

    def _read(self, store: Store, key: bytes, now: float) -> dict[str, Any]:
        """The live entry at `key`, shared with every reader of the same stored bytes: never
        changed in place."""
        found = store.get(key)
        if found is None:
            return {}
        decoded = self._decoded
        entry = decoded.get(found)
        if entry is None:
            try:
                entry = orjson.loads(found)
            except orjson.JSONDecodeError:
                return {}
            if entry.__class__ is not dict:
                return {}
            if len(decoded) >= DECODED_MEMO_SIZE:
                decoded.clear()
            decoded[found] = entry
        if now - entry.get("t", 0) > self._ttl_s:
            return {}
        return entry

    def _learn(
        self,
        store: Store,
        key: bytes,
        profile: dict[str, Any],
        user_data: Mapping[str, Any],
        event_time: Any,
        flags: int,
    ) -> None:
        fields: dict[str, list[str]] = profile.get("f") or {}
        newer = event_time.__class__ is int and event_time >= profile.get("e", 0)
        changed = profile.get("t") == 0  # an anonymous profile was merged in
        learned = None  # copied on the first change: most events teach nothing new
        for field, hashes in user_data.items():
            if field not in _FIELDS or not hashes or hashes.__class__ is not list:
                continue
            known = fields.get(field)
            if known is None or (newer and known != hashes):
                if learned is None:
                    learned = dict(fields)
                learned[field] = list(hashes)
        opt_out = bool(flags & OPT_OUT) or profile.get("o", False)
        ldp = bool(flags & LDP) or profile.get("l", False)
        changed = changed or learned is not None
        changed = changed or opt_out != profile.get("o", False) or ldp != profile.get("l", False)
        if learned is not None:
            fields = learned
        if not (fields or opt_out or ldp):
            return  # nothing worth remembering about this user yet
        now = self._clock()
        if changed or now - profile.get("t", 0) >= REFRESH_S:
            written: dict[str, Any] = {"t": int(now), "f": fields}
            event_seen = event_time if newer else profile.get("e")
            if event_seen is not None:
                written["e"] = event_seen
            if opt_out:
                written["o"] = True
            if ldp:
                written["l"] = True
            store.put(key, orjson.dumps(written))

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
        fields = dict(profile.get("f") or {})
        for field, hashes in learned.items():
            if field in _FIELDS and field not in fields and hashes.__class__ is list:
                fields[field] = hashes
                changed = True
        profile["f"] = fields
    for flag in ("o", "l"):
        if anonymous.get(flag) and not profile.get(flag):
            profile[flag] = changed = True
    return changed
