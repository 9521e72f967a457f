"""Prepares a message already in Pinterest's event shape: hashes user_data, drops nulls."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

from stream.decode import decode_json_object, texts
from stream.errors import InvalidMessage
from stream.formats.base import MAX_CONTENTS, Mapped
from stream.hashing import Hasher
from stream.settings import SourceSettings
from stream.spec import HASHED_FIELDS

RAW_USER_FIELDS: Final = frozenset(
    {"client_ip_address", "client_user_agent", "click_id", "partner_id"}
)
NESTED_OBJECTS: Final = ("custom_data", "app_info", "device_info")
_AD_ACCOUNT: Final = re.compile(r"[0-9]{1,18}")


def _empty(value: Any) -> bool:
    return value is None or ((value.__class__ is dict or value.__class__ is list) and not value)


def _compact(value: Any) -> Any:
    """Drops null members and empty containers one level down; deeper shapes are the schema's."""
    if value.__class__ is dict:
        return {key: item for key, item in value.items() if not _empty(item)}
    return value


class PinterestMapper:
    """Normalizes and hashes `user_data` (raw or pre-hashed) and removes what the spec forbids.

    Other values pass through as the message has them, so the encoded event is checked against
    the schema (`spec_typed` is False).
    """

    spec_typed: Final = False

    def __init__(self, source: SourceSettings, hasher: Hasher) -> None:
        # The source's defaults (ad account, action_source) are applied downstream, alike for
        # every format: nothing here depends on `source`.
        self._hasher = hasher

    def map(self, value: bytes, kafka_timestamp_ms: int | None) -> Mapped:
        """The event object, the message and the message's own `ad_account_id` (or None)."""
        message = decode_json_object(value)
        event: dict[str, Any] = {}
        ad_account_id: str | None = None
        for key, member in message.items():
            if key == "ad_account_id":
                ad_account_id = self._ad_account(member)
            elif key == "user_data":
                event[key] = self._user_data(member)
            elif key in NESTED_OBJECTS:
                compacted = _compact(member)
                if compacted.__class__ is dict and "contents" in compacted:
                    contents = compacted["contents"]
                    if contents.__class__ is list:
                        if len(contents) > MAX_CONTENTS:
                            self._hasher.truncated["contents"] += len(contents) - MAX_CONTENTS
                            contents = contents[:MAX_CONTENTS]
                        contents = [_compact(item) for item in contents]
                        compacted["contents"] = [item for item in contents if not _empty(item)]
                compacted = _compact(compacted)
                if not _empty(compacted):
                    event[key] = compacted
            elif not _empty(member):
                event[key] = member
        if "event_id" not in event:
            # Deterministic, so a redelivered message keeps its id and Pinterest deduplicates it.
            event["event_id"] = hashlib.blake2b(value, digest_size=16).hexdigest()
        return event, message, ad_account_id

    @staticmethod
    def _ad_account(value: Any) -> str | None:
        if value is None:
            return None
        account = str(value) if value.__class__ is int else value
        if account.__class__ is not str or not _AD_ACCOUNT.fullmatch(account):
            raise InvalidMessage("invalid_event", "ad_account_id: expected 1-18 digits")
        return account

    def _user_data(self, value: Any) -> dict[str, Any]:
        if value.__class__ is not dict:
            raise InvalidMessage("invalid_event", "user_data: expected an object")
        hash_values = self._hasher.hash_values
        user_data: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                continue
            if key in RAW_USER_FIELDS:
                if item != "":
                    user_data[key] = item
            elif key in HASHED_FIELDS:
                hashed = hash_values(key, texts(item, "user_data", key, "invalid_event"))
                if hashed:
                    user_data[key] = hashed
            else:
                # The spec leaves user_data open, but an unknown key could carry raw PII to
                # Pinterest unhashed; refuse it rather than forward it.
                # Named by what it is not: the key itself may be the personal data.
                raise InvalidMessage(
                    "invalid_event", "user_data: unknown key (not a Pinterest user_data field)"
                )
        return user_data
