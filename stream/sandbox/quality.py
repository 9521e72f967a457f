"""Scores the events the sandbox kept like Pinterest's Event Quality Score (GET conversion_eqs).

The answer has the shape of Pinterest's `conversion_eqs/list` (an array of `EventQualityScore`),
computed over the events of the ad account that the sandbox recorded within the lookback period
(`1d` or `14d`; only the `--keep-events` most recent events are kept, so a long run is scored
over its tail). Every score has `ingestion_source` CONVERSIONS_API (the sandbox receives nothing
else); the platform follows `action_source`: web → WEB, app_android and app_ios → MOBILE,
offline → OFFLINE. `overlap` (events also received from the Tag) is never reported: there is no
Tag traffic to overlap with.

Coverage of a component = percentage of the platform's events of that event type carrying it:

    component               carried when the event has       reported for
    hashed_email            user_data.em                     every platform
    hashed_maid             user_data.hashed_maids           MOBILE
    ip_address              user_data.client_ip_address      WEB, MOBILE
    user_agent              user_data.client_user_agent      WEB, MOBILE
    advertiser_external_id  user_data.external_id            every platform
    click_id_epik           user_data.click_id               WEB
    external_event_id       event_id                         every platform
    order_id                custom_data.order_id             checkout
    order_value             custom_data.value                checkout, add_to_cart
    product_id              custom_data.content_ids/contents add_to_cart, add_to_wishlist,
                                                             checkout, view_content
    source_url              event_source_url                 WEB

Thresholds (`TARGETS`, percent): hashed_email 50, hashed_maid 50, ip_address 90, user_agent 90,
advertiser_external_id 10, click_id_epik 10, external_event_id 100, order_id 90, order_value 90,
product_id 90, source_url 90. A component below its target for an event type gets an issue:
`missing_<component>` at 0 %, `low_<component>_coverage` otherwise.

Overall status of a platform:
- NEEDS_IMPROVEMENT when, over all its events, the matching identifiers miss their targets:
  hashed_email (on MOBILE: hashed_email or hashed_maid, whichever is higher) below 50 %, or, on
  WEB and MOBILE, ip_address or user_agent below 90 %;
- FAIR when those are met but some component of some event type has an issue;
- GOOD otherwise.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, Final

LOOKBACK_SECONDS: Final = {"1d": 86_400.0, "14d": 14 * 86_400.0}
INGESTION_SOURCE: Final = "CONVERSIONS_API"
PLATFORM_OF: Final = {
    "web": "WEB",
    "app_android": "MOBILE",
    "app_ios": "MOBILE",
    "offline": "OFFLINE",
}
PLATFORMS: Final = ("WEB", "MOBILE", "OFFLINE")
EVERY_PLATFORM: Final = frozenset(PLATFORMS)
TARGETS: Final = {
    "hashed_email": 50.0,
    "hashed_maid": 50.0,
    "ip_address": 90.0,
    "user_agent": 90.0,
    "advertiser_external_id": 10.0,
    "click_id_epik": 10.0,
    "external_event_id": 100.0,
    "order_id": 90.0,
    "order_value": 90.0,
    "product_id": 90.0,
    "source_url": 90.0,
}
WHAT_TO_SEND: Final = {
    "hashed_email": "user_data.em (the hashed e-mail address)",
    "hashed_maid": "user_data.hashed_maids (the hashed mobile advertising id)",
    "ip_address": "user_data.client_ip_address",
    "user_agent": "user_data.client_user_agent",
    "advertiser_external_id": "user_data.external_id (your hashed user id)",
    "click_id_epik": "user_data.click_id (the _epik cookie or epik URL parameter)",
    "external_event_id": "event_id (the same id the Tag sends)",
    "order_id": "custom_data.order_id",
    "order_value": "custom_data.value",
    "product_id": "custom_data.content_ids or custom_data.contents",
    "source_url": "event_source_url",
}
_WEB_AND_MOBILE: Final = frozenset({"WEB", "MOBILE"})
_PRODUCT_EVENTS: Final = frozenset({"add_to_cart", "add_to_wishlist", "checkout", "view_content"})


def _user(field: str) -> Callable[[list[Any]], int]:
    carried = operator.attrgetter(f"user_data.{field}")
    return lambda events: sum(map(bool, map(carried, events)))


def _top(field: str) -> Callable[[list[Any]], int]:
    carried = operator.attrgetter(field)
    return lambda events: sum(map(bool, map(carried, events)))


def _custom(*fields: str) -> Callable[[list[Any]], int]:
    carried = operator.attrgetter(*fields)
    # One field gives a value, several a tuple of values: either way "any of them is set".
    present: Callable[[Any], bool] = bool if len(fields) == 1 else any

    def count(events: list[Any]) -> int:
        # msgspec leaves an absent custom_data UNSET, which is falsy.
        return sum(map(present, map(carried, filter(None, map(_custom_data_of, events)))))

    return count


_custom_data_of: Final = operator.attrgetter("custom_data")

# component → (how many of these events carry it, platforms it is reported for, event types or
# None: all). The counts run as C-level iterator pipelines: the sandbox may hold 100,000 events
# and answers on its event loop.
COMPONENTS: Final[
    dict[str, tuple[Callable[[list[Any]], int], frozenset[str], frozenset[str] | None]]
] = {
    "hashed_email": (_user("em"), EVERY_PLATFORM, None),
    "hashed_maid": (_user("hashed_maids"), frozenset({"MOBILE"}), None),
    "ip_address": (_user("client_ip_address"), _WEB_AND_MOBILE, None),
    "user_agent": (_user("client_user_agent"), _WEB_AND_MOBILE, None),
    "advertiser_external_id": (_user("external_id"), EVERY_PLATFORM, None),
    "click_id_epik": (_user("click_id"), frozenset({"WEB"}), None),
    "external_event_id": (_top("event_id"), EVERY_PLATFORM, None),
    "order_id": (_custom("order_id"), EVERY_PLATFORM, frozenset({"checkout"})),
    "order_value": (_custom("value"), EVERY_PLATFORM, frozenset({"checkout", "add_to_cart"})),
    "product_id": (_custom("content_ids", "contents"), EVERY_PLATFORM, _PRODUCT_EVENTS),
    "source_url": (_top("event_source_url"), frozenset({"WEB"}), None),
}


class _Tally:
    """The events of one platform, per event type, and how many carry each component."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.events: dict[str, list[Any]] = {}
        self._hits: dict[tuple[str, str], int] = {}

    def applies(self, component: str, name: str) -> bool:
        _, platforms, event_types = COMPONENTS[component]
        return self.platform in platforms and (event_types is None or name in event_types)

    def hits(self, component: str, name: str) -> int:
        key = (component, name)
        found = self._hits.get(key)
        if found is None:
            found = 0
            if self.applies(component, name):
                found = COMPONENTS[component][0](self.events[name])
            self._hits[key] = found
        return found

    def share(self, component: str, names: Iterable[str] | None = None) -> float:
        """Percentage over the given event types (default: all) of events carrying `component`."""
        chosen = list(self.events) if names is None else list(names)
        total = sum(len(self.events[name]) for name in chosen)
        hits = sum(self.hits(component, name) for name in chosen)
        return 100.0 * hits / total if total else 0.0

    def score(self, lookback: str) -> dict[str, Any]:
        components: dict[str, dict[str, Any]] = {}
        issues = 0
        for component in COMPONENTS:
            per_event: dict[str, Any] = {}
            for name in sorted(self.events):
                if not self.applies(component, name):
                    continue
                coverage = round(self.share(component, [name]), 2)
                details: dict[str, Any] = {"coverage": coverage}
                if coverage < TARGETS[component]:
                    details["issues"] = [_issue(component, name, coverage)]
                    issues += 1
                per_event[name] = details
            if per_event:
                components[component] = per_event
        return {
            "ingestion_source": INGESTION_SOURCE,
            "source_platform": self.platform,
            "lookback_period": lookback,
            "overall_status": self._status(issues),
            "quality_components": components,
        }

    def _status(self, issues: int) -> str:
        email = self.share("hashed_email")
        if self.platform == "MOBILE":
            email = max(email, self.share("hashed_maid"))
        weak = email < TARGETS["hashed_email"]
        if self.platform in _WEB_AND_MOBILE:
            weak = weak or any(
                self.share(component) < TARGETS[component]
                for component in ("ip_address", "user_agent")
            )
        if weak:
            return "NEEDS_IMPROVEMENT"
        return "FAIR" if issues else "GOOD"


def _issue(component: str, event_name: str, coverage: float) -> dict[str, str]:
    target = TARGETS[component]
    if coverage == 0:
        return {
            "id": f"missing_{component}",
            "name": f"Missing {component}",
            "reason": f"None of the {event_name} events carry {component}; send "
            f"{WHAT_TO_SEND[component]} (target: {target:g} % of events).",
        }
    return {
        "id": f"low_{component}_coverage",
        "name": f"Low {component} coverage",
        "reason": f"{coverage:g} % of the {event_name} events carry {component}, below the "
        f"{target:g} % target; send {WHAT_TO_SEND[component]} on more of them.",
    }


def score_events(
    events: Iterable[Any],
    lookback: str,
    source_platform: str | None = None,
    ingestion_source: str | None = None,
) -> list[dict[str, Any]]:
    """The `conversion_eqs` answer for these events (already limited to the lookback period).

    The filters behave like Pinterest's query parameters: absent means every value.
    """
    if ingestion_source not in (None, INGESTION_SOURCE):
        return []
    tallies: dict[str, _Tally] = {}
    for event in events:
        platform = PLATFORM_OF.get(event.action_source)
        if platform is None or source_platform not in (None, platform):
            continue
        tally = tallies.get(platform)
        if tally is None:
            tally = tallies[platform] = _Tally(platform)
        named = tally.events.get(event.event_name)
        if named is None:
            named = tally.events[event.event_name] = []
        named.append(event)
    return [tallies[p].score(lookback) for p in PLATFORMS if p in tallies]
