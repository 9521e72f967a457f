"""Seeded, realistic Segment clickstream for `make run`, tests, benchmarks and the soak."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from stream.dlq.contract import DeadLetterReason

Mix = Literal["realistic", "order_completed", "page"]
MessageKind = Literal["valid", "skipped", "poison"]

FIRST_NAMES = (
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Alan",
    "Hedy",
    "José",
    "Zoë",
    "Søren",
    "Amélie",
)
LAST_NAMES = ("Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Lamarr", "Núñez", "O'Brien")
CITIES = (
    ("San Francisco", "California", "94103", "US"),
    ("New York", "NY", "10001-1234", "United States"),
    ("Austin", "Texas", "78701", "USA"),
    ("Toronto", "Ontario", "M5V 2T6", "Canada"),
    ("London", "", "SW1A 1AA", "GB"),
    ("Paris", "", "75001", "France"),
)
USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
)
PRODUCTS = tuple(
    {
        "product_id": f"sku-{n:05d}",
        "name": name,
        "category": category,
        "brand": brand,
        "price": price,
    }
    for n, (name, category, brand, price) in enumerate(
        [
            ("Linen Throw Pillow", "Home/Decor", "Nordhaus", 24.5),
            ("Ceramic Vase", "Home/Decor", "Atelier K", 39.0),
            ("Trail Running Shoe", "Sports/Footwear", "Fjellsko", 129.99),
            ("Wool Beanie", "Apparel/Accessories", "Nordhaus", 19.0),
            ("Cast Iron Skillet", "Kitchen/Cookware", "Forge & Co", 54.95),
            ("Watercolor Set", "Arts/Supplies", "Pigmenta", 32.0),
            ("Yoga Mat", "Sports/Fitness", "Asana", 45.0),
            ("Espresso Cups (4)", "Kitchen/Tableware", "Atelier K", 28.0),
        ]
    )
)
PAGES = ("/", "/collections/home", "/collections/kitchen", "/blog/spring-ideas", "/sale")
SEARCHES = ("linen pillow", "running shoes", "gift ideas", "vase")
BOTTOM_FUNNEL = ("Product Added", "Checkout Started", "Order Completed", "Signed Up")


@dataclass(frozen=True, slots=True)
class GeneratedMessage:
    """One produced message and what the forwarder is expected to do with it."""

    key: bytes
    value: bytes
    kind: MessageKind
    reason: DeadLetterReason | None = None
    event_id: str | None = None
    event_name: str | None = None


@dataclass(slots=True)
class _Visitor:
    anonymous_id: str
    user_id: str | None
    traits: dict[str, Any]
    ip: str
    user_agent: str
    device: dict[str, Any] | None
    cart: list[dict[str, Any]] = field(default_factory=list)
    # Once identified, later messages name the user by userId/anonymousId only.
    identified: bool = False


class ClickstreamGenerator:
    """Deterministic for a seed: the same seed yields the same messages (ids included).

    `now` anchors event times; `poison_ratio` of messages are malformed, spread over the reasons
    the mapping stage can decide by itself (decode_error, invalid_event, mapping_error, too_old).
    With `identify_first`, a known visitor's session starts with an `identify` call carrying
    their traits, and their later messages carry none (as server-side libraries send them):
    only identity enrichment brings their hashed e-mail to those events. Every message of a
    visitor is keyed by their anonymousId.
    """

    def __init__(
        self,
        seed: int,
        now: Callable[[], float] = time.time,
        poison_ratio: float = 0.01,
        mix: Mix = "realistic",
        identify_first: bool = False,
    ) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self._now = now
        self._poison_ratio = poison_ratio
        self._mix = mix
        self._identify_first = identify_first

    def messages(self, count: int) -> Iterator[GeneratedMessage]:
        produced = 0
        while produced < count:
            for message in self._session():
                yield message
                produced += 1
                if produced == count:
                    return

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _session(self) -> Iterator[GeneratedMessage]:
        rng = self._rng
        visitor = self._visitor(always_known=self._mix == "order_completed")
        if self._mix == "page":
            yield self._page(visitor, minimal=True)
            return
        if self._mix == "order_completed":
            visitor.cart = rng.sample(PRODUCTS, 2)
            yield self._track(visitor, "Order Completed")
            return
        if self._identify_first and visitor.user_id:
            yield self._identify(visitor)
            visitor.identified = True
        for _ in range(rng.randint(1, 4)):
            yield self._maybe_poison(visitor) or self._page(visitor)
        if rng.random() < 0.3:
            yield self._track(visitor, "Products Searched")
        for product in rng.sample(PRODUCTS, rng.randint(1, 3)):
            visitor.cart = [product]
            yield self._maybe_poison(visitor) or self._track(visitor, "Product Viewed")
            if rng.random() < 0.5:
                yield self._track(visitor, "Product Added")
        if rng.random() < 0.35:
            visitor.cart = rng.sample(PRODUCTS, rng.randint(1, 3))
            yield self._track(visitor, "Checkout Started")
            yield self._track(visitor, "Order Completed")
        if rng.random() < 0.1:
            yield self._track(visitor, "Signed Up")
        if rng.random() < 0.15 and not visitor.identified:
            yield self._identify(visitor)

    def _visitor(self, always_known: bool) -> _Visitor:
        rng = self._rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        city, state, postal, country = rng.choice(CITIES)
        known = always_known or rng.random() < 0.6
        user_id = f"user-{rng.randrange(10**8):08d}" if known else None
        traits: dict[str, Any] = {}
        if known:
            traits = {
                "email": f" {first}.{last}{rng.randrange(10**4)}@Example.com ".replace("'", ""),
                "phone": f"+1 (415) 555-{rng.randrange(10**4):04d}",
                "firstName": first,
                "lastName": last,
                "gender": rng.choice(("female", "male", "non-binary", "")),
                "birthday": f"19{rng.randint(50, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                "address": {
                    "city": city,
                    "state": state,
                    "postalCode": postal,
                    "country": country,
                },
            }
        app = not always_known and rng.random() < 0.12
        device = None
        if app:
            platform = rng.choice(("ios", "android"))
            device = {
                "type": platform,
                "advertisingId": self._uuid(),
                "adTrackingEnabled": rng.random() < 0.8,
                "manufacturer": "Apple" if platform == "ios" else "Google",
                "model": "iPhone15,2" if platform == "ios" else "Pixel 8",
            }
        return _Visitor(
            anonymous_id=self._uuid(),
            user_id=user_id,
            traits=traits,
            ip=f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            user_agent=rng.choice(USER_AGENTS),
            device=device,
        )

    def _timestamp(self, age_s: float | None = None) -> str:
        age = self._rng.uniform(0, 120) if age_s is None else age_s
        return (
            datetime.fromtimestamp(self._now() - age, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )

    def _context(self, visitor: _Visitor, path: str) -> dict[str, Any]:
        context: dict[str, Any] = {
            "ip": visitor.ip,
            "userAgent": visitor.user_agent,
            "locale": "en-US",
            "page": {
                "url": f"https://shop.example.com{path}"
                + (
                    f"?epik=dj0yJnU9{self._rng.randrange(10**6)}"
                    if self._rng.random() < 0.2
                    else ""
                ),
                "path": path,
            },
        }
        if visitor.traits and not visitor.identified:
            context["traits"] = visitor.traits
        if visitor.device is not None:
            context["device"] = visitor.device
            context["app"] = {"name": "Shop", "version": "5.2.1", "namespace": "com.example.shop"}
            context["os"] = {"name": visitor.device["type"], "version": "17.5"}
            context["network"] = {"carrier": "T-Mobile", "wifi": True}
        return context

    def _base(self, visitor: _Visitor, kind: str, path: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": kind,
            "messageId": self._uuid(),
            "anonymousId": visitor.anonymous_id,
            "timestamp": self._timestamp(),
            "context": self._context(visitor, path),
        }
        if visitor.user_id:
            message["userId"] = visitor.user_id
        return message

    def _emit(self, message: dict[str, Any], event_name: str) -> GeneratedMessage:
        return GeneratedMessage(
            key=message["anonymousId"].encode(),
            value=orjson.dumps(message),
            kind="valid",
            event_id=message["messageId"],
            event_name=event_name,
        )

    def _page(self, visitor: _Visitor, minimal: bool = False) -> GeneratedMessage:
        path = self._rng.choice(PAGES)
        if minimal:
            message = {
                "type": "page",
                "messageId": self._uuid(),
                "anonymousId": visitor.anonymous_id,
                "timestamp": self._timestamp(),
                "context": {"ip": visitor.ip, "userAgent": visitor.user_agent},
            }
            return self._emit(message, "page_visit")
        kind = "screen" if visitor.device is not None else "page"
        message = self._base(visitor, kind, path)
        message["name"] = path
        return self._emit(message, "page_visit")

    def _track(self, visitor: _Visitor, event: str) -> GeneratedMessage:
        rng = self._rng
        message = self._base(visitor, "track", "/checkout" if "Order" in event else "/product")
        message["event"] = event
        properties: dict[str, Any] = {}
        if event == "Products Searched":
            properties["query"] = rng.choice(SEARCHES)
        elif event in ("Product Viewed", "Product Added"):
            product = visitor.cart[0]
            properties = {
                "product_id": product["product_id"],
                "name": product["name"],
                "category": product["category"],
                "brand": product["brand"],
                "price": product["price"],
                "quantity": 1,
                "currency": "usd",
            }
        elif event in ("Checkout Started", "Order Completed"):
            products = [
                {
                    "product_id": p["product_id"],
                    "sku": p["product_id"].upper(),
                    "name": p["name"],
                    "category": p["category"],
                    "brand": p["brand"],
                    "price": p["price"],
                    "quantity": rng.randint(1, 3),
                }
                for p in visitor.cart
            ]
            total = round(sum(p["price"] * p["quantity"] for p in products), 2)
            properties = {
                "order_id": f"order-{rng.randrange(10**9):09d}",
                "total": total,
                "revenue": total,
                "currency": "USD",
                "products": products,
            }
        if event in BOTTOM_FUNNEL and visitor.traits and not visitor.identified:
            properties["email"] = visitor.traits["email"]
        if properties:
            message["properties"] = properties
        names = {
            "Products Searched": "search",
            "Product Viewed": "page_visit",
            "Product Added": "add_to_cart",
            "Checkout Started": "initiate_checkout",
            "Order Completed": "checkout",
            "Signed Up": "signup",
        }
        return self._emit(message, names[event])

    def _identify(self, visitor: _Visitor) -> GeneratedMessage:
        message = self._base(visitor, "identify", "/account")
        message["traits"] = visitor.traits
        return GeneratedMessage(
            key=visitor.anonymous_id.encode(),
            value=orjson.dumps(message),
            kind="skipped",
            event_id=message["messageId"],
        )

    def _maybe_poison(self, visitor: _Visitor) -> GeneratedMessage | None:
        rng = self._rng
        if rng.random() >= self._poison_ratio:
            return None
        key = visitor.anonymous_id.encode()
        choice = rng.randrange(4)
        if choice == 0:
            return GeneratedMessage(
                key, b'{"type": "page", "messageId": ', "poison", "decode_error"
            )
        if choice == 1:
            # No email, MAID or IP + user agent: fails Pinterest's identifier rule.
            message: dict[str, Any] = {
                "type": "page",
                "messageId": self._uuid(),
                "anonymousId": visitor.anonymous_id,
                "timestamp": self._timestamp(),
            }
            reason: DeadLetterReason = "invalid_event"
        elif choice == 2:
            message = self._base(visitor, "page", "/")
            message["timestamp"] = self._timestamp(age_s=30 * 86400)
            reason = "too_old"
        else:
            message = self._base(visitor, "track", "/")
            message.update(properties={"products": "not-a-list"}, event={"not": "a name"})
            reason = "mapping_error"
        return GeneratedMessage(
            key, orjson.dumps(message), "poison", reason, event_id=message["messageId"]
        )
