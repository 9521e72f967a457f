"""The sandbox's counters: requests by status, event outcomes, dedup, lateness and resilience.

Dedup follows Pinterest: the first event with a given `event_id` + `event_name` counts, repeats
within 48 hours of it are duplicates, and `offline` events are never deduplicated. The memory
of seen keys is bounded (`dedup_capacity`; the oldest are forgotten first). Resilience ratios
are computed over every processed event since start or the last reset.
"""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from typing import Any, Final

from stream.spec import BOTTOM_FUNNEL_EVENTS

DEDUP_WINDOW_S: Final = 48 * 3600
LATE_AFTER_S: Final = 3600
_user_data_of: Final = operator.attrgetter("user_data")
_name_of: Final = operator.attrgetter("event_name")
_time_of: Final = operator.attrgetter("event_time")
_source_of: Final = operator.attrgetter("action_source")
_dedup_key_of: Final = operator.attrgetter("event_name", "event_id")
_ip_and_user_agent_of: Final = operator.attrgetter("client_ip_address", "client_user_agent")
_email_or_maid_of: Final = operator.attrgetter("em", "hashed_maids")
_external_id_of: Final = operator.attrgetter("external_id")
IP_AND_USER_AGENT_GOOD: Final = 0.9
EMAIL_OR_MAID_GOOD: Final = 0.1
EXTERNAL_ID_GOOD: Final = 0.1


class Stats:
    """Mutable counters of one sandbox; only the event loop thread touches them."""

    def __init__(self, dedup_capacity: int = 1_000_000) -> None:
        self._dedup_capacity = dedup_capacity
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.failure_reasons: Counter[str] = Counter()
        self.accounts: dict[str, Counter[str]] = {}
        self.received = 0
        self.processed = 0
        self.failed = 0
        self.test_events = 0
        self.unique = 0
        self.duplicate = 0
        self.late = 0
        self.with_ip_and_user_agent = 0
        self.with_external_id = 0
        self.bottom_funnel = 0
        self.bottom_funnel_with_email_or_maid = 0
        # Insertion order is first-seen order, so the oldest keys are always at the front.
        # Keys are strings and values floats: the garbage collector never has to scan them.
        self._first_seen: dict[str, float] = {}

    def count_request(self, status: str) -> None:
        self.requests[status] += 1

    def count_failed(self, account: str, reasons: list[str]) -> None:
        self.received += len(reasons)
        self.failed += len(reasons)
        self.failure_reasons.update(reasons)
        self._account(account)["failed"] += len(reasons)

    def count_test(self, evaluated: int) -> None:
        self.test_events += evaluated

    def count_processed(self, account: str, events: list[Any], now: float) -> None:
        """Counts processed events: dedup, lateness and identifier coverage.

        Written as C-level iterator pipelines (map, compress, set and dict operations over
        attrgetters) because this runs for every event at full load.
        """
        self._forget_before(now - DEDUP_WINDOW_S)
        user_data = list(map(_user_data_of, events))
        funnel_flags = list(map(BOTTOM_FUNNEL_EVENTS.__contains__, map(_name_of, events)))
        self.with_ip_and_user_agent += sum(map(all, map(_ip_and_user_agent_of, user_data)))
        self.with_external_id += sum(map(bool, map(_external_id_of, user_data)))
        self.bottom_funnel += sum(funnel_flags)
        self.bottom_funnel_with_email_or_maid += sum(
            map(any, map(_email_or_maid_of, itertools.compress(user_data, funnel_flags)))
        )
        self.late += sum(map((now - LATE_AFTER_S).__gt__, map(_time_of, events)))
        sources = list(map(_source_of, events))
        deduplicated = (
            events
            if "offline" not in sources
            else list(itertools.compress(events, map("offline".__ne__, sources)))
        )
        offline = len(events) - len(deduplicated)
        # Repeats inside one batch collapse here, so they count as duplicates too.
        keys = dict.fromkeys(map("\x00".join, map(_dedup_key_of, deduplicated)))
        # Not `keys.keys() - first_seen.keys()`: that walks the whole memory for every batch.
        fresh = list(itertools.filterfalse(self._first_seen.__contains__, keys))
        self._first_seen.update(dict.fromkeys(fresh, now))
        count = len(events)
        unique = offline + len(fresh)
        self.received += count
        self.processed += count
        self.unique += unique
        self.duplicate += count - unique
        self._account(account)["processed"] += count
        excess = len(self._first_seen) - self._dedup_capacity
        if excess > 0:
            for key in list(itertools.islice(self._first_seen, excess)):
                del self._first_seen[key]

    def _forget_before(self, horizon: float) -> None:
        first_seen = self._first_seen
        expired = []
        for key, seen in first_seen.items():
            if seen >= horizon:
                break
            expired.append(key)
        for key in expired:
            del first_seen[key]

    def _account(self, account: str) -> Counter[str]:
        counters = self.accounts.get(account)
        if counters is None:
            counters = self.accounts[account] = Counter()
        return counters

    def resilience(self) -> dict[str, Any]:
        """Pinterest's resilience criteria (DESIGN §6); a ratio is null with no events to rate.

        With no bottom-funnel events the email/MAID criterion has nothing to fail, so it counts
        as met; with no events at all the status is not good.
        """
        ip_ua = _ratio(self.with_ip_and_user_agent, self.processed)
        external = _ratio(self.with_external_id, self.processed)
        funnel = _ratio(self.bottom_funnel_with_email_or_maid, self.bottom_funnel)
        good = (
            self.processed > 0
            and ip_ua is not None
            and ip_ua >= IP_AND_USER_AGENT_GOOD
            and external is not None
            and external >= EXTERNAL_ID_GOOD
            and (funnel is None or funnel >= EMAIL_OR_MAID_GOOD)
        )
        return {
            "ip_and_user_agent_ratio": ip_ua,
            "email_or_maid_bottom_funnel_ratio": funnel,
            "external_id_ratio": external,
            "bottom_funnel_events": self.bottom_funnel,
            "good": good,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything `GET /_stats` returns."""
        return {
            "requests": {"total": sum(self.requests.values()), "by_status": dict(self.requests)},
            "events": {
                "received": self.received,
                "processed": self.processed,
                "failed": self.failed,
                "unique": self.unique,
                "duplicate": self.duplicate,
                "late": self.late,
                "test": self.test_events,
                "failure_reasons": dict(self.failure_reasons),
            },
            "ad_accounts": {account: dict(counts) for account, counts in self.accounts.items()},
            "resilience": self.resilience(),
        }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None
