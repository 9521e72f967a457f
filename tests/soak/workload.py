"""The soak's known input: two seeded sources and, for every message, what must become of it."""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

# Only the field names are shared: the oracle's digests are computed below, not by stream.hashing.
from stream.spec import HASHED_FIELDS
from traffic.generator import FIRST_NAMES, LAST_NAMES, ClickstreamGenerator, GeneratedMessage

# The sandbox fails events whose id matches REJECT_PATTERN (per event, 1/256 of ids) and answers
# 400 to a whole request holding an id matching INVALID_REQUEST_PATTERN (1/4096: each one costs
# a bisection of its batch).
REJECT_PATTERN: Final = "^00"
INVALID_REQUEST_PATTERN: Final = "^fff"
SECOND_AD_ACCOUNT: Final = "549764106779"
CRM_SHARE: Final = 0.1
CRM_POISON_RATIO: Final = 0.01

Fate = Literal["deliver", "dead_letter", "skip"]
Source = Literal["web", "crm"]

# The generator's addresses, normalized by hand from DESIGN §2 (independently of stream.hashing).
STATES: Final = {"California": "ca", "NY": "ny", "Texas": "tx", "Ontario": "on", "": ""}
COUNTRIES: Final = {
    "US": "us",
    "United States": "us",
    "USA": "us",
    "Canada": "ca",
    "GB": "gb",
    "France": "fr",
}
GENDERS: Final = {"female": "f", "male": "m", "non-binary": "n", "": ""}
_NOT_DIGIT: Final = re.compile(r"[^0-9]")
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the forwarder must do with one produced message; `hashes` digests its user_data."""

    source: Source
    fate: Fate
    reason: str | None
    event_id: str | None
    event_name: str | None
    hashes: bytes


@dataclass(frozen=True, slots=True)
class Produced:
    """A message to produce and its expectation; the partition follows the key."""

    source: Source
    key: bytes
    value: bytes
    expectation: Expectation
    pii: tuple[str, ...]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hashes_digest(user_data: dict[str, list[str]]) -> bytes:
    """A short digest of the hashed fields of a user_data object (order-insensitive)."""
    canonical = {field: sorted(user_data[field]) for field in HASHED_FIELDS if user_data.get(field)}
    return hashlib.blake2b(
        orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=12
    ).digest()


def partition_of(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def _hashed(value: str, rule: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    if _HEX64.fullmatch(text):
        return text.lower()
    text = unicodedata.normalize("NFC", text)
    if rule in ("em", "fn", "ln", "external_id", "hashed_maids"):
        text = text.lower()
    elif rule == "ph":
        text = _NOT_DIGIT.sub("", unicodedata.normalize("NFKC", text)).lstrip("0")
    elif rule == "ge":
        text = GENDERS[text.lower()]
    elif rule == "db":
        text = text[:10].replace("-", "")
    elif rule == "ct":
        text = "".join(c for c in text.lower() if c.isalnum())
    elif rule == "st":
        text = STATES[text]
    elif rule == "zp":
        text = "".join(text.lower().split())
        text = text[:5] if re.fullmatch(r"\d{5}-\d{4}", text) else text
    elif rule == "country":
        text = COUNTRIES[text]
    return sha256(text) if text else None


def expected_segment_hashes(message: dict[str, Any]) -> dict[str, list[str]]:
    """The hashed user_data the forwarder must send for one generated Segment message."""
    context = message.get("context", {})
    traits = context.get("traits", {})
    properties = message.get("properties", {})
    raw: dict[str, list[str]] = {field: [] for field in HASHED_FIELDS}
    for email in (properties.get("email"), traits.get("email")):
        if email:
            raw["em"].append(email)
    for field, key in (("ph", "phone"), ("fn", "firstName"), ("ln", "lastName")):
        if traits.get(key):
            raw[field].append(traits[key])
    for field, key in (("ge", "gender"), ("db", "birthday")):
        if traits.get(key):
            raw[field].append(traits[key])
    address = traits.get("address", {})
    for field, key in (
        ("ct", "city"),
        ("st", "state"),
        ("zp", "postalCode"),
        ("country", "country"),
    ):
        if address.get(key):
            raw[field].append(address[key])
    if message.get("userId"):
        raw["external_id"].append(message["userId"])
    device = context.get("device", {})
    if device.get("advertisingId") and device.get("adTrackingEnabled") is not False:
        raw["hashed_maids"].append(device["advertisingId"])
    result: dict[str, list[str]] = {}
    for field, values in raw.items():
        hashed = {h for v in values if (h := _hashed(v, field)) is not None}
        if hashed:
            result[field] = sorted(hashed)
    return result


def delivered_fate(event_id: str | None) -> tuple[Fate, str | None]:
    """Where a valid event ends: the sandbox, or the DLQ by the sandbox's id patterns."""
    if event_id is not None and re.match(INVALID_REQUEST_PATTERN, event_id):
        return "dead_letter", "request_invalid"
    if event_id is not None and re.match(REJECT_PATTERN, event_id):
        return "dead_letter", "rejected_by_pinterest"
    return "deliver", None


def _segment_pii(message: dict[str, Any]) -> tuple[str, ...]:
    traits = message.get("context", {}).get("traits", {})
    return tuple(str(traits[key]).strip() for key in ("email", "phone") if traits.get(key))


def _from_generator(generated: GeneratedMessage) -> Produced:
    pii: tuple[str, ...] = ()
    hashes = b""
    if generated.kind == "valid":
        fate, reason = delivered_fate(generated.event_id)
        message = orjson.loads(generated.value)
        hashes = hashes_digest(expected_segment_hashes(message))
        pii = _segment_pii(message)
    elif generated.kind == "poison":
        fate, reason = "dead_letter", generated.reason
    else:
        fate, reason = "skip", None
    expectation = Expectation("web", fate, reason, generated.event_id, generated.event_name, hashes)
    return Produced("web", generated.key, generated.value, expectation, pii)


class CrmGenerator:
    """Offline CRM conversions already in Pinterest's shape, with raw (sometimes pre-hashed) PII."""

    def __init__(self, seed: int, now: float) -> None:
        self._rng = random.Random(seed)
        self._now = now

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def next(self) -> Produced:
        rng = self._rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        customer = f"CRM-{rng.randrange(10**8):08d}"
        email = f"{first}.{last}.{rng.randrange(10**4)}@Example.org".replace("'", "")
        phone = f"0044 20 7946 {rng.randrange(10**4):04d}"
        event_id = self._uuid()
        user_data: dict[str, Any] = {
            "em": [f" {email} " if rng.random() < 0.8 else sha256(email.lower()).upper()],
            "ph": [phone],
            "fn": [first],
            "ln": last,
            "external_id": [customer],
        }
        event: dict[str, Any] = {
            "event_name": rng.choice(("checkout", "lead", "signup")),
            "action_source": "offline",
            "event_time": int(self._now - rng.uniform(3600, 3 * 86400)),
            "event_id": event_id,
            "user_data": user_data,
            "custom_data": {
                "currency": "EUR",
                "value": f"{rng.uniform(5, 500):.2f}",
                "order_id": f"pos-{rng.randrange(10**9):09d}",
            },
        }
        if rng.random() < 0.5:
            event["ad_account_id"] = SECOND_AD_ACCOUNT
        key = customer.encode()
        reason: str | None = None
        value = orjson.dumps(event)
        if rng.random() < CRM_POISON_RATIO:
            reason = rng.choice(("decode_error", "invalid_event", "too_old"))
            if reason == "decode_error":
                value = value[: len(value) // 2]
            elif reason == "invalid_event":
                event["user_data"] = {"fn": [first]}
                value = orjson.dumps(event)
            else:
                event["event_time"] = int(self._now - 30 * 86400)
                value = orjson.dumps(event)
            expectation = Expectation("crm", "dead_letter", reason, event_id, None, b"")
            return Produced("crm", key, value, expectation, (email, phone))
        fate, reason = delivered_fate(event_id)
        expected = {
            field: sorted(
                {
                    h
                    for v in (values if isinstance(values, list) else [values])
                    if (h := _hashed(v, field))
                }
            )
            for field, values in user_data.items()
        }
        expectation = Expectation(
            "crm", fate, reason, event_id, event["event_name"], hashes_digest(expected)
        )
        return Produced("crm", key, value, expectation, (email, phone))


def workload(seed: int, now: float, count: int) -> Iterator[Produced]:
    """`count` messages, ~90 % Segment clickstream and ~10 % CRM, deterministic for a seed."""
    web = ClickstreamGenerator(seed, now=lambda: now, poison_ratio=0.01).messages(count)
    crm = CrmGenerator(seed + 1, now)
    choose = random.Random(seed + 2)
    for _ in range(count):
        if choose.random() < CRM_SHARE:
            yield crm.next()
        else:
            yield _from_generator(next(web))


def name_needles() -> tuple[str, ...]:
    """Every first and last name the generators use (matched as whole, case-sensitive words)."""
    return (*FIRST_NAMES, *LAST_NAMES)
