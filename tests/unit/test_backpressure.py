"""Backpressure: pause over the cap, resume under the low-water mark, isolate stalled accounts."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from stream.backpressure import STALLED_RESCAN_S, Backpressure, BufferAccount
from stream.metrics import Metrics
from stream.offsets import TopicPartitionKey

SIZE = 10
STALLED = "549764106778"
WORKING = "549764106779"

# A token here is already what `origin` tells of it: (its partition, its size).
Token = tuple[TopicPartitionKey, int]


def origin(token: Token) -> Token:
    return token


class FakeSource:
    def __init__(self) -> None:
        self.paused = False
        self.held: frozenset[TopicPartitionKey] = frozenset()

    @property
    def paused_partitions(self) -> int:
        return len(self.held)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def hold(self, partitions: frozenset[TopicPartitionKey]) -> None:
        self.held = partitions


class FakeDispatcher:
    """Holds tokens per ad account; `stalled` maps accounts in setup error to their status."""

    def __init__(self) -> None:
        self.stalled: dict[str, int | None] = {}
        self.tokens: dict[str, list[Token]] = {}

    def setup_errors(self) -> dict[str, int | None]:
        return dict(self.stalled)

    def held_events(self, ad_account_id: str) -> int:
        return len(self.tokens.get(ad_account_id, []))

    def partitions_feeding(
        self, ad_account_id: str, origin: Callable[[Token], tuple[TopicPartitionKey, int]]
    ) -> tuple[frozenset[TopicPartitionKey], int, int]:
        found = [origin(token) for token in self.tokens.get(ad_account_id, [])]
        return (
            frozenset(key for key, _ in found),
            len(found),
            sum(size for _, size in found),
        )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, max_events: int = 100, max_bytes: int = 10**9) -> None:
        self.buffer = BufferAccount(max_events, max_bytes, resume_ratio=0.5)
        self.source = FakeSource()
        self.dispatcher = FakeDispatcher()
        self.clock = FakeClock()
        self.backpressure = Backpressure(
            self.buffer,
            self.source,
            self.dispatcher,
            Metrics(CollectorRegistry()),
            origin,
            self.clock,
        )

    def hold(self, account: str, partition: int, events: int) -> None:
        """`events` of `partition` consumed and waiting in the account's batches."""
        tokens = self.dispatcher.tokens.setdefault(account, [])
        tokens.extend([(("clicks", partition), SIZE)] * events)
        self.buffer.add(SIZE * events, events)


def test_pauses_at_the_event_cap() -> None:
    h = Harness(max_events=10)
    h.buffer.add(SIZE * 9, 9)
    h.backpressure.apply()
    assert not h.backpressure.paused
    assert not h.source.paused
    h.buffer.add(SIZE)
    h.backpressure.apply()
    assert h.backpressure.paused
    assert h.source.paused


def test_pauses_at_the_byte_cap() -> None:
    h = Harness(max_events=10, max_bytes=1000)
    h.buffer.add(1000)
    h.backpressure.apply()
    assert h.source.paused


def test_resumes_only_under_the_low_water_mark() -> None:
    h = Harness(max_events=10)
    h.buffer.add(SIZE * 10, 10)
    h.backpressure.apply()
    assert h.source.paused
    h.buffer.release(SIZE * 4, 4)
    h.backpressure.apply()
    assert h.source.paused, "6 events: under the cap but above the low-water mark (5)"
    h.buffer.release(SIZE)
    h.backpressure.apply()
    assert not h.backpressure.paused
    assert not h.source.paused


def test_events_set_aside_count_against_neither_the_cap_nor_the_low_water_mark() -> None:
    buffer = BufferAccount(max_events=10, max_bytes=10_000, resume_ratio=0.5)
    for _ in range(10):
        buffer.add(100)
    assert buffer.over()
    buffer.set_aside(6, 600)
    assert not buffer.over()
    assert buffer.drained()
    buffer.set_aside(0, 0)
    assert buffer.over()


def test_a_stalled_account_within_its_share_pauses_nothing() -> None:
    h = Harness()
    h.dispatcher.stalled[STALLED] = 401
    # The share is half the low-water mark: 25 of 50 events.
    h.hold(STALLED, 0, 24)
    h.backpressure.apply()
    assert h.source.held == frozenset()
    assert h.buffer.aside_events == 0


def test_a_stalled_account_over_its_share_pauses_only_its_partitions() -> None:
    h = Harness()
    h.dispatcher.stalled[STALLED] = 401
    h.hold(STALLED, 0, 60)
    h.hold(STALLED, 1, 30)
    h.hold(WORKING, 2, 10)
    h.backpressure.apply()
    assert h.source.held == {("clicks", 0), ("clicks", 1)}
    # 90 events against a share of 25: the 65 beyond it no longer count against the others.
    assert (h.buffer.aside_events, h.buffer.aside_bytes) == (65, 65 * SIZE)
    assert not h.source.paused, "100 events held, 35 of them counted: the others keep flowing"


def test_healing_resumes_the_isolated_partitions() -> None:
    h = Harness()
    h.dispatcher.stalled[STALLED] = 403
    h.hold(STALLED, 0, 40)
    h.backpressure.apply()
    assert h.source.held == {("clicks", 0)}
    del h.dispatcher.stalled[STALLED]
    h.backpressure.apply()
    assert h.source.held == frozenset()
    assert (h.buffer.aside_events, h.buffer.aside_bytes) == (0, 0)


def test_new_partitions_of_a_stalled_account_are_found_at_the_next_rescan() -> None:
    h = Harness()
    h.dispatcher.stalled[STALLED] = 401
    h.hold(STALLED, 0, 30)
    h.backpressure.apply()
    h.hold(STALLED, 3, 5)
    h.clock.now += STALLED_RESCAN_S / 2
    h.backpressure.apply()
    assert h.source.held == {("clicks", 0)}, "not looked up again before the rescan interval"
    h.clock.now += STALLED_RESCAN_S / 2
    h.backpressure.apply()
    assert h.source.held == {("clicks", 0), ("clicks", 3)}
    assert h.buffer.aside_events == 35 - 25
