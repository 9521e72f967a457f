"""Maps a Segment Spec message (page, screen, track) to a Pinterest event object (DESIGN §3)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_plus

from stream.decode import EMPTY, decimal, decode_json_object, exact_text, integer, text, texts
from stream.errors import ConfigurationError, InvalidMessage
from stream.formats.base import MAX_CONTENTS, Identified, Mapped
from stream.hashing import MAX_VALUES_PER_FIELD, Hasher
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
# Distinct raw event names remembered per source; beyond this, names are keyed uncached.
NAME_CACHE_SIZE: Final = 4096
# Distinct whole seconds of ISO timestamps remembered; cleared when full (a few minutes' worth).
SECOND_CACHE_SIZE: Final = 4096
# What may follow the whole second of a cacheable ISO timestamp: `Z` or `.mmmZ`.
_UTC_SUFFIXES: Final = frozenset(["Z", *(f".{n:03d}Z" for n in range(1000))])
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
    """The first non-empty `epik` query parameter of `url`, decoded as `parse_qs` decodes it.

    Found with `str.find`, not by parsing the query: a hostile ~1 MB URL of `epik` parameters
    took `parse_qs` over 100 ms. The key is matched as written (`%65pik` is not `epik`).
    """
    fragment = url.find("#")
    head = url if fragment < 0 else url[:fragment]
    query = head.find("?") + 1
    if not query:
        return None
    start = head.find("epik=", query)
    while start >= 0:
        end = start + 5
        if start == query or head[start - 1] == "&":
            stop = head.find("&", end)
            value = head[end : stop if stop >= 0 else len(head)]
            if value:
                return unquote_plus(value) if "%" in value or "+" in value else value
        start = head.find("epik=", end)
    return None


def parse_event_time(value: Any, path: str) -> int:
    """Unix seconds from ISO-8601 text or epoch milliseconds (plain seconds are recognised too)."""
    if value.__class__ is str:
        stripped = value.strip()
        if stripped.isdigit() and stripped.isascii():  # "²" is a digit to str.isdigit
            return parse_event_time(int(stripped), path)
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
    """The object at `parent[key]`; EMPTY when absent or null. `path` names it in errors."""
    value = parent.get(key)
    if value.__class__ is dict:
        return value
    if value is None:
        return EMPTY
    raise InvalidMessage("mapping_error", f"{path}: expected an object")


def _copy_texts(
    target: dict[str, Any],
    parent: Mapping[str, Any],
    fields: tuple[tuple[str, str], ...],
    path: str,
) -> None:
    """Copies text fields of `parent` (the object at `path`) into `target`, from each key to its
    target name, as `text` reads them: numbers as their digits, "" and null as absent."""
    for key, name in fields:
        value = parent.get(key)
        if value.__class__ is str:
            if value:
                target[name] = value
        elif value is not None:
            value = text(value, path, key)
            if value is not None:
                target[name] = value


def _copy_id(
    target: dict[str, Any],
    parent: Mapping[str, Any],
    where: tuple[str, ...],
    name: str,
    raw: bytes,
) -> None:
    """Copies the id at `where` in the message `raw` (`parent` holds it) into `target[name]` as
    `_copy_texts` would, keeping every digit of a number (`exact_text`)."""
    key = where[-1]
    value = parent.get(key)
    if value.__class__ is str:
        if value:
            target[name] = value
        return
    found = exact_text(value, raw, where, ".".join(where[:-1]), key)
    if found is not None:
        target[name] = found


def _times(amount: str, quantity: int) -> str:
    """The decimal string `amount` (as `decimal` writes it) times `quantity`, exactly: integer
    arithmetic on its digits, with as many decimals as `amount` has (14.99 times 3 is 44.97)."""
    whole, _, fraction = amount.partition(".")
    product = int(whole + fraction) * quantity
    if not fraction:
        return str(product)
    digits = str(abs(product)).rjust(len(fraction) + 1, "0")
    sign = "-" if product < 0 else ""
    return f"{sign}{digits[: -len(fraction)]}.{digits[-len(fraction) :]}"


# Where the ids read by `_copy_id` are in the message.
_EVENT_ID: Final = ("properties", "event_id")
_MESSAGE_ID: Final = ("messageId",)
_ORDER_ID: Final = ("properties", "order_id")
_PROPERTIES: Final = ("properties",)
_PRODUCTS: Final = ("properties", "products")
# (message key, target name) pairs read by `_copy_texts`, in the order they are written.
_PAGE_URL: Final = (("url", "event_source_url"),)
_WEB_IDENTITY: Final = (("ip", "client_ip_address"), ("userAgent", "client_user_agent"))
_CLICK_ID: Final = (("click_id", "click_id"),)
_SEARCH: Final = (("query", "search_string"),)
PRODUCT_FIELDS: Final = (
    ("name", "item_name"),
    ("category", "item_category"),
    ("brand", "item_brand"),
)
# A single-product event's own product fields describe the event's content too.
CONTENT_FIELDS: Final = (
    ("name", "content_name"),
    ("category", "content_category"),
    ("brand", "content_brand"),
)
_LIST_CATEGORY: Final = (("category", "content_category"),)
APP_FIELDS: Final = (("namespace", "app_id"), ("name", "app_name"), ("version", "app_version"))
DEVICE_FIELDS: Final = (("manufacturer", "device_brand"), ("model", "device_model"))
NETWORK_FIELDS: Final = (("carrier", "device_carrier"),)
OS_FIELDS: Final = (("version", "os_version"),)
# The amounts a Segment event's value is read from, the first present winning; without any,
# the value is `price` times `quantity` (Pinterest's value is the event's total).
AMOUNT_KEYS: Final = ("value", "revenue", "total")
# The event whose `properties.category` is the category viewed (Product List Viewed, Product
# Category Viewed, or any event a source maps to it).
_VIEW_CATEGORY: Final = "view_category"


class SegmentMapper:
    """Maps one source's Segment messages; the event-name table is compiled once per source.

    Fields are read in a fixed order, which also fixes which problem a malformed message is
    reported for. Each reading rule is written once (`_place`, `_copy_texts`, `_copy_id`,
    `_hash_into` and `stream.decode`'s readers). This runs once per message on the forwarder's
    one busy core, where a Python call costs about as much as reading a field, so the hottest
    reads take the common shape with a one-line type check and call the rule only for anything
    else.
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
        self._one = hasher.one
        self._truncated = hasher.truncated
        memos = hasher.memos
        # Key → (field, that field's memo): one lookup per key finds both.
        self._person = {key: (field, memos[field]) for key, field in PERSON_KEYS.items()}
        self._traits = {**self._person, ADDRESS: (ADDRESS, EMPTY)}
        self._address_keys = {key: (field, memos[field]) for key, field in ADDRESS_KEYS.items()}
        self._user_id = {"userId": ("external_id", memos["external_id"])}
        self._advertising_id = {"advertisingId": ("hashed_maids", memos["hashed_maids"])}
        self._learns_identities = source.enrich == "identity"
        self._seconds: dict[str, int] = {}
        self._languages: dict[str, str | None] = {}

    def map(self, value: bytes, kafka_timestamp_ms: int | None) -> Mapped | Skipped | Identified:  # noqa: C901 - the hot path, flat on purpose: a call per step costs ~1 % per event
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
        elif kind == "identify" and self._learns_identities:
            return self._identified(message, kafka_timestamp_ms)
        elif kind in SKIPPED_TYPES:
            return _SKIPPED[kind]
        else:
            raise InvalidMessage("mapping_error", "type: not page, screen, track or identify")

        # An object or nothing is taken without calling `_place` (each call ~1 % of a page
        # event); `_place` reads anything else.
        properties = message.get("properties", EMPTY)
        if properties.__class__ is not dict:
            properties = _place(message, "properties", "properties")
        context = message.get("context", EMPTY)
        if context.__class__ is not dict:
            context = _place(message, "context", "context")
        device = context.get("device", EMPTY)
        if device.__class__ is not dict:
            device = _place(context, "device", "context.device")
        action_source = self._action_source(properties, context, device)
        event_time = self._message_time(message, kafka_timestamp_ms)

        event: dict[str, Any] = {
            "event_name": event_name,
            "action_source": action_source,
            "event_time": event_time,
        }
        if "event_id" in properties:
            _copy_id(event, properties, _EVENT_ID, "event_id", value)
        if "event_id" not in event:
            _copy_id(event, message, _MESSAGE_ID, "event_id", value)
            if "event_id" not in event:
                event["event_id"] = hashlib.blake2b(value, digest_size=16).hexdigest()

        page = context.get("page", EMPTY)
        if page.__class__ is not dict:
            page = _place(context, "page", "context.page")
        if page:
            _copy_texts(event, page, _PAGE_URL, "context.page")
        if "event_source_url" not in event and "url" in properties:
            # Server-side libraries (analytics-python, analytics-node) send no context.page.
            _copy_texts(event, properties, _PAGE_URL, "properties")
        url = event.get("event_source_url")
        if device and device.get("adTrackingEnabled") is False:
            event["opt_out"] = True
        locale = context.get("locale")
        if locale is not None:
            language = self._languages.get(locale, _UNSEEN) if locale.__class__ is str else _UNSEEN
            if language is _UNSEEN:
                language = self._language(locale)
            if language is not None:
                event["language"] = language

        event["user_data"] = self._user_data(message, properties, context, device, url)
        if properties:
            custom_data = self._custom_data(properties, event_name, value)
            if custom_data:
                event["custom_data"] = custom_data
        if device or context.get("app") is not None or context.get("os") is not None:
            _app_fields(event, context, device)
        return event, message, None

    def _message_time(self, message: Mapping[str, Any], kafka_timestamp_ms: int | None) -> int:
        moment = message.get("timestamp")
        if moment is not None:
            return self._event_time(moment, "timestamp")
        moment = message.get("originalTimestamp")
        if moment is not None:
            return self._event_time(moment, "originalTimestamp")
        if kafka_timestamp_ms is not None:
            return kafka_timestamp_ms // 1000
        raise InvalidMessage("mapping_error", "timestamp: missing, and no Kafka timestamp")

    def _identified(self, message: Mapping[str, Any], kafka_timestamp_ms: int | None) -> Identified:
        """The hashed identifiers an identify call gives (traits, context.traits, userId, the
        device's advertising id) for identity enrichment."""
        context = _place(message, "context", "context")
        device = _place(context, "device", "context.device")
        user_data = self._user_data(message, EMPTY, context, device, None)
        return Identified(
            user_data,
            message,
            self._message_time(message, kafka_timestamp_ms),
            device.get("adTrackingEnabled") is False,
        )

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
        for place in (properties, context):
            candidate = place.get("action_source")
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
        if value.__class__ is not str or value[19:] not in _UTC_SUFFIXES:
            return parse_event_time(value, path)
        second = value[:19]
        seconds = self._seconds.get(second)
        if seconds is None:
            seconds = parse_event_time(value, path)
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
        user_data: dict[str, Any] = {}
        # Both traits objects are checked before any value is read, as the places are listed.
        context_traits = _place(context, "traits", "context.traits")
        traits = _place(message, "traits", "traits")
        if properties:
            self._hash_into(user_data, properties.items(), self._person, "properties")
        if context_traits:
            self._hash_into(user_data, context_traits.items(), self._traits, "context.traits")
        if traits:
            self._hash_into(user_data, traits.items(), self._traits, "traits")
        user_id = message.get("userId")
        if user_id is not None:
            self._hash_into(user_data, (("userId", user_id),), self._user_id, "")
        if device:
            advertising_id = device.get("advertisingId")
            if advertising_id is not None and device.get("adTrackingEnabled") is not False:
                pairs = (("advertisingId", advertising_id),)
                self._hash_into(user_data, pairs, self._advertising_id, "context.device")
        _copy_texts(user_data, context, _WEB_IDENTITY, "context")
        if "click_id" in properties:
            _copy_texts(user_data, properties, _CLICK_ID, "properties")
        if url is not None and "click_id" not in user_data and "epik=" in url:
            click_id = _epik(url)
            if click_id is not None:
                user_data["click_id"] = click_id
        return user_data

    def _hash_into(
        self,
        user_data: dict[str, Any],
        pairs: Iterable[tuple[str, Any]],
        table: Mapping[str, tuple[str, Mapping[str, str]]],
        path: str,
    ) -> None:
        """Hashes the identity values among `pairs` (the members of the object at `path`) into
        `user_data`'s arrays, once each; `table` maps a key to its field and that field's memo.

        The hottest loop of the forwarder: each object's own keys (a handful) are walked once
        instead of probing every alias, and a memo hit is appended without a call. Single values
        add at most a few hashes per field (one per key and place), so a list is searched; an
        array, which may hold thousands, goes through `_hash_many`.
        """
        for key, value in pairs:
            found = table.get(key)
            if found is None or value is None:
                continue
            field, memo = found
            if value.__class__ is str:
                # A memo hit (the common case) needs no further checks: only non-empty values
                # of hashed fields are ever remembered ("address" has no memo).
                hexdigest = memo.get(value)
                if hexdigest is None:
                    if not value:
                        continue
                    if field is ADDRESS:
                        raise InvalidMessage("mapping_error", f"{path}.address: expected an object")
                    hexdigest = self._one(field, value)
                if hexdigest:
                    hashed = user_data.get(field)
                    if hashed is None:
                        user_data[field] = [hexdigest]
                    elif hexdigest not in hashed:
                        if len(hashed) < MAX_VALUES_PER_FIELD:
                            hashed.append(hexdigest)
                        else:
                            self._truncated[field] += 1
            elif field is ADDRESS:
                if value.__class__ is not dict:
                    raise InvalidMessage("mapping_error", f"{path}.address: expected an object")
                self._hash_into(user_data, value.items(), self._address_keys, f"{path}.address")
            else:
                # Several values (or a number): each is hashed as the text `texts` reads.
                self._hash_many(user_data, field, memo, texts(value, path, key))

    def _hash_many(
        self, user_data: dict[str, Any], field: str, memo: Mapping[str, str], values: list[str]
    ) -> None:
        """Adds the hashes of `values` to `user_data[field]` until it holds
        `MAX_VALUES_PER_FIELD` distinct ones; the rest are counted in `Hasher.truncated` the way
        `Hasher.hash_values` counts them (a verbatim repeat of an earlier value is no loss),
        without being hashed: a hostile array may hold 80,000 values."""
        hashed: list[str] = user_data.get(field) or []
        seen = set(hashed)
        for index, value in enumerate(values):
            if len(hashed) >= MAX_VALUES_PER_FIELD:
                rest = values[index:]
                earlier = set(values[:index]).__contains__
                self._truncated[field] += len(rest) - sum(map(earlier, rest))
                break
            hexdigest = memo.get(value)
            if hexdigest is None:
                hexdigest = self._one(field, value)
            if hexdigest and hexdigest not in seen:
                seen.add(hexdigest)
                hashed.append(hexdigest)
        if hashed:
            user_data[field] = hashed

    def _custom_data(  # noqa: C901 - one branch per custom_data field of DESIGN §3, a table
        self, properties: Mapping[str, Any], event_name: str, raw: bytes
    ) -> dict[str, Any]:
        custom: dict[str, Any] = {}
        currency = properties.get("currency")
        if currency is not None:
            if currency.__class__ is not str:
                currency = text(currency, "properties", "currency")
            if currency:
                currency = currency.strip()
                if currency:
                    custom["currency"] = currency.upper()
        priced = False
        for key in AMOUNT_KEYS:
            amount = properties.get(key)
            if amount is not None:
                amount = decimal(amount, "properties", key)
                if amount is not None:
                    custom["value"] = amount
                    break
        else:
            price = properties.get("price")
            if price is not None:
                price = decimal(price, "properties", "price")
                if price is not None:
                    custom["value"] = price
                    priced = True
        if "order_id" in properties:
            _copy_id(custom, properties, _ORDER_ID, "order_id", raw)
        if "query" in properties:
            _copy_texts(custom, properties, _SEARCH, "properties")
        products = properties.get("products")
        if products is not None:
            if products.__class__ is not list:
                raise InvalidMessage("mapping_error", "properties.products: expected an array")
            if len(products) > MAX_CONTENTS:
                self._truncated["contents"] += len(products) - MAX_CONTENTS
                products = products[:MAX_CONTENTS]
            if products:
                _contents(custom, products, "properties.products", raw, _PRODUCTS)
        elif properties.get("product_id") is not None or properties.get("sku") is not None:
            _contents(custom, [properties], "", raw, _PROPERTIES)
            _copy_texts(custom, properties, CONTENT_FIELDS, "properties")
        if event_name == _VIEW_CATEGORY and "category" in properties:
            _copy_texts(custom, properties, _LIST_CATEGORY, "properties")
        if priced:
            # The quantity is read last, after the product's own reading of it, so a message
            # with several problems is reported for the same one as before price times quantity.
            quantity = properties.get("quantity")
            if quantity is not None and quantity != 1:
                if quantity.__class__ is not int:
                    quantity = integer(quantity, "properties", "quantity")
                if quantity is not None and quantity != 1:
                    custom["value"] = _times(custom["value"], quantity)
        return custom


def _contents(  # noqa: C901 - one pass over the products, for speed
    custom: dict[str, Any],
    products: list[Any],
    path: str,
    raw: bytes,
    where: tuple[str, ...],
) -> None:
    """`contents`, `content_ids` and `num_items` from product objects, which are at `where` in
    the message `raw`; no `path` means the one product is `properties` itself (at `where`)."""
    contents: list[dict[str, Any]] = []
    ids: dict[str, None] = {}  # ordered and de-duplicated in constant time per id
    num_items: int | None = None
    for index, product in enumerate(products):
        if product.__class__ is not dict:
            raise InvalidMessage(
                "mapping_error", f"{_product_path(path, index)}: expected an object"
            )
        item: dict[str, Any] = {}
        try:
            # Fields are named relative to the product; its path is built only for an error.
            product_id = product.get("product_id")
            if product_id.__class__ is not str or not product_id:
                place: tuple[str | int, ...] = (*where, index) if path else where
                product_id = exact_text(
                    product_id, raw, (*place, "product_id"), "", "product_id"
                ) or exact_text(product.get("sku"), raw, (*place, "sku"), "", "sku")
            if product_id is not None:
                item["id"] = product_id
                ids[product_id] = None
            price = product.get("price")
            if price is not None:
                if price.__class__ is float and "." in (shown := repr(price)) and "e" not in shown:
                    price = shown  # `decimal`'s reading of a finite float, without the call
                else:
                    price = decimal(price, "", "price")
                if price is not None:
                    item["item_price"] = price
            quantity = product.get("quantity")
            if quantity is not None:
                if quantity.__class__ is not int:
                    quantity = integer(quantity, "", "quantity")
                item["quantity"] = quantity
                if quantity is not None:
                    num_items = quantity if num_items is None else num_items + quantity
            _copy_texts(item, product, PRODUCT_FIELDS, "")
        except InvalidMessage as exc:
            named = _product_path(path, index)
            raise InvalidMessage(exc.reason, f"{named}.{exc.message}") from None
        if item:
            contents.append(item)
    if contents:
        custom["contents"] = contents
        if ids:
            custom["content_ids"] = list(ids)
        if num_items is not None:
            custom["num_items"] = num_items


def _product_path(path: str, index: int) -> str:
    """The product's path in errors: `path[index]`, or `properties` for the one product it holds."""
    return f"{path}[{index}]" if path else "properties"


def _app_fields(
    event: dict[str, Any], context: Mapping[str, Any], device: Mapping[str, Any]
) -> None:
    app = _place(context, "app", "context.app")
    system = _place(context, "os", "context.os")
    network = _place(context, "network", "context.network")
    if app:
        _copy_texts(event, app, APP_FIELDS, "context.app")
    if device:
        _copy_texts(event, device, DEVICE_FIELDS, "context.device")
    if network:
        _copy_texts(event, network, NETWORK_FIELDS, "context.network")
    if system:
        _copy_texts(event, system, OS_FIELDS, "context.os")
    wifi = network.get("wifi")
    if wifi.__class__ is bool:
        event["wifi"] = wifi
