"""The shared schema-to-msgspec compiler: what it refuses, and the options its two users rely on."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from stream.spec.compiled import StructCompiler
from stream.validate import compile_schema

IDS = {"type": "object", "properties": {"em": {"type": "array", "items": {"type": "string"}}}}
DEFINITIONS = {"Ids": IDS}
EITHER = {
    "anyOf": [{"$ref": "#/definitions/Ids", "required": ["em"]}, {"$ref": "#/definitions/Ids"}]
}


def event(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties}


def test_an_unknown_keyword_fails_both_compilers() -> None:
    node = {"type": "string", "pattern": "^a"}
    with pytest.raises(ValueError, match="pattern"):
        StructCompiler({}).type_of(node, "Event")
    with pytest.raises(ValueError, match="pattern"):
        compile_schema(node)


def test_top_level_any_of_alternatives_are_left_to_the_caller() -> None:
    compiler = StructCompiler(DEFINITIONS)
    struct = compiler.type_of(event(user_data=EITHER), "Event", top=True)
    assert compiler.alternatives == [("user_data", (("em",), ()))]
    decoded = msgspec.json.decode(b'{"user_data": {}}', type=struct)
    assert decoded.user_data.em is msgspec.UNSET


def test_nested_any_of_is_refused_unless_the_caller_checks_it() -> None:
    nested = event(event=event(user_data=EITHER))
    with pytest.raises(ValueError, match="below the top level"):
        StructCompiler(DEFINITIONS).type_of(nested, "Body", top=True)
    compiler = StructCompiler(DEFINITIONS, nested_any_of=True)
    compiler.type_of(nested, "Body", top=True)
    assert compiler.alternatives == []


def test_overrides_replace_a_fields_type() -> None:
    hex64 = list[Annotated[str, msgspec.Meta(min_length=64, max_length=64)]]
    strict = StructCompiler({}, overrides={("Ids", "em"): hex64}).type_of(IDS, "Ids")
    lenient = StructCompiler({}).type_of(IDS, "Ids")
    assert msgspec.json.decode(b'{"em": ["x"]}', type=lenient).em == ["x"]
    with pytest.raises(msgspec.ValidationError, match="length >= 64"):
        msgspec.json.decode(b'{"em": ["x"]}', type=strict)


def test_unknown_fields_are_refused_where_the_schema_closes_the_object() -> None:
    struct = StructCompiler({}).type_of(event(id={"type": "string"}), "Event")
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"id": "a", "extra": 1}', type=struct)
