"""Batcher: emits at max events, max bytes or linger; identical events are sent once."""

from __future__ import annotations

import orjson

from stream.batcher import REQUEST_OVERHEAD, Batch, Batcher, BatchKey
from stream.models import PinterestEvent

KEY = BatchKey("549764106778")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(
    event_id: str, event_name: str = "checkout", padding: int = 0, action_source: str = "web"
) -> PinterestEvent:
    body = orjson.dumps({"event_id": event_id, "event_name": event_name, "pad": "x" * padding})
    return PinterestEvent(event_id, event_name, action_source, 1_700_000_000, None, body)


def test_emits_exactly_at_max_events() -> None:
    batcher: Batcher[int] = Batcher(3, 1_000_000, 0.5, FakeClock())
    assert batcher.add(KEY, event("a"), 1) is None
    assert batcher.add(KEY, event("b"), 2) is None
    batch = batcher.add(KEY, event("c"), 3)
    assert batch is not None
    assert [e.event_id for e in batch.events] == ["a", "b", "c"]
    assert batch.tokens == ((1,), (2,), (3,))
    assert batcher.flush() == []


def test_body_is_the_joined_events_and_parses_as_a_request() -> None:
    batcher: Batcher[int] = Batcher(2, 1_000_000, 0.5, FakeClock())
    batcher.add(KEY, event("a"), 1)
    batch = batcher.add(KEY, event("b"), 2)
    assert batch is not None
    body = batch.body()
    assert [e["event_id"] for e in orjson.loads(body)["data"]] == ["a", "b"]
    assert len(body) == REQUEST_OVERHEAD + sum(len(e.body) for e in batch.events) + 1


def test_an_event_that_would_exceed_max_bytes_starts_the_next_batch() -> None:
    first, second = event("a", padding=400), event("b", padding=400)
    limit = REQUEST_OVERHEAD + len(first.body) + len(second.body)  # one comma short of both
    batcher: Batcher[int] = Batcher(1000, limit, 0.5, FakeClock())
    assert batcher.add(KEY, first, 1) is None
    batch = batcher.add(KEY, second, 2)
    assert batch is not None
    assert [e.event_id for e in batch.events] == ["a"]
    assert len(batch.body()) <= limit
    [rest] = batcher.flush()
    assert [e.event_id for e in rest.events] == ["b"]


def test_an_oversized_event_goes_out_alone() -> None:
    batcher: Batcher[int] = Batcher(1000, 1024, 0.5, FakeClock())
    batch = batcher.add(KEY, event("big", padding=5000), 1)
    assert batch is not None
    assert batch.tokens == ((1,),)


def test_linger_emits_only_batches_that_waited_long_enough() -> None:
    clock = FakeClock()
    batcher: Batcher[int] = Batcher(1000, 1_000_000, 0.5, clock)
    other = BatchKey("1234")
    batcher.add(KEY, event("a"), 1)
    clock.now += 0.3
    batcher.add(other, event("b"), 2)
    assert batcher.next_due() == 1000.5
    assert batcher.due() == []
    clock.now += 0.2
    [due] = batcher.due()
    assert due.key == KEY
    assert batcher.pending_events() == 1
    clock.now += 0.3
    assert [b.key for b in batcher.due()] == [other]


def test_same_event_id_and_name_is_sent_once_and_settles_all_copies() -> None:
    batcher: Batcher[int] = Batcher(1000, 1_000_000, 0.5, FakeClock())
    batcher.add(KEY, event("a", "checkout"), 1)
    batcher.add(KEY, event("a", "checkout"), 2)
    batcher.add(KEY, event("a", "add_to_cart"), 3)
    [batch] = batcher.flush()
    assert [(e.event_id, e.event_name) for e in batch.events] == [
        ("a", "checkout"),
        ("a", "add_to_cart"),
    ]
    assert batch.tokens == ((1, 2), (3,))
    assert batch.copies == 3


def test_offline_events_are_never_merged() -> None:
    # Pinterest never deduplicates offline events: two CRM rows with one order id count twice.
    batcher: Batcher[int] = Batcher(1000, 1_000_000, 0.5, FakeClock())
    batcher.add(KEY, event("o-1", action_source="offline"), 1)
    batcher.add(KEY, event("o-1", action_source="offline"), 2)
    batcher.add(KEY, event("o-1"), 3)
    batcher.add(KEY, event("o-1", action_source="app_ios"), 4)
    batcher.add(KEY, event("o-1", action_source="offline"), 5)
    [batch] = batcher.flush()
    assert [e.action_source for e in batch.events] == ["offline", "offline", "web", "offline"]
    assert batch.tokens == ((1,), (2,), (3, 4), (5,))
    assert batch.copies == 5


def test_keys_are_batched_separately_including_the_test_flag() -> None:
    batcher: Batcher[int] = Batcher(1000, 1_000_000, 0.5, FakeClock())
    batcher.add(KEY, event("a"), 1)
    batcher.add(BatchKey(KEY.ad_account_id, test=True), event("a"), 2)
    batches = batcher.flush()
    assert sorted((b.key.test, b.tokens) for b in batches) == [(False, ((1,),)), (True, ((2,),))]


def test_halves_keep_events_and_their_copies_together() -> None:
    batch: Batch[int] = Batch(KEY, (event("a"), event("b"), event("c")), ((1, 4), (2,), (3,)))
    first, second = batch.halves()
    assert [e.event_id for e in first.events] == ["a"]
    assert first.tokens == ((1, 4),)
    assert [e.event_id for e in second.events] == ["b", "c"]
    assert second.tokens == ((2,), (3,))
