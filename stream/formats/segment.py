"""Maps a Segment Spec message (page, screen, track) to a Pinterest event object (DESIGN §3)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from stream.decode import EMPTY, decimal, decode_json_object, integer, text, texts
from stream.errors import ConfigurationError, InvalidMessage
from stream.formats.base import Mapped
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
ADDRESS: Final = "address"
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
APP_FIELDS: Final = (
    ("app_id", "namespace", "context.app.namespace"),
    ("app_name", "name", "context.app.name"),
    ("app_version", "version", "context.app.version"),
)
DEVICE_FIELDS: Final = (
    ("device_brand", "manufacturer", "context.device.manufacturer"),
    ("device_model", "model", "context.device.model"),
)
# Distinct raw event names remembered per source; beyond this, names are keyed uncached.
NAME_CACHE_SIZE: Final = 4096
# Distinct whole seconds of ISO timestamps remembered; cleared when full (a few minutes' worth).
SECOND_CACHE_SIZE: Final = 4096
_MILLISECONDS: Final = frozenset(f".{n:03d}" for n in range(1000))
_ISO_SECOND: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_SKIPPED: Final[Mapping[str, Skipped]] = {
    kind: Skipped(f"segment {kind} message") for kind in sorted(SKIPPED_TYPES)
}
_UNSEEN: Final = "<unseen>"  # not a cache value: names are event names, "skip" or None
_NOT_MAPPED: Final = Skipped("event not mapped (unknown_events: skip)")
_SKIPPED_BY_SOURCE: Final = Skipped("event skipped by the source's event_names")


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


def _place(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return EMPTY
    if value.__class__ is not dict:
        raise InvalidMessage("mapping_error", f"{path}: expected an object")
    return value


class SegmentMapper:
    """Maps one source's Segment messages; the event-name table is compiled once per source.

    The mapping is written out flat, in the order the fields are read, because it runs once per
    message on the forwarder's one busy core: helper calls and repeated lookups are most of what
    Python spends here. The order also fixes which problem a malformed message is reported for.
    """

    spec_typed: Final = True

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
        memos = hasher.memos
        # Key → (field, that field's memo): one lookup per key finds both.
        self._person = {key: (field, memos[field]) for key, field in PERSON_KEYS.items()}
        self._traits = {**self._person, ADDRESS: (ADDRESS, EMPTY)}
        self._address_keys = {key: (field, memos[field]) for key, field in ADDRESS_KEYS.items()}
        self._seconds: dict[str, int] = {}
        self._languages: dict[str, str | None] = {}

    def map(self, value: bytes, kafka_timestamp_ms: int | None) -> Mapped | Skipped:
        """The Pinterest event object (no nulls, no empty containers), or why it is skipped."""
        message = decode_json_object(value)
        kind = message.get("type")
        if kind == "track":
            raw_name = message.get("event")
            name = self._names.get(raw_name, _UNSEEN) if raw_name.__class__ is str else _UNSEEN
            if name is _UNSEEN:
                name = self._event_name(raw_name)
            if name is None:
                return _NOT_MAPPED
            if name == SKIP:
                return _SKIPPED_BY_SOURCE
            event_name = name
        elif kind == "page" or kind == "screen":
            event_name = "page_visit"
        elif kind.__class__ is not str:
            raise InvalidMessage("mapping_error", "type: expected a string")
        elif kind in SKIPPED_TYPES:
            return _SKIPPED[kind]
        else:
            raise InvalidMessage("mapping_error", "type: not page, screen, track or identify")

        properties = message.get("properties")
        if properties is None:
            properties = EMPTY
        elif properties.__class__ is not dict:
            raise InvalidMessage("mapping_error", "properties: expected an object")
        context = message.get("context")
        if context is None:
            context = EMPTY
        elif context.__class__ is not dict:
            raise InvalidMessage("mapping_error", "context: expected an object")
        device = context.get("device")
        if device is None:
            device = EMPTY
        elif device.__class__ is not dict:
            raise InvalidMessage("mapping_error", "context.device: expected an object")

        action_source = properties.get("action_source")
        if action_source.__class__ is not str or action_source not in ACTION_SOURCES:
            action_source = self._action_source(context, device)

        moment = message.get("timestamp")
        if moment is not None:
            event_time = self._event_time(moment, "timestamp")
        else:
            moment = message.get("originalTimestamp")
            if moment is not None:
                event_time = self._event_time(moment, "originalTimestamp")
            elif kafka_timestamp_ms is not None:
                event_time = kafka_timestamp_ms // 1000
            else:
                raise InvalidMessage("mapping_error", "timestamp: missing, and no Kafka timestamp")

        event_id = properties.get("event_id")
        if event_id.__class__ is not str or not event_id:
            event_id = text(event_id, "properties.event_id")
            if event_id is None:
                event_id = message.get("messageId")
                if event_id.__class__ is not str or not event_id:
                    event_id = (
                        text(event_id, "messageId")
                        or hashlib.blake2b(value, digest_size=16).hexdigest()
                    )
        event: dict[str, Any] = {
            "event_name": event_name,
            "action_source": action_source,
            "event_time": event_time,
            "event_id": event_id,
        }

        page = context.get("page")
        url = None
        if page is not None:
            if page.__class__ is not dict:
                raise InvalidMessage("mapping_error", "context.page: expected an object")
            url = page.get("url")
            if url.__class__ is not str or not url:
                url = text(url, "context.page.url")
            if url is not None:
                event["event_source_url"] = url
        if device and device.get("adTrackingEnabled") is False:
            event["opt_out"] = True
        locale = context.get("locale")
        if locale is not None:
            language = self._languages.get(locale, SKIP) if locale.__class__ is str else SKIP
            if language == SKIP:
                language = self._language(locale)
            if language is not None:
                event["language"] = language

        event["user_data"] = self._user_data(message, properties, context, device, url)
        if properties:
            custom_data = _custom_data(properties)
            if custom_data:
                event["custom_data"] = custom_data
        if device or context.get("app") is not None or context.get("os") is not None:
            _app_fields(event, context, device)
        return event, message, None

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

    def _action_source(self, context: Mapping[str, Any], device: Mapping[str, Any]) -> str:
        candidate = context.get("action_source")
        if candidate.__class__ is str and candidate in ACTION_SOURCES:
            return candidate
        device_type = device.get("type")
        if device_type.__class__ is str:
            from_device = DEVICE_ACTION_SOURCES.get(device_type.lower())
            if from_device is not None:
                return from_device
        return self._default_action_source

    def _event_time(self, value: Any, path: str) -> int:
        # Most timestamps are `YYYY-MM-DDTHH:MM:SS[.mmm]Z`; their whole second is remembered, so
        # a hit skips datetime parsing. Only positive results are kept: below the epoch, `int`
        # truncates toward zero and the milliseconds would matter.
        if value.__class__ is not str or not (
            (len(value) == 24 and value[23] == "Z" and value[19:23] in _MILLISECONDS)
            or (len(value) == 20 and value[19] == "Z")
        ):
            return parse_time(value, path)
        second = value[:19]
        seconds = self._seconds.get(second)
        if seconds is None:
            seconds = parse_time(value, path)
            if seconds > 0 and _ISO_SECOND.fullmatch(second):
                if len(self._seconds) >= SECOND_CACHE_SIZE:
                    self._seconds.clear()
                self._seconds[second] = seconds
        return seconds

    def _language(self, locale: Any) -> str | None:
        found = text(locale, "context.locale")
        language = None
        if found is not None and len(found) >= 2 and found[:2].isalpha():
            language = found[:2].lower()
        if locale.__class__ is str and len(self._languages) < NAME_CACHE_SIZE:
            self._languages[locale] = language
        return language

    def _user_data(
        self,
        message: Mapping[str, Any],
        properties: Mapping[str, Any],
        context: Mapping[str, Any],
        device: Mapping[str, Any],
        url: str | None,
    ) -> dict[str, Any]:
        one = self._hasher.one
        user_data: dict[str, Any] = {}
        # Both traits objects are checked before any value is read, as the places are listed.
        context_traits = _place(context, "traits", "context.traits")
        traits = _place(message, "traits", "traits")
        # Walk each place's own keys once (a handful) instead of probing every alias in it,
        # and hash straight into the arrays: this is the hottest loop of the forwarder.
        for prefix, place, table in (
            ("properties", properties, self._person),
            ("context.traits", context_traits, self._traits),
            ("traits", traits, self._traits),
        ):
            if not place:
                continue
            for key, value in place.items():
                found = table.get(key)
                if found is None:
                    continue
                field, memo = found
                if value.__class__ is str:
                    # A memo hit (the common case) needs no further checks: only non-empty
                    # values of hashed fields are ever remembered ("address" has no memo).
                    hexdigest = memo.get(value)
                    if hexdigest is None:
                        if not value:
                            continue
                        if field is ADDRESS:
                            raise InvalidMessage(
                                "mapping_error", f"{prefix}.address: expected an object"
                            )
                        hexdigest = one(field, value)
                    if hexdigest:
                        hashed = user_data.get(field)
                        if hashed is None:
                            user_data[field] = [hexdigest]
                        elif hexdigest not in hashed:
                            hashed.append(hexdigest)
                elif value is None:
                    continue
                elif field is ADDRESS:
                    self._address(user_data, value, prefix + ".address")
                else:
                    self._add(user_data, field, texts(value, prefix, key))
        user_id = message.get("userId")
        if user_id is not None:
            self._add(
                user_data,
                "external_id",
                [user_id] if user_id.__class__ is str else texts(user_id, "userId"),
            )
        if device:
            advertising_id = device.get("advertisingId")
            if advertising_id is not None and device.get("adTrackingEnabled") is not False:
                path = "context.device.advertisingId"
                self._add(user_data, "hashed_maids", texts(advertising_id, path))
        ip = context.get("ip")
        if ip is not None:
            if ip.__class__ is not str or not ip:
                ip = text(ip, "context.ip")
            if ip is not None:
                user_data["client_ip_address"] = ip
        user_agent = context.get("userAgent")
        if user_agent is not None:
            if user_agent.__class__ is not str or not user_agent:
                user_agent = text(user_agent, "context.userAgent")
            if user_agent is not None:
                user_data["client_user_agent"] = user_agent
        click_id = properties.get("click_id")
        if click_id is not None:
            click_id = text(click_id, "properties.click_id")
        if click_id is None and url is not None and "epik=" in url:
            click_id = _epik(url)
        if click_id is not None:
            user_data["click_id"] = click_id
        return user_data

    def _add(self, user_data: dict[str, Any], field: str, values: list[str]) -> None:
        one = self._hasher.one
        for value in values:
            hexdigest = one(field, value)
            if hexdigest:
                hashed = user_data.get(field)
                if hashed is None:
                    user_data[field] = [hexdigest]
                elif hexdigest not in hashed:
                    hashed.append(hexdigest)

    def _address(self, user_data: dict[str, Any], address: Any, path: str) -> None:
        if address.__class__ is not dict:
            raise InvalidMessage("mapping_error", f"{path}: expected an object")
        one = self._hasher.one
        table = self._address_keys
        for key, value in address.items():
            found = table.get(key)
            if found is None or value is None:
                continue
            field, memo = found
            if value.__class__ is str:
                hexdigest = (memo.get(value) or one(field, value)) if value else ""
                if hexdigest:
                    hashed = user_data.get(field)
                    if hashed is None:
                        user_data[field] = [hexdigest]
                    elif hexdigest not in hashed:
                        hashed.append(hexdigest)
            else:
                self._add(user_data, field, texts(value, path, key))


def _custom_data(properties: Mapping[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    currency = properties.get("currency")
    if currency is not None:
        if currency.__class__ is not str:
            currency = text(currency, "properties.currency")
        if currency:
            currency = currency.strip()
            if currency:
                custom["currency"] = currency.upper()
    for key in ("value", "revenue", "total", "price"):
        amount = properties.get(key)
        if amount is not None:
            if amount.__class__ is float and "." in (shown := repr(amount)) and "e" not in shown:
                value: str | None = shown  # as `decimal` would show it, without the call
            else:
                value = decimal(amount, "properties", key)
            if value is not None:
                custom["value"] = value
                break
    order_id = properties.get("order_id")
    if order_id is not None:
        if order_id.__class__ is not str or not order_id:
            order_id = text(order_id, "properties", "order_id")
        if order_id is not None:
            custom["order_id"] = order_id
    query = properties.get("query")
    if query is not None:
        if query.__class__ is not str or not query:
            query = text(query, "properties", "query")
        if query is not None:
            custom["search_string"] = query
    products = properties.get("products")
    if products is not None:
        if products.__class__ is not list:
            raise InvalidMessage("mapping_error", "properties.products: expected an array")
        if products:
            _contents(custom, products, "properties.products")
    elif properties.get("product_id") is not None or properties.get("sku") is not None:
        _contents(custom, [properties], "")
    return custom


def _contents(custom: dict[str, Any], products: list[Any], path: str) -> None:
    """`contents`, `content_ids` and `num_items` from product objects; no `path` means the one
    product is `properties` itself."""
    contents: list[dict[str, Any]] = []
    ids: list[str] = []
    num_items: int | None = None
    for index, product in enumerate(products):
        if product.__class__ is not dict:
            raise InvalidMessage("mapping_error", f"{path}[{index}]: expected an object")
        item: dict[str, Any] = {}
        product_id = product.get("product_id")
        if product_id.__class__ is not str or not product_id:
            where = _where(path, index)
            product_id = text(product_id, where, "product_id") or text(
                product.get("sku"), where, "sku"
            )
        if product_id is not None:
            item["id"] = product_id
            if product_id not in ids:
                ids.append(product_id)
        price = product.get("price")
        if price is not None:
            if price.__class__ is float and "." in (shown := repr(price)) and "e" not in shown:
                # A finite float shown without an exponent is its own decimal text, as
                # `decimal` would return it (inf and nan have no ".").
                price = shown
            else:
                price = decimal(price, _where(path, index), "price")
            if price is not None:
                item["item_price"] = price
        quantity = product.get("quantity")
        if quantity is not None:
            if quantity.__class__ is not int:
                quantity = integer(quantity, _where(path, index), "quantity")
            item["quantity"] = quantity
            if quantity is not None:
                num_items = quantity if num_items is None else num_items + quantity
        for target, key in PRODUCT_FIELDS:
            value = product.get(key)
            if value is not None:
                if value.__class__ is not str:
                    value = text(value, _where(path, index), key)
                if value:
                    item[target] = value
        if item:
            contents.append(item)
    if contents:
        custom["contents"] = contents
        if ids:
            custom["content_ids"] = ids
        if num_items is not None:
            custom["num_items"] = num_items


def _where(path: str, index: int) -> str:
    """The product's path in errors, built only when one may be raised."""
    return f"{path}[{index}]" if path else "properties"


def _app_fields(
    event: dict[str, Any], context: Mapping[str, Any], device: Mapping[str, Any]
) -> None:
    app = _place(context, "app", "context.app")
    system = _place(context, "os", "context.os")
    network = _place(context, "network", "context.network")
    if app:
        for target, key, path in APP_FIELDS:
            value = app.get(key)
            if value is not None:
                value = text(value, path)
                if value is not None:
                    event[target] = value
    if device:
        for target, key, path in DEVICE_FIELDS:
            value = device.get(key)
            if value is not None:
                value = text(value, path)
                if value is not None:
                    event[target] = value
    if network:
        carrier = network.get("carrier")
        if carrier is not None:
            carrier = text(carrier, "context.network.carrier")
            if carrier is not None:
                event["device_carrier"] = carrier
    if system:
        version = system.get("version")
        if version is not None:
            version = text(version, "context.os.version")
            if version is not None:
                event["os_version"] = version
    wifi = network.get("wifi")
    if wifi.__class__ is bool:
        event["wifi"] = wifi
