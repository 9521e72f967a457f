"""The resilience tracker: Pinterest's thresholds over a sliding window of time buckets."""

from __future__ import annotations

import pytest

from stream.models import Signal
from stream.resilience import ResilienceTracker
from stream.spec import BOTTOM_FUNNEL_EVENTS

IP = Signal.IP_AND_USER_AGENT


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracker(clock: FakeClock) -> ResilienceTracker:
    return ResilienceTracker(3600.0, buckets=60, clock=clock)


def test_empty_window_has_no_ratios_and_is_not_good(tracker: ResilienceTracker) -> None:
    assert tracker.events() == 0
    assert tracker.coverage("ip_and_user_agent") is None
    assert tracker.share("email") is None
    assert not tracker.good()


def test_ratios_count_each_signal(tracker: ResilienceTracker) -> None:
    tracker.record(IP | Signal.EMAIL, "checkout")
    tracker.record(IP | Signal.HASHED_MAIDS | Signal.CLICK_ID, "page_visit")
    tracker.record(Signal.EXTERNAL_ID, "add_to_cart")
    tracker.record(Signal.NONE, "lead")
    assert tracker.events() == 4
    assert tracker.coverage("ip_and_user_agent") == 0.5
    assert tracker.coverage("external_id") == 0.25
    # Bottom funnel: checkout (em), add_to_cart (none), lead (none); page_visit is not counted.
    assert tracker.coverage("email_or_maid_bottom_funnel") == pytest.approx(1 / 3)
    assert tracker.share("email") == 0.25
    assert tracker.share("hashed_maids") == 0.25
    assert tracker.share("click_id") == 0.25
    assert tracker.share("external_id") == 0.25
    assert tracker.share("ip_and_user_agent") == 0.5


def test_maid_counts_for_bottom_funnel(tracker: ResilienceTracker) -> None:
    tracker.record(IP | Signal.HASHED_MAIDS | Signal.EXTERNAL_ID, "signup")
    assert tracker.coverage("email_or_maid_bottom_funnel") == 1.0


@pytest.mark.parametrize(
    ("ip_events", "external_events", "bottom_matched", "good"),
    [
        (90, 10, 1, True),  # every threshold met exactly
        (89, 10, 1, False),  # IP+UA below 90 %
        (90, 9, 1, False),  # external_id below 10 %
        (90, 10, 0, False),  # no bottom-funnel event with em or MAID
    ],
)
def test_good_needs_every_threshold(
    tracker: ResilienceTracker,
    ip_events: int,
    external_events: int,
    bottom_matched: int,
    good: bool,
) -> None:
    for i in range(100):
        signals = Signal.NONE
        if i < ip_events:
            signals |= IP
        if i < external_events:
            signals |= Signal.EXTERNAL_ID
        if i < 10 and i < bottom_matched * 10:
            signals |= Signal.EMAIL
        tracker.record(signals, "checkout" if i < 10 else "page_visit")
    assert tracker.good() is good


def test_no_bottom_funnel_events_meets_that_criterion(tracker: ResilienceTracker) -> None:
    for _ in range(10):
        tracker.record(IP | Signal.EXTERNAL_ID, "page_visit")
    assert tracker.coverage("email_or_maid_bottom_funnel") is None
    assert tracker.good()


def test_old_buckets_leave_the_window(tracker: ResilienceTracker, clock: FakeClock) -> None:
    tracker.record(Signal.NONE, "page_visit")
    clock.now += 1800
    tracker.record(IP, "page_visit")
    assert tracker.coverage("ip_and_user_agent") == 0.5
    clock.now += 1860  # the first event is now more than an hour old
    assert tracker.events() == 1
    assert tracker.coverage("ip_and_user_agent") == 1.0
    clock.now += 3660
    assert tracker.events() == 0
    tracker.record(Signal.NONE, "page_visit")
    assert tracker.coverage("ip_and_user_agent") == 0.0


def test_memory_is_bounded_by_buckets(tracker: ResilienceTracker, clock: FakeClock) -> None:
    for _ in range(500):
        tracker.record(IP, "checkout")
        clock.now += 30
    assert len(tracker._buckets) <= 60
    # 500 events 30 s apart: only the last hour's ~120 are counted.
    assert 115 <= tracker.events() <= 121


def test_bottom_funnel_set_matches_design() -> None:
    assert (
        frozenset(
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
        == BOTTOM_FUNNEL_EVENTS
    )


def test_rejects_a_non_positive_window() -> None:
    with pytest.raises(ValueError, match="positive"):
        ResilienceTracker(0)


def test_a_clock_stepping_back_keeps_counting(tracker: ResilienceTracker, clock: FakeClock) -> None:
    tracker.record(IP, "page_visit")
    clock.now -= 600
    tracker.record(Signal.NONE, "page_visit")
    assert tracker.events() == 2
    assert len(tracker._buckets) == 1


def test_caller_supplied_time_places_the_event(
    tracker: ResilienceTracker, clock: FakeClock
) -> None:
    tracker.record(IP, "page_visit", now=clock.now - 7200)
    tracker.record(IP, "page_visit", now=clock.now)
    assert tracker.events() == 1
