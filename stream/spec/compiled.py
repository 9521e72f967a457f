"""Compiles the bundled schema into msgspec types, so that decoding also checks types, in C."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

# Documentation-only keywords; everything else must be understood by a compiler.
ANNOTATIONS: Final = frozenset({"description", "example", "title", "format", "definitions"})
KEYWORDS: Final = ANNOTATIONS | {
    "$ref",
    "type",
    "nullable",
    "properties",
    "additionalProperties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "maxLength",
    "minimum",
    "maximum",
    "enum",
    "anyOf",
}
_SCALARS: Final[Mapping[str, type]] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
}


def refuse_unknown_keywords(node: Mapping[str, Any]) -> None:
    """Raises for a keyword outside KEYWORDS: a spec update must not silently weaken a check."""
    unknown = set(node) - KEYWORDS
    if unknown:
        raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)}")


# Required-key alternatives of a top-level property's `anyOf` (user_data's identifier rule).
Alternatives = tuple[str, tuple[tuple[str, ...], ...]]


class StructCompiler:
    """A JSON Schema (OpenAPI 3.0 flavour) as msgspec types; refuses keywords it does not know.

    An `anyOf` must be alternatives over one shared `$ref`: its properties are decoded once and
    its `required` lists are left to the caller. Those of the top object's properties are
    collected in `alternatives`; an `anyOf` below the top level is refused unless
    `nested_any_of` says the caller checks it by hand. `overrides` replaces the type of the
    field `key` of the struct `name` (a definition's name, or `<parent>_<key>` when inline).
    """

    def __init__(
        self,
        definitions: Mapping[str, Any],
        *,
        nested_any_of: bool = False,
        overrides: Mapping[tuple[str, str], Any] | None = None,
    ) -> None:
        self._definitions = definitions
        self._nested_any_of = nested_any_of
        self._overrides = overrides or {}
        self._refs: dict[str, Any] = {}
        self.alternatives: list[Alternatives] = []

    def type_of(self, node: Mapping[str, Any], name: str, top: bool = False) -> Any:
        refuse_unknown_keywords(node)
        if "$ref" in node:
            return self._ref(node["$ref"])
        if "anyOf" in node:
            refs = {branch.get("$ref") for branch in node["anyOf"]}
            if len(refs) != 1 or None in refs:
                raise ValueError("only anyOf over one shared $ref is supported")
            return self._ref(str(refs.pop()))
        kind = node.get("type")
        base: Any
        if kind == "object":
            base = self._struct(node, name, top)
        elif kind == "array":
            item = self.type_of(node["items"], f"{name}_item") if "items" in node else Any
            base = self._limited(
                list[item],  # type: ignore[valid-type]
                min_length=node.get("minItems"),
                max_length=node.get("maxItems"),
            )
        elif kind in _SCALARS:
            base = Literal[tuple(node["enum"])] if "enum" in node else _SCALARS[str(kind)]
            base = self._limited(
                base,
                max_length=node.get("maxLength"),
                ge=node.get("minimum"),
                le=node.get("maximum"),
            )
        else:
            raise ValueError(f"schema type not supported: {kind!r}")
        return base | None if node.get("nullable") else base

    @staticmethod
    def _limited(base: Any, **limits: Any) -> Any:
        given = {key: value for key, value in limits.items() if value is not None}
        return Annotated[base, msgspec.Meta(**given)] if given else base

    def _ref(self, ref: str) -> Any:
        name = ref.rsplit("/", 1)[-1]
        if name not in self._refs:
            self._refs[name] = self.type_of(self._definitions[name], name)
        return self._refs[name]

    def _resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            node = self._definitions[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def _struct(self, node: Mapping[str, Any], name: str, top: bool) -> Any:
        required = set(node.get("required", ()))
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for key, child in node.get("properties", {}).items():
            resolved = self._resolve(child)
            if "anyOf" in resolved:
                if top:
                    options = tuple(tuple(b.get("required", ())) for b in resolved["anyOf"])
                    self.alternatives.append((key, options))
                elif not self._nested_any_of:
                    raise ValueError(f"anyOf below the top level not supported: {name}.{key}")
            override = self._overrides.get((name, key))
            field_type = self.type_of(child, f"{name}_{key}") if override is None else override
            if key in required:
                fields.append((key, field_type))
            else:
                fields.append((key, field_type | msgspec.UnsetType, msgspec.UNSET))
        return msgspec.defstruct(
            name,
            fields,
            kw_only=True,
            forbid_unknown_fields=node.get("additionalProperties", True) is False,
            gc=False,  # decoded only to be checked and dropped: no cycles to collect
        )
