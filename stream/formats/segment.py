"""Maps a Segment Spec message (page, screen, track) to a Pinterest event object (DESIGN §3)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from stream.decode import decimal, integer, mapping, text, texts
from stream.errors import ConfigurationError, InvalidMessage
from stream.hashing import Hasher
from stream.models import Skipped
from stream.settings import SourceSettings
from stream.spec import ACTION_SOURCES, EVENT_NAMES

SKIP: Final = "skip"
DEFAULT_EVENT_NAMES: Final[Mapping[str, str]] = {
    "Order Completed": "checkout",
    "Product Added": "add_to_cart",
    "Product Added to Wishlist": "add_to_wishlist",
    "Checkout Started": "initiate_checkout",
    "Payment Info Entered": "add_payment_info",
    "Products Searched": "search",
    "Product List Viewed": "view_category",
    "Product Category Viewed": "view_category",
    "Product Viewed": "page_visit",
    "Signed Up": "signup",
    "Lead Generated": "lead",
    "Trial Started": "start_trial",
    "Subscription Created": "subscribe",
    "Application Installed": "app_install",
    "Application Opened": "app_open",
    "Video Playback Started": "watch_video",
}
PAGE_TYPES: Final = frozenset({"page", "screen"})
SKIPPED_TYPES: Final = frozenset({"identify", "group", "alias"})
DEVICE_ACTION_SOURCES: Final[Mapping[str, str]] = {"ios": "app_ios", "android": "app_android"}
# Message key → user_data field, in properties, context.traits and traits.
PERSON_KEYS: Final[Mapping[str, str]] = {
    "email": "em",
    "phone": "ph",
    "firstName": "fn",
    "first_name": "fn",
    "lastName": "ln",
    "last_name": "ln",
    "gender": "ge",
    "birthday": "db",
}
# Traits also carry the address, whose keys map to the location fields.
TRAIT_KEYS: Final[Mapping[str, str]] = {**PERSON_KEYS, "address": "address"}
ADDRESS_KEYS: Final[Mapping[str, str]] = {
    "city": "ct",
    "state": "st",
    "postalCode": "zp",
    "postal_code": "zp",
    "country": "country",
}
PRODUCT_FIELDS: Final = (
    ("item_name", "name"),
    ("item_category", "category"),
    ("item_brand", "brand"),
)
# Distinct raw event names remembered per source; beyond this, names are keyed uncached.
NAME_CACHE_SIZE: Final = 4096


def event_key(name: str) -> str:
    """Case-, underscore- and spacing-insensitive key: "order_completed" finds "Order Completed"."""
    return " ".join(name.lower().replace("_", " ").split())


def _epik(url: str) -> str | None:
    start = url.find("epik=")
    if start < 0:
        return None
    if url[start - 1 : start] in ("?", "&") and "#" not in url and "epik=" not in url[start + 5 :]:
        # The common shape, a single plain `epik` parameter: slice it out without parsing.
        end = url.find("&", start)
        value = url[start + 5 : end if end >= 0 else len(url)]
        if "%" not in value and "+" not in value:
            return value or None
    values = parse_qs(urlsplit(url).query).get("epik")
    return values[0] if values else None


def parse_time(value: Any, path: str) -> int:
    """Unix seconds from ISO-8601 text or epoch milliseconds (plain seconds are recognised too)."""
    if value.__class__ is str:
        stripped = value.strip()
        if stripped.isdigit():
            return parse_time(int(stripped), path)
        try:
            moment = datetime.fromisoformat(stripped)
        except ValueError:
            raise InvalidMessage(
                "mapping_error", f"{path}: not ISO-8601 or epoch milliseconds"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())
    if value.__class__ in (int, float) and value == value and abs(value) < 1e17:
        # Below 1e11 a number cannot be epoch milliseconds after 1973; read it as seconds.
        return int(value // 1000 if abs(value) >= 1e11 else value)
    raise InvalidMessage("mapping_error", f"{path}: not ISO-8601 or epoch milliseconds")


class SegmentMapper:
    """Maps one source's Segment messages; the event-name table is compiled once per source."""

    def __init__(self, source: SourceSettings, hasher: Hasher) -> None:
        table = {event_key(name): target for name, target in DEFAULT_EVENT_NAMES.items()}
        table.update({event_key(name): name for name in EVENT_NAMES})
        for name, target in source.event_names.items():
            if target != SKIP and target not in EVENT_NAMES:
                raise ConfigurationError(
                    f"sources.{source.source_name}.event_names",
                    f"{target!r} is not a Pinterest event name (or 'skip')",
                )
            table[event_key(name)] = target
        self._table = table
        self._names: dict[str, str | None] = {}
        self._unknown_is_custom = source.unknown_events == "custom"
        self._default_action_source = source.action_source
        self._hasher = hasher

    def map(
        self, message: Mapping[str, Any], raw: bytes, kafka_timestamp_ms: int | None
    ) -> dict[str, Any] | Skipped:
        """The Pinterest event object (no nulls, no empty containers), or why it is skipped."""
        kind = message.get("type")
        if kind.__class__ is not str:
            raise InvalidMessage("mapping_error", "type: expected a string")
        if kind in PAGE_TYPES:
            event_name = "page_visit"
        elif kind == "track":
            name = self._event_name(message.get("event"))
            if name is None:
                return Skipped("event not mapped (unknown_events: skip)")
            if name == SKIP:
                return Skipped("event skipped by the source's event_names")
            event_name = name
        elif kind in SKIPPED_TYPES:
            return Skipped(f"segment {kind} message")
        else:
            raise InvalidMessage("mapping_error", "type: not page, screen, track or identify")

        properties = mapping(message, "properties", "properties")
        context = mapping(message, "context", "context")
        device = mapping(context, "device", "context.device")
        event: dict[str, Any] = {
            "event_name": event_name,
            "action_source": self._action_source(properties, context, device),
            "event_time": self._event_time(message, kafka_timestamp_ms),
            "event_id": text(properties.get("event_id"), "properties.event_id")
            or text(message.get("messageId"), "messageId")
            or hashlib.blake2b(raw, digest_size=16).hexdigest(),
        }
        page = mapping(context, "page", "context.page")
        url = text(page.get("url"), "context.page.url")
        if url is not None:
            event["event_source_url"] = url
        if device.get("adTrackingEnabled") is False:
            event["opt_out"] = True
        locale = text(context.get("locale"), "context.locale")
        if locale is not None and len(locale) >= 2 and locale[:2].isalpha():
            event["language"] = locale[:2].lower()
        event["user_data"] = self._user_data(message, properties, context, device, url)
        custom_data = self._custom_data(properties)
        if custom_data:
            event["custom_data"] = custom_data
        if context.get("app") is not None or context.get("os") is not None or device:
            self._app_fields(event, context, device)
        return event

    def _event_name(self, raw_name: Any) -> str | None:
        if raw_name.__class__ is not str or not raw_name.strip():
            raise InvalidMessage("mapping_error", "event: expected a non-empty event name")
        if raw_name in self._names:
            return self._names[raw_name]
        target = self._table.get(event_key(raw_name))
        if target is None and self._unknown_is_custom:
            target = "custom"
        if len(self._names) < NAME_CACHE_SIZE:
            self._names[raw_name] = target
        return target

    def _action_source(
        self, properties: Mapping[str, Any], context: Mapping[str, Any], device: Mapping[str, Any]
    ) -> str:
        for candidate in (properties.get("action_source"), context.get("action_source")):
            if candidate.__class__ is str and candidate in ACTION_SOURCES:
                return candidate
        device_type = device.get("type")
        if device_type.__class__ is str:
            from_device = DEVICE_ACTION_SOURCES.get(device_type.lower())
            if from_device is not None:
                return from_device
        return self._default_action_source

    @staticmethod
    def _event_time(message: Mapping[str, Any], kafka_timestamp_ms: int | None) -> int:
        for key in ("timestamp", "originalTimestamp"):
            value = message.get(key)
            if value is not None:
                return parse_time(value, key)
        if kafka_timestamp_ms is not None:
            return kafka_timestamp_ms // 1000
        raise InvalidMessage("mapping_error", "timestamp: missing, and no Kafka timestamp")

    def _user_data(
        self,
        message: Mapping[str, Any],
        properties: Mapping[str, Any],
        context: Mapping[str, Any],
        device: Mapping[str, Any],
        url: str | None,
    ) -> dict[str, Any]:
        one = self._hasher.one
        memos = self._hasher.memos
        user_data: dict[str, Any] = {}
        # Walk each place's own keys once (a handful) instead of probing every alias in it,
        # and hash straight into the arrays: this is the hottest loop of the forwarder.
        for prefix, place, table in (
            ("properties", properties, PERSON_KEYS),
            ("context.traits", mapping(context, "traits", "context.traits"), TRAIT_KEYS),
            ("traits", mapping(message, "traits", "traits"), TRAIT_KEYS),
        ):
            if not place:
                continue
            for key, value in place.items():
                field = table.get(key)
                if field is None or value is None:
                    continue
                if value.__class__ is str:
                    hexdigest = (memos[field].get(value) or one(field, value)) if value else ""
                    if hexdigest:
                        hashed = user_data.get(field)
                        if hashed is None:
                            user_data[field] = [hexdigest]
                        elif hexdigest not in hashed:
                            hashed.append(hexdigest)
                elif field == "address":
                    self._address(user_data, value, f"{prefix}.address")
                else:
                    self._add(user_data, field, texts(value, prefix, key))
        user_id = message.get("userId")
        if user_id is not None:
            user_ids = [user_id] if user_id.__class__ is str else texts(user_id, "userId")
            self._add(user_data, "external_id", user_ids)
        advertising_id = device.get("advertisingId")
        if advertising_id is not None and device.get("adTrackingEnabled") is not False:
            path = "context.device.advertisingId"
            self._add(user_data, "hashed_maids", texts(advertising_id, path))
        ip = context.get("ip")
        if ip is not None:
            ip = text(ip, "context.ip")
            if ip is not None:
                user_data["client_ip_address"] = ip
        user_agent = context.get("userAgent")
        if user_agent is not None:
            user_agent = text(user_agent, "context.userAgent")
            if user_agent is not None:
                user_data["client_user_agent"] = user_agent
        click_id = properties.get("click_id")
        if click_id is not None:
            click_id = text(click_id, "properties.click_id")
        if click_id is None and url is not None:
            click_id = _epik(url)
        if click_id is not None:
            user_data["click_id"] = click_id
        return user_data

    def _add(self, user_data: dict[str, Any], field: str, values: list[str]) -> None:
        one = self._hasher.one
        for value in values:
            hexdigest = one(field, value)
            if hexdigest:
                hashed = user_data.setdefault(field, [])
                if hexdigest not in hashed:
                    hashed.append(hexdigest)

    def _address(self, user_data: dict[str, Any], address: Any, path: str) -> None:
        if address.__class__ is not dict:
            raise InvalidMessage("mapping_error", f"{path}: expected an object")
        one = self._hasher.one
        memos = self._hasher.memos
        for key, value in address.items():
            field = ADDRESS_KEYS.get(key)
            if field is None or value is None:
                continue
            if value.__class__ is str:
                hexdigest = (memos[field].get(value) or one(field, value)) if value else ""
                if hexdigest:
                    hashed = user_data.setdefault(field, [])
                    if hexdigest not in hashed:
                        hashed.append(hexdigest)
            else:
                self._add(user_data, field, texts(value, path, key))

    @staticmethod
    def _custom_data(properties: Mapping[str, Any]) -> dict[str, Any]:
        if not properties:
            return {}
        custom: dict[str, Any] = {}
        currency = text(properties.get("currency"), "properties.currency")
        if currency is not None and currency.strip():
            custom["currency"] = currency.strip().upper()
        for key in ("value", "revenue", "total", "price"):
            amount = properties.get(key)
            if amount is not None:
                value = decimal(amount, "properties", key)
                if value is not None:
                    custom["value"] = value
                    break
        for target, key in (("order_id", "order_id"), ("search_string", "query")):
            found = text(properties.get(key), "properties", key)
            if found is not None:
                custom[target] = found
        products = properties.get("products")
        contents: list[dict[str, Any]] = []
        if products is not None:
            if products.__class__ is not list:
                raise InvalidMessage("mapping_error", "properties.products: expected an array")
            for index, product in enumerate(products):
                path = f"properties.products[{index}]"
                if product.__class__ is not dict:
                    raise InvalidMessage("mapping_error", f"{path}: expected an object")
                item = _content(product, path)
                if item:
                    contents.append(item)
        elif properties.get("product_id") is not None or properties.get("sku") is not None:
            item = _content(properties, "properties")
            if item:
                contents.append(item)
        if contents:
            custom["contents"] = contents
            ids: list[str] = []
            num_items: int | None = None
            for item in contents:
                product_id = item.get("id")
                if product_id is not None and product_id not in ids:
                    ids.append(product_id)
                quantity = item.get("quantity")
                if quantity is not None:
                    num_items = quantity if num_items is None else num_items + quantity
            if ids:
                custom["content_ids"] = ids
            if num_items is not None:
                custom["num_items"] = num_items
        return custom

    @staticmethod
    def _app_fields(
        event: dict[str, Any], context: Mapping[str, Any], device: Mapping[str, Any]
    ) -> None:
        app = mapping(context, "app", "context.app")
        system = mapping(context, "os", "context.os")
        network = mapping(context, "network", "context.network")
        for target, place, key, path in (
            ("app_id", app, "namespace", "context.app.namespace"),
            ("app_name", app, "name", "context.app.name"),
            ("app_version", app, "version", "context.app.version"),
            ("device_brand", device, "manufacturer", "context.device.manufacturer"),
            ("device_model", device, "model", "context.device.model"),
            ("device_carrier", network, "carrier", "context.network.carrier"),
            ("os_version", system, "version", "context.os.version"),
        ):
            value = text(place.get(key), path)
            if value is not None:
                event[target] = value
        wifi = network.get("wifi")
        if wifi.__class__ is bool:
            event["wifi"] = wifi


def _content(product: Mapping[str, Any], path: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    product_id = product.get("product_id")
    if product_id.__class__ is not str or not product_id:
        product_id = text(product_id, path, "product_id") or text(product.get("sku"), path, "sku")
    if product_id is not None:
        item["id"] = product_id
    price = product.get("price")
    if price is not None:
        price = decimal(price, path, "price")
        if price is not None:
            item["item_price"] = price
    quantity = product.get("quantity")
    if quantity is not None:
        item["quantity"] = (
            quantity if quantity.__class__ is int else integer(quantity, path, "quantity")
        )
    for target, key in PRODUCT_FIELDS:
        value = product.get(key)
        if value is not None:
            if value.__class__ is not str:
                value = text(value, path, key)
            if value:
                item[target] = value
    return item
