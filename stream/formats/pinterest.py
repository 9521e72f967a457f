"""Prepares a message already in Pinterest's event shape: hashes user_data, drops nulls,
fills the source's defaults and normalizes the shapes CRM exports write."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, Final

from stream.decode import decimal, decode_json_object, exact_text, texts
from stream.errors import InvalidMessage
from stream.formats.base import MAX_CONTENTS, Mapped
from stream.hashing import Hasher
from stream.settings import SourceSettings
from stream.spec import HASHED_FIELDS

RAW_USER_FIELDS: Final = frozenset(
    {"client_ip_address", "client_user_agent", "click_id", "partner_id"}
)
NESTED_OBJECTS: Final = ("custom_data", "app_info", "device_info")
NORMALIZATIONS: Final = (
    "event_id_number",
    "event_time_ms",
    "event_time_iso",
    "event_time_text",
    "event_time_float",
    "value_number",
    "item_price_number",
    "order_id_number",
    "content_id_number",
    "opt_out_type_in_user_data",
)
"""What `normalized` counts (the `what` label of `capi_stream_normalized_total`)."""
_AD_ACCOUNT: Final = re.compile(r"[0-9]{1,18}")
_EVENT_ID: Final = ("event_id",)
_ORDER_ID: Final = ("custom_data", "order_id")
_CONTENT_IDS: Final = ("custom_data", "content_ids")
_CONTENTS: Final = ("custom_data", "contents")
# Above this an epoch number is milliseconds: as seconds it would be after the year 5138.
_MILLISECONDS_FROM: Final = 10**11


def _empty(value: Any) -> bool:
    return value is None or ((value.__class__ is dict or value.__class__ is list) and not value)


def _compact(value: Any) -> Any:
    """Drops null members and empty containers one level down; deeper shapes are the schema's."""
    if value.__class__ is dict:
        return {key: item for key, item in value.items() if not _empty(item)}
    return value


def _flags(existing: str, added: str) -> str:
    """Two comma-separated `opt_out_type` values as one, each flag once, in order."""
    flags = [flag.strip() for flag in existing.split(",")]
    flags += [flag for flag in (flag.strip() for flag in added.split(",")) if flag not in flags]
    return ",".join(flag for flag in flags if flag)


class PinterestMapper:
    """Normalizes and hashes `user_data` (raw or pre-hashed) and removes what the spec forbids.

    What real CRM exports write instead of the spec's types is normalized, not dead-lettered, and
    counted per kind in `normalized` (`NORMALIZATIONS`): an `event_time` in milliseconds,
    ISO-8601, digits in a string or a float; numbers for `custom_data.value` and
    `contents[].item_price` (exact decimal strings); numeric ids (`event_id`, `order_id`,
    `contents[].id`, `content_ids`) as their digits; `user_data.opt_out_type`, which belongs in
    `custom_data`. Other values pass through as the message has them, so the encoded event is
    checked against the schema (`spec_typed` is False).
    """

    spec_typed: Final = False

    def __init__(self, source: SourceSettings, hasher: Hasher) -> None:
        # The source's ad account is applied downstream, alike for every format.
        self._action_source = source.action_source
        self._hasher = hasher
        self.normalized: dict[str, int] = dict.fromkeys(NORMALIZATIONS, 0)

    def map(self, value: bytes, kafka_timestamp_ms: int | None) -> Mapped:
        """The event object, the message and the message's own `ad_account_id` (or None)."""
        message = decode_json_object(value)
        event: dict[str, Any] = {}
        ad_account_id: str | None = None
        opt_out_type: Any = None
        for key, member in message.items():
            if key == "ad_account_id":
                ad_account_id = self._ad_account(member)
            elif key == "user_data":
                event[key] = self._user_data(member)
                opt_out_type = member.get("opt_out_type")
            elif key in NESTED_OBJECTS:
                compacted = self._nested(key, member, value)
                if not _empty(compacted):
                    event[key] = compacted
            elif key == "event_time" or key == "event_id":
                member = self._time_or_id(key, member, value)
                if not _empty(member):
                    event[key] = member
            elif not _empty(member):
                event[key] = member
        if "event_id" not in event:
            # Deterministic, so a redelivered message keeps its id and Pinterest deduplicates it.
            event["event_id"] = hashlib.blake2b(value, digest_size=16).hexdigest()
        if event.get("action_source", "") == "":  # an export's empty column says nothing either
            event["action_source"] = self._action_source
        if opt_out_type is not None:
            self._move_opt_out_type(event, opt_out_type)
        return event, message, ad_account_id

    def _time_or_id(self, key: str, member: Any, raw: bytes) -> Any:
        """event_time in Unix seconds and a numeric event_id as its digits (CRM shapes)."""
        if key == "event_time":
            if member.__class__ is not int or member >= _MILLISECONDS_FROM:
                return self._event_time(member)
            return member
        if member.__class__ is int or member.__class__ is float:
            return self._event_id(raw, member)
        return member

    def _nested(self, key: str, member: Any, raw: bytes) -> Any:
        """custom_data, app_info or device_info without nulls, CRM shapes normalized."""
        compacted = _compact(member)
        if compacted.__class__ is dict:
            if "contents" in compacted:
                self._contents(compacted, key == "custom_data", raw)
            if key == "custom_data":
                self._custom_data(compacted, raw)
        return _compact(compacted)

    def _custom_data(self, custom: dict[str, Any], raw: bytes) -> None:
        amount = custom.get("value")
        if amount.__class__ is int or amount.__class__ is float:
            custom["value"] = decimal(amount, "custom_data.value", "", "invalid_event")
            self.normalized["value_number"] += 1
        order_id = custom.get("order_id")
        if order_id.__class__ is int or order_id.__class__ is float:
            custom["order_id"] = exact_text(
                order_id, raw, _ORDER_ID, "custom_data.order_id", "", "invalid_event"
            )
            self.normalized["order_id_number"] += 1
        ids = custom.get("content_ids")
        if ids.__class__ is list and any(i.__class__ is int or i.__class__ is float for i in ids):
            custom["content_ids"] = [
                self._content_id(item, "custom_data.content_ids", raw, (*_CONTENT_IDS, index))
                for index, item in enumerate(ids)
            ]

    def _content_id(self, value: Any, path: str, raw: bytes, where: tuple[str | int, ...]) -> Any:
        """A numeric product id as its digits; `where` locates it in `raw` to read it again."""
        if value.__class__ is int or value.__class__ is float:
            self.normalized["content_id_number"] += 1
            return exact_text(value, raw, where, path, "", "invalid_event")
        return value

    def _contents(self, nested: dict[str, Any], prices: bool, raw: bytes) -> None:
        contents = nested["contents"]
        if contents.__class__ is not list:
            return
        if len(contents) > MAX_CONTENTS:
            self._hasher.truncated["contents"] += len(contents) - MAX_CONTENTS
            contents = contents[:MAX_CONTENTS]
        items = [_compact(item) for item in contents]
        nested["contents"] = [item for item in items if not _empty(item)]
        if not prices:
            return
        for index, item in enumerate(items):
            if item.__class__ is not dict:
                continue
            price = item.get("item_price")
            if price.__class__ is int or price.__class__ is float:
                where = f"custom_data.contents[{index}].item_price"
                item["item_price"] = decimal(price, where, "", "invalid_event")
                self.normalized["item_price_number"] += 1
            if "id" in item:
                location = (*_CONTENTS, index, "id")
                item["id"] = self._content_id(
                    item["id"], f"custom_data.contents[{index}].id", raw, location
                )

    def _event_time(self, moment: Any) -> Any:
        """Unix seconds from the shapes exports write; anything else as it is, for the schema."""
        cls = moment.__class__
        if cls is int:
            if moment >= _MILLISECONDS_FROM:
                self.normalized["event_time_ms"] += 1
                return moment // 1000
            return moment
        if cls is float:
            if moment != moment or abs(moment) >= 1e17:
                return moment  # NaN or absurd: the schema reports it
            if moment >= _MILLISECONDS_FROM:
                self.normalized["event_time_ms"] += 1
                return int(moment // 1000)
            self.normalized["event_time_float"] += 1
            return int(moment)
        if cls is not str:
            return moment
        stripped = moment.strip()
        if not stripped:
            return None
        if stripped.isascii() and stripped.isdigit() and len(stripped) < 18:
            seconds = int(stripped)
            if seconds >= _MILLISECONDS_FROM:
                self.normalized["event_time_ms"] += 1
                return seconds // 1000
            self.normalized["event_time_text"] += 1
            return seconds
        try:
            parsed = datetime.fromisoformat(stripped)
        except ValueError:
            return moment
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        self.normalized["event_time_iso"] += 1
        return int(parsed.timestamp())

    def _event_id(self, raw: bytes, number: float) -> str | None:
        """A numeric id's exact digits."""
        self.normalized["event_id_number"] += 1
        return exact_text(number, raw, _EVENT_ID, "event_id", "", "invalid_event")

    def _move_opt_out_type(self, event: dict[str, Any], flags: Any) -> None:
        """`user_data.opt_out_type` (where some e-commerce plugins put it) → `custom_data`."""
        if flags == "":
            return
        self.normalized["opt_out_type_in_user_data"] += 1
        custom = event.get("custom_data")
        if custom is None:
            event["custom_data"] = {"opt_out_type": flags}
        elif custom.__class__ is dict:
            existing = custom.get("opt_out_type")
            if existing is None:
                custom["opt_out_type"] = flags
            elif existing.__class__ is str and flags.__class__ is str:
                custom["opt_out_type"] = _flags(existing, flags)
        # Anything else is malformed: the schema check names it.

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
            elif key != "opt_out_type":  # moved to custom_data by `map`
                # The spec leaves user_data open, but an unknown key could carry raw PII to
                # Pinterest unhashed; refuse it rather than forward it.
                # Named by what it is not: the key itself may be the personal data.
                raise InvalidMessage(
                    "invalid_event", "user_data: unknown key (not a Pinterest user_data field)"
                )
        return user_data
