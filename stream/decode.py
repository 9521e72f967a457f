"""Decodes message bytes into a JSON object and reads typed fields from it, naming fields in errors.

Every reader raises `InvalidMessage` whose text names the field and the expected shape, never the
value, so it is safe for dead-letter headers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

import msgspec
import orjson

from stream.dlq.contract import DeadLetterReason
from stream.errors import InvalidMessage

EMPTY: Final[Mapping[str, Any]] = {}
_DECIMAL: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_INTEGER: Final = re.compile(r"-?[0-9]{1,18}")


UTF8_BOM = b"\xef\xbb\xbf"
# Reads a message again for `exact_number`: fractions as Decimal, so every digit written stays.
_EXACT_DECODER: Final = msgspec.json.Decoder(float_hook=Decimal)


def decode_json_object(value: bytes) -> dict[str, Any]:
    """The message as a JSON object; `decode_error` if it is not one (the JSON formats' decoder).

    A UTF-8 byte order mark (some Windows exports write one) is skipped.
    """
    if value[:3] == UTF8_BOM:
        value = value[3:]
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidMessage("decode_error", "message is not valid JSON (UTF-8)") from None
    if message.__class__ is not dict:
        raise InvalidMessage("decode_error", "message is not a JSON object")
    return message


def exact_number(raw: bytes, path: tuple[str | int, ...]) -> Any:
    """The value at `path` decoded again keeping every digit written: an integer as `int`, a
    fraction as `Decimal` (`text` reads both).

    orjson reads an integer beyond 64 bits, and any number with more significant digits than a
    float holds, as a float, so two distinct long numeric ids could become one; a mapper that
    finds a float where an id belongs asks again (a rare, slow path).
    """
    found: Any = _exact_tree(raw)
    for key in path:  # a name in an object, or a position in an array
        if found.__class__ is dict:
            found = found.get(key)
        elif found.__class__ is list and key.__class__ is int and -1 < key < len(found):
            found = found[key]
        else:
            return None
    return found


@lru_cache(maxsize=1)
def _exact_tree(raw: bytes) -> Any:
    """The whole message decoded keeping every digit. The last one is kept, so the ids of one
    message (up to 1,000 products, each a float) cost one decode between them, not one each."""
    if raw[:3] == UTF8_BOM:
        raw = raw[3:]
    return _EXACT_DECODER.decode(raw)


def exact_text(
    value: Any,
    raw: bytes,
    where: tuple[str | int, ...],
    path: str,
    key: str = "",
    reason: DeadLetterReason = "mapping_error",
) -> str | None:
    """`text` of `value`, an id found at `where` in the message `raw`, with every digit written.

    A float there is read again (`exact_number`): orjson reads an integer beyond 64 bits, or any
    number with more digits than a float holds, as a float, so two distinct ids could become one.
    """
    if value.__class__ is float:
        value = exact_number(raw, where)
    return text(value, path, key, reason)


def _field_path(path: str, key: str) -> str:
    """The field's dotted name for an error: `path.key`, or whichever of the two is not empty."""
    return f"{path}.{key}" if key and path else path or key


def text(
    value: Any, path: str, key: str = "", reason: DeadLetterReason = "mapping_error"
) -> str | None:
    """A string field; numbers are accepted as their decimal text; "" and null mean absent.

    The field is named `path.key` in errors; passing them apart avoids building the name on
    the hot path, where nothing goes wrong.
    """
    cls = value.__class__
    if cls is str:
        return value or None
    if value is None:
        return None
    if cls is int:
        return str(value)
    if cls is float:
        # 4155550100.0 is the number 4155550100 (CRM exports write phones and ids as floats);
        # beyond 2**53 a float's digits are not the ones written, so it is left as it is.
        # Infinities and NaN are not integers: the common case needs no `isfinite` call.
        if value.is_integer() and -(2**53) < value < 2**53:
            return str(int(value))
        if math.isfinite(value):
            return repr(value)
    elif cls is Decimal:
        # A number `exact_number` read again. One a float holds exactly reads as that float
        # would; only one with digits a float loses reads as every digit written.
        number = float(value)
        if Decimal(repr(number)) == value:
            return text(number, path, key, reason)
        if value == value.to_integral_value():
            return str(int(value))
        return format(value, "f")
    raise InvalidMessage(reason, f"{_field_path(path, key)}: expected a string")


def texts(
    value: Any, path: str, key: str = "", reason: DeadLetterReason = "mapping_error"
) -> list[str]:
    """A string field that may also be an array of strings (e.g. several emails)."""
    if value.__class__ is list:
        found = []
        for index, item in enumerate(value):
            # An array may hold 80,000 items: the common one needs no call, and an item's path
            # is built only to name it in an error.
            if item.__class__ is str:
                if item:
                    found.append(item)
                continue
            try:
                one = text(item, path, key, reason)
            except InvalidMessage:
                text(item, f"{_field_path(path, key)}[{index}]", "", reason)  # raises, named
                raise
            if one is not None:
                found.append(one)
        return found
    one = text(value, path, key, reason)
    return [] if one is None else [one]


def decimal(
    value: Any, path: str, key: str = "", reason: DeadLetterReason = "mapping_error"
) -> str | None:
    """A money amount as the decimal string Pinterest expects (`"72.39"`), from number or text."""
    cls = value.__class__
    if cls is int:
        return str(value)
    if cls is float:
        shown = repr(value)
        if "e" in shown:
            # repr switches to exponent notation for very large or small values; Pinterest
            # parses plain decimals.
            return format(Decimal(shown), "f")
        if "." in shown:  # any other finite float; "inf" and "nan" have neither
            return shown
        raise InvalidMessage(reason, f"{_field_path(path, key)}: not a finite number")
    if cls is str:
        stripped: str = value.strip()
        if not stripped:
            return None
        if _DECIMAL.fullmatch(stripped):
            return stripped
        raise InvalidMessage(reason, f"{_field_path(path, key)}: not a decimal number")
    if value is None:
        return None
    raise InvalidMessage(reason, f"{_field_path(path, key)}: expected a number")


def integer(
    value: Any, path: str, key: str = "", reason: DeadLetterReason = "mapping_error"
) -> int | None:
    """A whole number from an integer, an integral float or a digit string."""
    cls = value.__class__
    if cls is int:
        return value  # type: ignore[no-any-return]
    if cls is float and value.is_integer():
        return int(value)
    if cls is str and _INTEGER.fullmatch(value.strip()):
        return int(value)
    if value is None:
        return None
    raise InvalidMessage(reason, f"{_field_path(path, key)}: expected an integer")


def dotted(message: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path such as ("context", "traits", "state"), or None."""
    value: Any = message
    for part in path:
        if value.__class__ is not dict:
            return None
        value = value.get(part)
    return value
