"""Pinterest's official conversion-events schema (OpenAPI v5.23.0 subset) and its licence."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

SPEC_FILE = "pinterest-conversion-events.json"


@cache
def spec() -> dict[str, Any]:
    """The bundled subset: the `events/create` operation and every schema it references."""
    loaded: dict[str, Any] = json.loads(files(__package__).joinpath(SPEC_FILE).read_text())
    return loaded


def schema(name: str) -> dict[str, Any]:
    """A self-contained JSON Schema for one component, `$ref`s resolved to `definitions`."""
    components = spec()["components"]["schemas"]
    text = json.dumps(components[name]).replace("#/components/schemas/", "#/definitions/")
    resolved: dict[str, Any] = json.loads(text)
    resolved["definitions"] = json.loads(
        json.dumps(components).replace("#/components/schemas/", "#/definitions/")
    )
    return resolved
