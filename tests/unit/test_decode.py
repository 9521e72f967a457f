"""Decoding message bytes and reading typed fields (stream/decode.py)."""

from __future__ import annotations

import pytest

from stream.decode import UTF8_BOM, decode_json_object, exact_number, text
from stream.errors import InvalidMessage


def test_a_byte_order_mark_is_skipped() -> None:
    assert decode_json_object(UTF8_BOM + b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("raw", [b"[1]", b"not json", b"", UTF8_BOM])
def test_anything_but_a_json_object_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(InvalidMessage) as raised:
        decode_json_object(raw)
    assert raised.value.reason == "decode_error"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4155550100.0, "4155550100"),
        (-3.0, "-3"),
        (12.5, "12.5"),
        (1e300, "1e+300"),
        (123456789012345678, "123456789012345678"),
        ("", None),
        (None, None),
    ],
)
def test_numbers_read_as_text_keep_the_digits_written(value: object, expected: str | None) -> None:
    assert text(value, "traits", "phone") == expected


def test_integers_beyond_64_bits_are_read_again_exactly() -> None:
    raw = b'{"properties": {"event_id": 123456789012345678901234567890}}'
    assert decode_json_object(raw)["properties"]["event_id"].__class__ is float
    assert exact_number(raw, ("properties", "event_id")) == 123456789012345678901234567890
    assert exact_number(UTF8_BOM + raw, ("properties", "missing")) is None
    listed = b'{"ids": ["a", 123456789012345678901234567891]}'
    assert exact_number(listed, ("ids", 1)) == 123456789012345678901234567891
    for outside in (("ids", 2), ("ids", -1), ("ids", "1"), ("ids", 1, "x")):
        assert exact_number(listed, outside) is None


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (b"12345678901234567890.5", "12345678901234567890.5"),
        (b"12345678901234567890.6", "12345678901234567890.6"),
        (b"0.1000000000000000000000001", "0.1000000000000000000000001"),
        (b"12345678901234567890.0", "12345678901234567890"),
        (b"4155550100.0", "4155550100"),
        (b"-0.0", "0"),
        (b"1.5e3", "1500"),
        (b"2.5e-3", "0.0025"),
        # One a float holds exactly reads as the float does.
        (b"1e-07", "1e-07"),
    ],
)
def test_numbers_read_again_keep_every_digit_written(written: bytes, expected: str) -> None:
    raw = b'{"messageId": %s}' % written
    # What orjson alone gives is a float, whose digits may not be the ones written.
    assert decode_json_object(raw)["messageId"].__class__ is float
    assert text(exact_number(raw, ("messageId",)), "messageId") == expected
