"""OffsetTracker: only the contiguous settled prefix is ever committable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.models import SourceRecord
from stream.offsets import OffsetTracker

TP = ("topic", 0)


def tracked(offsets: list[int]) -> tuple[OffsetTracker, int]:
    tracker = OffsetTracker()
    tracker.assign([TP])
    epochs = {tracker.track(*TP, offset) for offset in offsets}
    assert len(epochs) == 1
    epoch = epochs.pop()
    assert epoch is not None
    return tracker, epoch


def test_nothing_committable_until_the_first_offset_settles() -> None:
    tracker, epoch = tracked([0, 1, 2])
    tracker.settle(*TP, epoch, 2)
    tracker.settle(*TP, epoch, 1)
    assert tracker.commit_positions() == {}
    tracker.settle(*TP, epoch, 0)
    assert tracker.commit_positions() == {TP: 3}


def test_position_stops_at_the_first_gap() -> None:
    tracker, epoch = tracked([10, 11, 12, 13])
    for offset in (10, 11, 13):
        tracker.settle(*TP, epoch, offset)
    assert tracker.commit_positions() == {TP: 12}
    assert tracker.unsettled() == 2


def test_offsets_with_holes_commit_past_the_last_settled_one() -> None:
    # Compaction and transaction markers leave gaps between consumed offsets.
    tracker, epoch = tracked([5, 9, 20])
    for offset in (5, 9, 20):
        tracker.settle(*TP, epoch, offset)
    assert tracker.commit_positions() == {TP: 21}


def test_committed_positions_are_not_returned_again() -> None:
    tracker, epoch = tracked([0, 1])
    tracker.settle(*TP, epoch, 0)
    tracker.mark_committed(tracker.commit_positions())
    assert tracker.commit_positions() == {}
    tracker.settle(*TP, epoch, 1)
    assert tracker.commit_positions() == {TP: 2}


def test_late_settlements_of_a_previous_assignment_are_ignored() -> None:
    tracker, old_epoch = tracked([0, 1])
    tracker.settle(*TP, old_epoch, 0)
    assert tracker.revoke([TP]) == {TP: 1}
    tracker.assign([TP])
    new_epoch = tracker.track(*TP, 1)
    assert new_epoch is not None
    assert new_epoch != old_epoch
    tracker.settle(*TP, old_epoch, 1)
    assert tracker.commit_positions() == {}
    tracker.settle(*TP, new_epoch, 1)
    assert tracker.commit_positions() == {TP: 2}


def test_lost_partitions_yield_nothing_and_ignore_settlements() -> None:
    tracker, epoch = tracked([0])
    tracker.lose([TP])
    tracker.settle(*TP, epoch, 0)
    assert tracker.commit_positions() == {}
    assert tracker.track(*TP, 1) is None


def test_repeated_offsets_are_tracked_once() -> None:
    tracker, epoch = tracked([0, 1])
    assert tracker.track(*TP, 1) is None
    tracker.settle(*TP, epoch, 0)
    tracker.settle(*TP, epoch, 1)
    assert tracker.commit_positions() == {TP: 2}
    assert tracker.unsettled() == 0


def test_revoke_returns_only_uncommitted_progress() -> None:
    tracker, epoch = tracked([0, 1])
    tracker.settle(*TP, epoch, 0)
    tracker.mark_committed(tracker.commit_positions())
    assert tracker.revoke([TP]) == {}


@given(
    st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60),
    st.data(),
)
def test_random_settle_order_never_commits_past_an_unsettled_offset(
    steps: list[int], data: st.DataObject
) -> None:
    offsets = []
    offset = 0
    for step in steps:
        offset += step
        offsets.append(offset)
    tracker, epoch = tracked(offsets)
    order = data.draw(st.permutations(offsets))
    settled: set[int] = set()
    for done in order:
        tracker.settle(*TP, epoch, done)
        settled.add(done)
        position = tracker.commit_positions().get(TP)
        unsettled = [o for o in offsets if o not in settled]
        if position is not None:
            assert all(o >= position for o in unsettled)
            assert all(o in settled for o in offsets if o < position)
        else:
            assert offsets[0] not in settled
    assert tracker.commit_positions() == {TP: offsets[-1] + 1}


@given(
    st.lists(st.tuples(st.sampled_from(["topic", "other"]), st.integers(0, 2), st.integers(0, 9)))
)
def test_tracking_a_poll_matches_tracking_each_record(
    polled: list[tuple[str, int, int]],
) -> None:
    # ("topic", 2) and every ("other", n) but ("other", 0) are not assigned.
    assigned = [("topic", 0), ("topic", 1), ("other", 0)]
    one_by_one, whole_poll = OffsetTracker(), OffsetTracker()
    one_by_one.assign(assigned)
    whole_poll.assign(assigned)
    records = [SourceRecord(t, p, o, None, None, None) for t, p, o in polled]
    expected = [one_by_one.track(t, p, o) for t, p, o in polled]
    assert whole_poll.track_all(records) == expected
    assert whole_poll.unsettled() == one_by_one.unsettled()
