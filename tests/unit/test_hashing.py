"""DESIGN §2 normalization and hashing: the shared vectors, our own cases, and properties."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.hashing import (
    HASHED_FIELDS,
    MAX_VALUES_PER_FIELD,
    MEMO_MAX_VALUE_CHARS,
    Hasher,
    digest,
    normalize,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "hash-vectors.json").read_text()
)
HEX64 = re.compile(r"[0-9a-f]{64}")
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['field']}:{v['input']!r}")
def test_reference_vectors(vector: dict[str, Any]) -> None:
    assert normalize(vector["field"], vector["input"]) == vector["normalized"]
    assert digest(vector["field"], vector["input"]) == vector["sha256"]


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("em", "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("ph", "0044 20 7946 0000", "442079460000"),
        ("ph", "+1 (415) 555-0100", "14155550100"),
        ("ph", "no digits", None),
        ("fn", "Zoë", "zoë"),
        ("fn", "Zoe\u0308", "zoë"),  # decomposed input is composed (NFC) before hashing
        ("ln", "de la Cruz", "de la cruz"),
        ("ge", "Female", "f"),
        ("ge", "WOMAN", "f"),
        ("ge", "male", "m"),
        ("ge", "nonbinary", "n"),
        ("ge", "non-binary", "n"),
        ("ge", "unknown", None),
        ("db", "1991-05-26", "19910526"),
        ("db", "1991-05-26T10:11:12Z", "19910526"),
        ("db", "19910526", "19910526"),
        ("db", "1991-02-30", None),
        ("db", "26/05/1991", None),
        ("ct", "St. John's", "stjohns"),
        ("ct", "São Paulo", "sãopaulo"),
        ("st", "California", "ca"),
        ("st", "new  york", "ny"),
        ("st", "Québec", "qc"),
        ("st", "Ontario", "on"),
        ("st", "Bavaria", "bavaria"),
        ("zp", "M5V 2T6", "m5v2t6"),
        ("zp", "94025", "94025"),
        ("country", "United States", "us"),
        ("country", "DEU", "de"),
        ("country", "Germany", "de"),
        ("country", "GB", "gb"),
        ("country", "Narnia", None),
        ("country", "UK", "gb"),
        ("country", "U.K.", "gb"),
        ("country", "England", "gb"),
        ("country", "EL", "gr"),
        ("country", "U.S.A.", "us"),
        ("country", "Virgin Islands, U.S.", "vi"),
        ("country", "zz", "zz"),  # shaped like a code: sent, though no country has it
        ("external_id", "User-ABC", "user-abc"),
        ("em", "   ", None),
        ("em", "A" * 64, "a" * 64),  # already hashed: lowercased, not re-hashed
    ],
)
def test_field_rules(field: str, raw: str, expected: str | None) -> None:
    assert normalize(field, raw) == expected


def test_already_hashed_value_passes_through_unchanged() -> None:
    hashed = hashlib.sha256(b"jane@example.com").hexdigest()
    assert digest("em", f"  {hashed.upper()} ") == hashed


def test_hasher_deduplicates_after_normalization_and_drops_empty() -> None:
    hasher = Hasher()
    result = hasher.hash_values("em", ["A@b.com", " a@B.com", "", "c@d.com"])
    assert result == [digest("em", "a@b.com"), digest("em", "c@d.com")]


def test_uncached_hasher_gives_the_same_digests() -> None:
    values = ["Jane", "jane", "Zoë"]
    assert Hasher(0).hash_values("fn", values) == Hasher().hash_values("fn", values)


@given(st.sampled_from(HASHED_FIELDS), st.text())
def test_output_is_lowercase_hex_never_empty_hash_and_not_the_input(field: str, raw: str) -> None:
    result = digest(field, raw)
    if result is None:
        return
    assert HEX64.fullmatch(result)
    assert result != EMPTY_SHA
    stripped = raw.strip()
    if not HEX64.fullmatch(stripped.lower()):
        # Only an already-hashed value may come out as itself.
        assert result not in (stripped, stripped.lower())
        assert result == hashlib.sha256(str(normalize(field, raw)).encode()).hexdigest()


@given(st.sampled_from(HASHED_FIELDS), st.text())
def test_hashing_is_idempotent_on_its_own_output(field: str, raw: str) -> None:
    first = digest(field, raw)
    if first is not None:
        assert digest(field, first) == first


def test_a_field_keeps_at_most_50_distinct_hashes_and_counts_the_rest() -> None:
    hasher = Hasher()
    values = [f"user{i}@example.com" for i in range(20_000)]
    result = hasher.hash_values("em", values + values[:10])
    assert result == [digest("em", v) for v in values[:MAX_VALUES_PER_FIELD]]
    assert hasher.truncated["em"] == 20_000 - MAX_VALUES_PER_FIELD
    assert hasher.truncated["ph"] == 0


def test_long_values_are_hashed_but_not_memoized() -> None:
    hasher = Hasher()
    long_value = "x" * (MEMO_MAX_VALUE_CHARS + 1) + "@example.com"
    assert hasher.one("em", long_value) == digest("em", long_value)
    assert long_value not in hasher.memos["em"]
    assert hasher.one("em", "short@example.com")
    assert "short@example.com" in hasher.memos["em"]
