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
from stream.validate import ACTION_SOURCES, EVENT_NAMES

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
# (user_data field, keys tried in properties, context.traits and traits)
PERSON_FIELDS: Final = (
    ("em", ("email",)),
    ("ph", ("phone",)),
    ("fn", ("firstName", "first_name")),
    ("ln", ("lastName", "last_name")),
    ("ge", ("gender",)),
    ("db", ("birthday",)),
)
ADDRESS_FIELDS: Final = (
    ("ct", ("city",)),
    ("st", ("state",)),
    ("zp", ("postalCode", "postal_code")),
    ("country", ("country",)),
)
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
    if "epik=" not in url:
        return None
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
        hash_values = self._hasher.hash_values
        user_data: dict[str, Any] = {}
        places = [
            (prefix, place)
            for prefix, place in (
                ("properties", properties),
                ("context.traits", mapping(context, "traits", "context.traits")),
                ("traits", mapping(message, "traits", "traits")),
            )
            if place
        ]
        for field, keys in PERSON_FIELDS:
            found: list[str] = []
            for prefix, place in places:
                for key in keys:
                    value = place.get(key)
                    if value is not None:
                        found += texts(value, f"{prefix}.{key}")
            if found:
                hashed = hash_values(field, found)
                if hashed:
                    user_data[field] = hashed
        addresses = [
            (f"{prefix}.address", mapping(place, "address", f"{prefix}.address"))
            for prefix, place in places
            if prefix != "properties"
        ]
        for field, keys in ADDRESS_FIELDS:
            found = []
            for prefix, address in addresses:
                for key in keys:
                    value = address.get(key)
                    if value is not None:
                        found += texts(value, f"{prefix}.{key}")
            if found:
                hashed = hash_values(field, found)
                if hashed:
                    user_data[field] = hashed
        user_id = message.get("userId")
        if user_id is not None:
            hashed = hash_values("external_id", texts(user_id, "userId"))
            if hashed:
                user_data["external_id"] = hashed
        advertising_id = device.get("advertisingId")
        if advertising_id is not None and device.get("adTrackingEnabled") is not False:
            hashed = hash_values(
                "hashed_maids", texts(advertising_id, "context.device.advertisingId")
            )
            if hashed:
                user_data["hashed_maids"] = hashed
        ip = text(context.get("ip"), "context.ip")
        if ip is not None:
            user_data["client_ip_address"] = ip
        user_agent = text(context.get("userAgent"), "context.userAgent")
        if user_agent is not None:
            user_data["client_user_agent"] = user_agent
        click_id = text(properties.get("click_id"), "properties.click_id")
        if click_id is None and url is not None:
            click_id = _epik(url)
        if click_id is not None:
            user_data["click_id"] = click_id
        return user_data

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
                value = decimal(amount, f"properties.{key}")
                if value is not None:
                    custom["value"] = value
                    break
        for target, key in (("order_id", "order_id"), ("search_string", "query")):
            found = text(properties.get(key), f"properties.{key}")
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
            ids = list(dict.fromkeys(item["id"] for item in contents if "id" in item))
            if ids:
                custom["content_ids"] = ids
            quantities = [item["quantity"] for item in contents if "quantity" in item]
            if quantities:
                custom["num_items"] = sum(quantities)
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
    product_id = text(product.get("product_id"), f"{path}.product_id") or text(
        product.get("sku"), f"{path}.sku"
    )
    if product_id is not None:
        item["id"] = product_id
    price = decimal(product.get("price"), f"{path}.price")
    if price is not None:
        item["item_price"] = price
    quantity = integer(product.get("quantity"), f"{path}.quantity")
    if quantity is not None:
        item["quantity"] = quantity
    for target, key in PRODUCT_FIELDS:
        value = text(product.get(key), f"{path}.{key}")
        if value is not None:
            item[target] = value
    return item
