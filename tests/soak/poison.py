"""The soak's poison schedule: every kind of bad message of issue 15, built from a seed, each on
several partitions, with the outcome the forwarder's own transform predicts and the raw canaries
(emails, phones) that must never reach the sandbox."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import orjson

from tests.fuzz.predict import Outcome, Predictor
from tests.soak.workload import Expectation, Produced, Source, delivered_fate, hashes_digest

MIB: Final = 1024 * 1024
# Well formed (1-18 digits) but in no configured set: `pinterest.ad_account_id`, the sources'
# own, `pinterest.allowed_ad_accounts`.
FOREIGN_AD_ACCOUNT: Final = "987654321012"
BOM: Final = b"\xef\xbb\xbf"
CANARY_DOMAIN: Final = "poison.example"
# 2^64: ids at and beyond it lost digits to float rounding (two ids merged into one).
BEYOND_64_BITS: Final = 2**64


@dataclass(frozen=True, slots=True)
class PoisonPlan:
    """How much poison: `copies` of every kind (each on another partition), arrays of
    `large_items` within `kafka.max_message_bytes`, and `over_limit_items` (None: none) in the
    messages beyond it; the topics' max.message.bytes make the near-1 MiB dead letters too
    large for the dead-letter topic."""

    copies: int = 2
    large_items: int = 10_000
    over_limit_items: int | None = None
    near_limit_bytes: int = 1_040_000
    over_limit_bytes: int = 1_200_000
    source_max_bytes: int = 4 * MIB
    dlq_max_bytes: int = 256 * 1024

    @classmethod
    def full(cls) -> PoisonPlan:
        return cls(copies=3, over_limit_items=100_000)

    @classmethod
    def short(cls) -> PoisonPlan:
        return cls()


@dataclass(frozen=True, slots=True)
class Poison:
    """One poison message, where it goes, what must become of it and what it must not leak.

    `must_cut`: its dead letter must arrive truncated (True), whole (False), or either, as the
    broker decides on the compressed size (None).
    """

    kind: str
    produced: Produced
    partition: int
    outcome: Outcome
    must_cut: bool | None
    emails: tuple[str, ...]
    phones: tuple[str, ...]

    @property
    def value(self) -> bytes:
        return self.produced.value


class _Builder:
    """Messages of both sources around a canary identity, deterministic for a seed."""

    def __init__(self, seed: int, now: float, plan: PoisonPlan) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.plan = plan
        self.serial = 0
        self.emails: list[str] = []
        self.phones: list[str] = []

    def start(self) -> str:
        """A fresh message: its event id; canaries collected from here belong to it."""
        self.serial += 1
        self.emails, self.phones = [], []
        return f"poison-{self.serial:04d}-{self.rng.getrandbits(32):08x}"

    def email(self, tag: str = "") -> str:
        address = f"canary.{self.serial}{tag}@{CANARY_DOMAIN}"
        self.emails.append(address)
        return address

    def phone(self) -> str:
        number = f"+1 (628) 555-{self.serial % 10_000:04d}"
        self.phones.append(number)
        return number

    def timestamp(self, age_s: float = 60.0) -> str:
        moment = datetime.fromtimestamp(self.now - age_s, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def segment(self, event_id: str, **properties: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Order Completed",
            "messageId": event_id,
            "timestamp": self.timestamp(),
            "userId": f"poison-user-{self.serial}",
            "context": {
                "ip": "203.0.113.77",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) poison/1.0",
                "traits": {"email": self.email(), "phone": self.phone()},
            },
            "properties": {"order_id": f"po-{self.serial}", "value": 12.5, "currency": "usd"}
            | properties,
        }

    def pinterest(self, event_id: Any, **fields: Any) -> dict[str, Any]:
        return {
            "event_name": "checkout",
            "action_source": "offline",
            "event_time": int(self.now - 3600),
            "event_id": event_id,
            "user_data": {"em": [self.email()], "ph": [self.phone()]},
            "custom_data": {"currency": "EUR", "value": "12.00"},
        } | fields

    def padded(self, message: dict[str, Any], size: int, incompressible: bool) -> bytes:
        """`message` with `properties.notes` (ignored by the mapper) grown to `size` bytes."""
        message["properties"]["notes"] = ""
        room = size - len(orjson.dumps(message))
        if incompressible:
            filler = base64.b64encode(self.rng.randbytes(room)).decode()[:room]
        else:
            filler = "x" * room
        message["properties"]["notes"] = filler
        return orjson.dumps(message)

    def emails_list(self, count: int) -> list[str]:
        return [self.email(f".{i:x}") for i in range(count)]


def _kinds(b: _Builder) -> dict[str, Callable[[int], tuple[Source, bytes]]]:  # noqa: C901 - one small closure per poison kind: a table
    """Each kind's message for copy `n` (copies alternate between the sources where both
    apply)."""
    plan = b.plan

    def non_json_1mb(n: int) -> tuple[Source, bytes]:
        b.start()
        # Random bytes neither parse nor compress: a dead letter cut to fit its topic.
        return ("web" if n % 2 == 0 else "crm"), b"\xff" + b.rng.randbytes(
            plan.near_limit_bytes - 1
        )

    def json_near_1mb(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        if n % 2 == 0:
            return "web", b.padded(b.segment(event_id), plan.near_limit_bytes, False)
        message = b.pinterest(event_id)
        message["user_data"]["em"] = ["@example.org"]
        room = plan.near_limit_bytes - len(orjson.dumps(message))
        message["user_data"]["em"] = ["x" * room + "@example.org"]  # one huge address
        return "crm", orjson.dumps(message)

    def many_emails(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        if n % 2 == 0:
            message = b.segment(event_id)
            message["context"]["traits"]["email"] = b.emails_list(plan.large_items)
            return "web", orjson.dumps(message)
        message = b.pinterest(event_id)
        message["user_data"]["em"] = b.emails_list(plan.large_items)
        return "crm", orjson.dumps(message)

    def many_products(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        if n % 2 == 0:
            products = [
                {"product_id": f"p{i:x}", "price": 1.25, "quantity": 1}
                for i in range(plan.large_items)
            ]
            return "web", orjson.dumps(b.segment(event_id, products=products))
        message = b.pinterest(event_id)
        message["custom_data"]["contents"] = [
            {"id": f"p{i:x}", "item_price": "1.25", "quantity": 1} for i in range(plan.large_items)
        ]
        return "crm", orjson.dumps(message)

    def over_max_bytes(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        if plan.over_limit_items is not None and n % 3 == 1:
            message = b.segment(event_id)
            message["context"]["traits"]["email"] = b.emails_list(plan.over_limit_items)
            return "web", orjson.dumps(message)
        if plan.over_limit_items is not None and n % 3 == 2:
            products = [{"sku": f"s{i:x}"} for i in range(plan.over_limit_items)]
            return "web", orjson.dumps(b.segment(event_id, products=products))
        # Valid but for its size; base64 of random bytes compresses to 3/4 at best.
        return "web", b.padded(b.segment(event_id), plan.over_limit_bytes, True)

    def foreign_ad_account(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        account: Any = FOREIGN_AD_ACCOUNT if n % 2 == 0 else int(FOREIGN_AD_ACCOUNT) + n
        return "crm", orjson.dumps(b.pinterest(event_id, ad_account_id=account))

    template: list[bytes] = []

    def big_event_id(n: int) -> tuple[Source, bytes]:
        # JSON numbers past 2^64 that differ only in digits a double drops: read as floats,
        # the copies would share one event_id and all but one be merged away unsent. The copies
        # are otherwise identical, so a merge loses nothing the oracle could see; only distinct
        # ids tell them apart. The stdlib encoder writes integers of any size (orjson does not).
        if not template:
            b.start()
            message = b.segment("")
            del message["messageId"]
            message["properties"] |= {"event_id": BEYOND_64_BITS, "quantity": 2**65}
            template.append(json.dumps(message).encode())
        else:
            b.serial += 1
        first = str(BEYOND_64_BITS).encode()
        return "web", template[0].replace(first, str(BEYOND_64_BITS + n).encode(), 1)

    def float_phone(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        phone = 6285550000 + b.serial
        b.phones.append(str(phone))
        if n % 2 == 0:
            message = b.pinterest(event_id)
            message["user_data"]["ph"] = [float(phone)]
            return "crm", orjson.dumps(message)
        message = b.segment(event_id)
        message["context"]["traits"]["phone"] = float(phone)
        return "web", orjson.dumps(message)

    def nan_like(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        if n % 3 == 0:
            message = b.pinterest(event_id)
            message["custom_data"]["value"] = "NaN"
            message["user_data"]["ph"] = ["Infinity", b.phone()]
            return "crm", orjson.dumps(message)
        if n % 3 == 1:
            message = b.segment(event_id, value="NaN", revenue="-Infinity", quantity="1e400")
            return "web", orjson.dumps(message)
        # A bare NaN literal is not JSON.
        text = orjson.dumps(b.segment(event_id)).replace(b'"value":12.5', b'"value":NaN')
        return "web", text

    def bom(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        if n % 2 == 0:
            return "web", BOM + orjson.dumps(b.segment(event_id))
        return "crm", BOM + orjson.dumps(b.pinterest(event_id))

    def url_pii(n: int) -> tuple[Source, bytes]:
        event_id = b.start()
        email, phone = b.email(".url"), b.phone()
        digits = "".join(filter(str.isdigit, phone))
        url = (
            f"https://shop.example.com/checkout?utm_source=mail&email={quote(email)}"
            f"&phone={digits}&epik=dj0yJnU9poison"
        )
        if n % 3 == 2:
            return "crm", orjson.dumps(b.pinterest(event_id, event_source_url=url))
        message = b.segment(event_id)
        if n % 3 == 0:
            message["context"]["page"] = {"url": url, "path": "/checkout"}
        else:
            message["properties"]["url"] = url.replace("email=", "contact=")
        return "web", orjson.dumps(message)

    return {
        "non_json_1mb": non_json_1mb,
        "json_near_1mb": json_near_1mb,
        "many_emails": many_emails,
        "many_products": many_products,
        "over_max_bytes": over_max_bytes,
        "foreign_ad_account": foreign_ad_account,
        "big_event_id": big_event_id,
        "float_phone": float_phone,
        "nan_like": nan_like,
        "bom": bom,
        "url_pii": url_pii,
    }


KINDS: Final = tuple(_kinds(_Builder(0, 0.0, PoisonPlan())))


def must_cut(value: bytes, outcome: Outcome, dlq_max_bytes: int) -> bool | None:
    """Whether the dead letter of `value` must be cut to fit: surely when even a fast deflate
    leaves it well over the topic's limit (zstd does little better on such data), never when
    it fits uncompressed with room for the headers."""
    if outcome.fate != "dead_letter":
        return None
    if len(value) + 4096 < dlq_max_bytes:
        return False
    if len(zlib.compress(value, 1)) > 1.25 * dlq_max_bytes:
        return True
    return None


def expectation_of(source: Source, outcome: Outcome) -> Expectation:
    event = outcome.event
    if outcome.fate == "deliver" and event is not None:
        fate, reason = delivered_fate(event.event_id)
        hashes = hashes_digest(orjson.loads(event.body)["user_data"])
        return Expectation(source, fate, reason, event.event_id, event.event_name, hashes)
    event_id = event.event_id if event is not None else None
    return Expectation(source, outcome.fate, outcome.reason, event_id, None, b"")


def poison_schedule(
    plan: PoisonPlan,
    seed: int,
    now: float,
    predictor: Predictor,
    topics: dict[str, str],
    partitions: int,
) -> list[Poison]:
    """`plan.copies` messages of every kind, each copy of a kind on another partition, in a
    seeded order; the outcome of each is what `predictor` (the forwarder's transform) says."""
    builder = _Builder(seed, now, plan)
    rng = random.Random(seed + 7)
    poisons: list[Poison] = []
    for kind, build in _kinds(builder).items():
        spread = rng.sample(range(partitions), min(plan.copies, partitions))
        for copy in range(plan.copies):
            source, value = build(copy)
            key = f"poison-{kind}-{copy}".encode()
            outcome = predictor.outcome(predictor.source(topics[source]), value, int(now * 1000))
            produced = Produced(source, key, value, expectation_of(source, outcome), ())
            poisons.append(
                Poison(
                    kind,
                    produced,
                    spread[copy % len(spread)],
                    outcome,
                    must_cut(value, outcome, plan.dlq_max_bytes),
                    tuple(builder.emails),
                    tuple(builder.phones),
                )
            )
    rng.shuffle(poisons)
    return poisons


def sha256_hex(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()
