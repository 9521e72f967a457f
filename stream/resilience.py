"""Pinterest's resilience status over a sliding window of delivered events, in time buckets."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from stream.models import Signal
from stream.spec import BOTTOM_FUNNEL_EVENTS

CoverageSignal = Literal["ip_and_user_agent", "email_or_maid_bottom_funnel", "external_id"]
COVERAGE_SIGNALS: tuple[CoverageSignal, ...] = (
    "ip_and_user_agent",
    "email_or_maid_bottom_funnel",
    "external_id",
)
COVERAGE_THRESHOLDS: dict[CoverageSignal, float] = {
    "ip_and_user_agent": 0.9,
    "email_or_maid_bottom_funnel": 0.1,
    "external_id": 0.1,
}

ShareSignal = Literal["ip_and_user_agent", "email", "external_id", "hashed_maids", "click_id"]
SHARE_SIGNALS: tuple[ShareSignal, ...] = (
    "ip_and_user_agent",
    "email",
    "external_id",
    "hashed_maids",
    "click_id",
)


# Slots of a bucket's counter list.
_TOTAL, _BOTTOM_FUNNEL, _BOTTOM_FUNNEL_MATCHED = 0, 1, 2
_SHARE_SLOT: dict[ShareSignal, int] = {name: 3 + i for i, name in enumerate(SHARE_SIGNALS)}
_SLOTS = 3 + len(SHARE_SIGNALS)
_SHARE_FLAG: dict[ShareSignal, Signal] = {
    "ip_and_user_agent": Signal.IP_AND_USER_AGENT,
    "email": Signal.EMAIL,
    "external_id": Signal.EXTERNAL_ID,
    "hashed_maids": Signal.HASHED_MAIDS,
    "click_id": Signal.CLICK_ID,
}
# Per flag combination (32 of them), computed once: the share slots it bumps and whether it
# satisfies the bottom-funnel criterion. Recording is then two table lookups, because IntFlag
# arithmetic goes through the enum machinery (~1 µs per operation).
_INCREMENTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(_SHARE_SLOT[name] for name, flag in _SHARE_FLAG.items() if value & flag)
    for value in range(1 << len(_SHARE_FLAG))
)
_EMAIL_OR_MAID: tuple[bool, ...] = tuple(
    bool(value & (Signal.EMAIL | Signal.HASHED_MAIDS)) for value in range(1 << len(_SHARE_FLAG))
)


class ResilienceTracker:
    """Counts delivered events per time bucket; ratios are sums over the live buckets.

    Memory is `buckets` small lists whatever the event rate: no per-event storage.
    """

    def __init__(
        self,
        window_s: float = 3600.0,
        *,
        buckets: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s and buckets must be positive")
        self._width = window_s / buckets
        self._buckets_kept = buckets
        self._clock = clock
        self._buckets: deque[tuple[int, list[int]]] = deque()
        self._current_index = -1
        self._current: list[int] = [0] * _SLOTS
        self._next_bucket_at = -math.inf

    def record(
        self, signals: Signal, event_name: str, now: float | None = None, count: int = 1
    ) -> None:
        """Counts `count` delivered events of one name with the matching signals they carried.

        `now` lets a caller that settles a whole batch read the clock once. A clock that steps
        back keeps counting into the current bucket rather than reopening an old one.
        """
        if now is None:
            now = self._clock()
        if now >= self._next_bucket_at:
            self._start_bucket(int(now // self._width))
        counts = self._current
        counts[_TOTAL] += count
        for slot in _INCREMENTS[signals]:
            counts[slot] += count
        if event_name in BOTTOM_FUNNEL_EVENTS:
            counts[_BOTTOM_FUNNEL] += count
            if _EMAIL_OR_MAID[signals]:
                counts[_BOTTOM_FUNNEL_MATCHED] += count

    def events(self) -> int:
        return self._totals()[_TOTAL]

    def coverage(self, signal: CoverageSignal) -> float | None:
        """The ratio behind one resilience criterion; None when it has no events to judge."""
        totals = self._totals()
        if signal == "email_or_maid_bottom_funnel":
            return _ratio(totals[_BOTTOM_FUNNEL_MATCHED], totals[_BOTTOM_FUNNEL])
        return _ratio(totals[_SHARE_SLOT[signal]], totals[_TOTAL])

    def share(self, signal: ShareSignal) -> float | None:
        """Share of events in the window carrying `signal`; None without events."""
        totals = self._totals()
        return _ratio(totals[_SHARE_SLOT[signal]], totals[_TOTAL])

    def good(self) -> bool:
        """Pinterest's "Good": every criterion met. A window without bottom-funnel events meets
        that criterion vacuously; a window without any event is not good."""
        if self.events() == 0:
            return False
        for signal, threshold in COVERAGE_THRESHOLDS.items():
            ratio = self.coverage(signal)
            if ratio is not None and ratio < threshold:
                return False
        return True

    def _start_bucket(self, index: int) -> None:
        self._current_index = index
        self._next_bucket_at = (index + 1) * self._width
        self._current = [0] * _SLOTS
        self._buckets.append((index, self._current))
        self._expire(index)

    def _expire(self, index: int) -> None:
        oldest_kept = index - self._buckets_kept + 1
        while self._buckets and self._buckets[0][0] < oldest_kept:
            self._buckets.popleft()

    def _totals(self) -> list[int]:
        self._expire(int(self._clock() // self._width))
        totals = [0] * _SLOTS
        # A copy: the scrape may run on another thread than the one recording.
        for _, counts in list(self._buckets):
            for slot, value in enumerate(counts):
                totals[slot] += value
        return totals


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
