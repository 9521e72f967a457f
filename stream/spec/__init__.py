"""Pinterest's official conversion-events schema (OpenAPI v5.23.0 subset) and its licence."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any, Final

SPEC_FILE = "pinterest-conversion-events.json"

# Pinterest's vocabulary, which the schema states only in prose (DESIGN §1, reference notes B.2).
EVENT_NAMES: Final = frozenset(
    {
        "add_payment_info",
        "add_to_cart",
        "add_to_wishlist",
        "app_install",
        "app_open",
        "checkout",
        "contact",
        "custom",
        "customize_product",
        "find_location",
        "initiate_checkout",
        "lead",
        "page_visit",
        "schedule",
        "search",
        "signup",
        "start_trial",
        "submit_application",
        "subscribe",
        "view_category",
        "view_content",
        "watch_video",
    }
)
ACTION_SOURCES: Final = frozenset({"web", "app_android", "app_ios", "offline"})
HASHED_FIELDS: Final = (
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
    "hashed_maids",
)
# Pinterest's resilience guidance counts e-mail/MAID coverage over these events only.
BOTTOM_FUNNEL_EVENTS: Final = frozenset(
    {
        "checkout",
        "add_to_cart",
        "initiate_checkout",
        "add_payment_info",
        "lead",
        "signup",
        "subscribe",
        "start_trial",
        "submit_application",
    }
)


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
