"""Dedup memory of the sandbox counters: 48-hour window, offline events, capacity bound."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.sandbox.stats import DEDUP_WINDOW_S, Stats


@dataclass(frozen=True)
class _UserData:
    client_ip_address: str = "203.0.113.9"
    client_user_agent: str = "UA"
    external_id: list[str] = field(default_factory=list)
    em: list[str] = field(default_factory=list)
    hashed_maids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Event:
    event_id: str
    event_name: str = "checkout"
    action_source: str = "web"
    event_time: int = 1_000_000
    user_data: _UserData = field(default_factory=_UserData)


def test_repeat_within_48_hours_is_a_duplicate_and_after_is_unique() -> None:
    stats = Stats()
    stats.count_processed("1", [_Event("a")], now=1_000_000.0)
    stats.count_processed("1", [_Event("a")], now=1_000_000.0 + DEDUP_WINDOW_S - 1)
    assert (stats.unique, stats.duplicate) == (1, 1)
    stats.count_processed("1", [_Event("a")], now=1_000_000.0 + DEDUP_WINDOW_S + 1)
    assert (stats.unique, stats.duplicate) == (2, 1)


def test_offline_events_are_never_deduplicated() -> None:
    stats = Stats()
    offline = _Event("a", action_source="offline")
    stats.count_processed("1", [offline, offline, _Event("a"), _Event("a")], now=1.0)
    assert (stats.unique, stats.duplicate) == (3, 1)


def test_dedup_memory_is_bounded_and_forgets_the_oldest() -> None:
    stats = Stats(dedup_capacity=2)
    stats.count_processed("1", [_Event("a"), _Event("b"), _Event("c")], now=1.0)
    stats.count_processed("1", [_Event("c"), _Event("a")], now=2.0)
    # "a" was forgotten to make room, so it counts as new again; "c" is still remembered.
    assert (stats.unique, stats.duplicate) == (4, 1)


def test_late_events_are_those_received_over_an_hour_after_they_happened() -> None:
    stats = Stats()
    now = 10_000_000.0
    stats.count_processed(
        "1",
        [_Event("a", event_time=int(now) - 3601), _Event("b", event_time=int(now) - 3599)],
        now=now,
    )
    assert stats.late == 1
