"""Prepares a message already in Pinterest's event shape: hashes user_data, drops nulls."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

from stream.decode import texts
from stream.errors import InvalidMessage
from stream.hashing import Hasher
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
    """Normalizes and hashes `user_data` (raw or pre-hashed) and removes what the spec forbids."""

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher

    def map(self, message: Mapping[str, Any], raw: bytes) -> tuple[dict[str, Any], str | None]:
        """The event object and the message's own `ad_account_id` (None when it has none)."""
        event: dict[str, Any] = {}
        ad_account_id: str | None = None
        for key, value in message.items():
            if key == "ad_account_id":
                ad_account_id = self._ad_account(value)
            elif key == "user_data":
                event[key] = self._user_data(value)
            elif key in NESTED_OBJECTS:
                compacted = _compact(value)
                if compacted.__class__ is dict and "contents" in compacted:
                    contents = compacted["contents"]
                    if contents.__class__ is list:
                        contents = [_compact(item) for item in contents]
                        compacted["contents"] = [item for item in contents if not _empty(item)]
                compacted = _compact(compacted)
                if not _empty(compacted):
                    event[key] = compacted
            elif not _empty(value):
                event[key] = value
        if "event_id" not in event:
            # Deterministic, so a redelivered message keeps its id and Pinterest deduplicates it.
            event["event_id"] = hashlib.blake2b(raw, digest_size=16).hexdigest()
        return event, ad_account_id

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
                raise InvalidMessage("invalid_event", f"user_data.{key}: unknown field")
        return user_data
