"""Pinterest's official conversion-events and EQS schemas (OpenAPI v5.23.0 subsets), licence."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any, Final

SPEC_FILE = "pinterest-conversion-events.json"
# `conversion_eqs/list` (GET /v5/ad_accounts/{id}/conversion_eqs): the Event Quality Score.
EQS_SPEC_FILE = "pinterest-conversion-eqs.json"

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

# The Event Quality Score's vocabulary (conversion_eqs/list): the enums and component names of
# its response schema, which tests/unit/test_quality.py compares with the bundled file.
LOOKBACK_PERIODS: Final = ("1d", "14d")
OVERALL_STATUSES: Final = ("NEEDS_IMPROVEMENT", "FAIR", "GOOD")
INGESTION_SOURCES: Final = frozenset({"TAG", "MMP", "FILE_UPLOAD", "CONVERSIONS_API", "NATIVE"})
SOURCE_PLATFORMS: Final = frozenset(
    {
        "WEB",
        "MOBILE",
        "MOBILE_ANDROID",
        "MOBILE_IOS",
        "OFFLINE",
        "PINTEREST_WEB",
        "PINTEREST_ANDROID",
        "PINTEREST_IOS",
        "POINT_OF_SALE",
    }
)
QUALITY_COMPONENTS: Final = (
    "hashed_email",
    "hashed_maid",
    "ip_address",
    "user_agent",
    "advertiser_external_id",
    "click_id_epik",
    "external_event_id",
    "order_id",
    "order_value",
    "product_id",
    "source_url",
)


@cache
def spec(file: str = SPEC_FILE) -> dict[str, Any]:
    """A bundled subset: one operation (`events/create` unless `file` says another) and every
    schema it references."""
    loaded: dict[str, Any] = json.loads(files(__package__).joinpath(file).read_text())
    return loaded


def schema(name: str, file: str = SPEC_FILE) -> dict[str, Any]:
    """A self-contained JSON Schema for one component, `$ref`s resolved to `definitions`."""
    components = spec(file)["components"]["schemas"]
    text = json.dumps(components[name]).replace("#/components/schemas/", "#/definitions/")
    resolved: dict[str, Any] = json.loads(text)
    resolved["definitions"] = json.loads(
        json.dumps(components).replace("#/components/schemas/", "#/definitions/")
    )
    return resolved
