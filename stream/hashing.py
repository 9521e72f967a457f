"""Normalizes and SHA-256-hashes `user_data` values exactly as DESIGN §2 specifies (pure)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import date
from functools import cache
from typing import Final

import pycountry

from stream.spec import HASHED_FIELDS

# DESIGN §4: per-message work is capped; a hostile message may carry thousands of values.
MAX_VALUES_PER_FIELD: Final = 50
# Longer values (a 400 KB "email") are hashed but not remembered: the memo is bounded in bytes.
MEMO_MAX_VALUE_CHARS: Final = 256
_HEX64: Final = re.compile(r"[0-9A-Fa-f]{64}")
_NOT_DIGIT: Final = re.compile(r"[^0-9]+")
_DATE: Final = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})(?:[T ].*)?", re.DOTALL)
_ZIP_PLUS_4: Final = re.compile(r"[0-9]{5}-[0-9]{4}")
# Bytes to delete from ASCII text: what `[^0-9]`, `str.isalnum` and `str.split` would drop.
# `bytes.translate` is several times faster than `str.translate` or a regex substitution.
_ASCII_NON_DIGITS: Final = bytes(c for c in range(128) if not 0x30 <= c <= 0x39)
_ASCII_NON_ALNUM: Final = bytes(c for c in range(128) if not chr(c).isalnum())
_ASCII_SPACES: Final = bytes(c for c in range(128) if chr(c).isspace())
_GENDERS: Final[Mapping[str, str]] = {
    "m": "m",
    "male": "m",
    "man": "m",
    "f": "f",
    "female": "f",
    "woman": "f",
    "n": "n",
    "non-binary": "n",
    "non binary": "n",
    "nonbinary": "n",
}


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


@cache
def _state_codes() -> Mapping[str, str]:
    # Built on first use, not at import: pycountry loads its database lazily and slowly.
    codes: dict[str, str] = {}
    for country in ("US", "CA"):
        for subdivision in pycountry.subdivisions.get(country_code=country):  # type: ignore[no-untyped-call]
            code = subdivision.code.split("-", 1)[1].lower()
            name = subdivision.name.lower()
            codes[name] = code
            codes[_strip_accents(name)] = code
    return codes


# What addresses write for a country besides ISO 3166's codes and names: "UK" and "EL" are only
# reserved there (for GB and GR), and many CRM addresses name one of the UK's nations. Hashed as
# written, they would never match the code Pinterest hashes.
_COUNTRY_ALIASES: Final[Mapping[str, str]] = {
    "uk": "gb",
    "el": "gr",
    "great britain": "gb",
    "britain": "gb",
    "england": "gb",
    "scotland": "gb",
    "wales": "gb",
    "northern ireland": "gb",
}


@cache
def _country_codes() -> Mapping[str, str]:
    codes: dict[str, str] = {}
    for country in pycountry.countries:
        alpha_2 = country.alpha_2.lower()
        codes[alpha_2] = alpha_2
        codes[country.alpha_3.lower()] = alpha_2
        for attribute in ("name", "common_name", "official_name"):
            name = getattr(country, attribute, None)
            if name:
                codes[name.lower()] = alpha_2
                codes[_strip_accents(name.lower())] = alpha_2
    # Keyed without periods, as `_country` looks names up ("Virgin Islands, U.S.").
    return {name.replace(".", ""): code for name, code in {**_COUNTRY_ALIASES, **codes}.items()}


def _phone(text: str) -> str:
    if text.isascii():
        # Same result as the regex for ASCII text, in one C pass.
        return text.encode().translate(None, _ASCII_NON_DIGITS).decode().lstrip("0")
    text = unicodedata.normalize("NFKC", text)
    return _NOT_DIGIT.sub("", text).lstrip("0")


def _gender(text: str) -> str:
    return _GENDERS.get(text.lower(), "")


def _birthday(text: str) -> str:
    match = _DATE.fullmatch(text)
    if match is None:
        return ""
    year, month, day = match.groups()
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return ""
    return year + month + day


def _city(text: str) -> str:
    lowered = text.lower()
    if lowered.isalnum():
        return lowered
    if lowered.isascii():
        return lowered.encode().translate(None, _ASCII_NON_ALNUM).decode()
    return "".join(filter(str.isalnum, lowered))


def _lookup(table: Mapping[str, str], name: str) -> str | None:
    key = " ".join(name.split())
    code = table.get(key)
    if code is None and not key.isascii():
        code = table.get(_strip_accents(key))
    return code


def _state(text: str) -> str:
    lowered = text.lower()
    return _lookup(_state_codes(), lowered) or lowered


def _zip(text: str) -> str:
    lowered = text.lower()
    if lowered.isalnum():
        return lowered
    if lowered.isascii():
        compact = lowered.encode().translate(None, _ASCII_SPACES).decode()
    else:
        compact = "".join(lowered.split())
    if len(compact) == 10 and _ZIP_PLUS_4.fullmatch(compact):
        return compact[:5]
    return compact


def _country(text: str) -> str:
    # Periods dropped: "U.S.A." is USA, "U.K." is UK.
    lowered = " ".join(text.lower().replace(".", "").split())
    code = _lookup(_country_codes(), lowered)
    if code is not None:
        return code
    # An unlisted two-letter value is still shaped like a code; anything longer cannot be one.
    return lowered if len(lowered) == 2 and lowered.isascii() and lowered.isalpha() else ""


_RULES: Final[Mapping[str, Callable[[str], str]]] = {
    "em": str.lower,
    "ph": _phone,
    "fn": str.lower,
    "ln": str.lower,
    "ge": _gender,
    "db": _birthday,
    "ct": _city,
    "st": _state,
    "zp": _zip,
    "country": _country,
    "external_id": str.lower,
    "hashed_maids": str.lower,
}


def _prepare(field: str, value: str) -> tuple[str, bool] | None:
    """(text, already_hashed) or None when the value must be omitted."""
    text = value.strip()
    if not text:
        return None
    if len(text) == 64 and _HEX64.fullmatch(text):
        return text.lower(), True
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    normalized = _RULES[field](text)
    return (normalized, False) if normalized else None


def normalize(field: str, value: str) -> str | None:
    """The text that gets hashed (or the lowercased hash passed through); None means omit."""
    prepared = _prepare(field, value)
    return None if prepared is None else prepared[0]


def digest(field: str, value: str) -> str | None:
    """Lowercase SHA-256 hex of the normalized value, the passed-through hash, or None to omit."""
    # `_prepare` written out: this runs for every value the memo has not seen.
    text = value.strip()
    if not text:
        return None
    if len(text) == 64 and _HEX64.fullmatch(text):
        return text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    normalized = _RULES[field](text)
    return hashlib.sha256(normalized.encode()).hexdigest() if normalized else None


class Hasher:
    """Hashes values of one `user_data` field into Pinterest's de-duplicated array.

    Results are memoized per field: the same email or city recurs across a visitor's events,
    and a hit costs one dict lookup instead of normalizing and hashing again. Each field's memo
    is cleared when it reaches `cache_size`, and values longer than `MEMO_MAX_VALUE_CHARS` are
    never kept, which bounds the memo in bytes without LRU bookkeeping (at most 12 fields x
    8,192 entries of a few hundred bytes: about 30 MB even if every value is distinct).

    A field keeps at most `MAX_VALUES_PER_FIELD` distinct hashes per event; what a hostile
    message carries beyond that is dropped without being hashed and counted in `truncated`.
    The mappers count the `contents` items they drop there too: the hasher is what every
    format shares.
    """

    def __init__(self, cache_size: int = 8192) -> None:
        self._cache_size = cache_size
        self._memo: dict[str, dict[str, str]] = {field: {} for field in HASHED_FIELDS}
        self.truncated: dict[str, int] = dict.fromkeys((*HASHED_FIELDS, "contents"), 0)

    @property
    def memos(self) -> Mapping[str, Mapping[str, str]]:
        """Per-field memo (value → hash, "" for omit) for callers that inline the hit path."""
        return self._memo

    def one(self, field: str, value: str) -> str:
        """The hash of one value, or "" when normalization leaves nothing to send."""
        memo = self._memo[field]
        hexdigest = memo.get(value)
        if hexdigest is None:
            hexdigest = digest(field, value) or ""  # "" remembers "omit"
            if self._cache_size > 0 and len(value) <= MEMO_MAX_VALUE_CHARS:
                if len(memo) >= self._cache_size:
                    memo.clear()  # in place: mappers hold these dicts (see `memos`)
                memo[value] = hexdigest
        return hexdigest

    def hash_values(self, field: str, values: list[str]) -> list[str]:
        """Hashes of the values that survive normalization, first occurrence first, at most
        `MAX_VALUES_PER_FIELD` of them."""
        if len(values) == 1:
            only = self._memo[field].get(values[0]) or self.one(field, values[0])
            return [only] if only else []
        result: list[str] = []
        seen: set[str] = set()
        for index, value in enumerate(values):
            hexdigest = self.one(field, value)
            if hexdigest and hexdigest not in seen:
                seen.add(hexdigest)
                result.append(hexdigest)
                if len(result) == MAX_VALUES_PER_FIELD:
                    self._count_dropped(field, values, index + 1)
                    break
        return result

    def _count_dropped(self, field: str, values: list[str], start: int) -> None:
        """Counts the values from `start` on, past the cap, without hashing them (a hostile
        message may carry a million); a verbatim repeat of an earlier value is no loss."""
        earlier = set(values[:start])
        self.truncated[field] += sum(1 for value in values[start:] if value not in earlier)
