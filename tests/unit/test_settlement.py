"""Settlement: commits advance over settled prefixes only, through revocations and losses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
from prometheus_client import CollectorRegistry

from stream.backpressure import BufferAccount
from stream.dispatcher import Failure
from stream.metrics import Metrics
from stream.models import PinterestEvent, SourceRecord
from stream.offsets import TopicPartitionKey
from stream.settlement import Settlement

TP = ("clicks", 0)
OTHER = ("clicks", 1)
SIZE = 100
# Long enough never to run out in a test that expects the partitions' events to settle in time.
NO_TIMEOUT_S = 60.0
# A revocation in a test that leaves events unsettled waits this long before giving up on them.
SHORT_GRACE_S = 0.05

EVENT = PinterestEvent("e-1", "checkout", "web", 1_700_000_000, None, b"{}")


class FakeSource:
    """Records commits like the broker would keep them; `refuse` drops the next one (a rebalance
    happened since its generation)."""

    def __init__(self) -> None:
        self.generation = 0
        self.refuse = False
        self.calls: list[dict[TopicPartitionKey, int]] = []
        self.committed: dict[TopicPartitionKey, int] = {}

    async def commit(self, positions: Mapping[TopicPartitionKey, int], generation: int) -> bool:
        if self.refuse or generation != self.generation:
            self.refuse = False
            return False
        self.calls.append(dict(positions))
        self.committed.update(positions)
        return True


class FakeDeadLetters:
    """Keeps each dead letter's acknowledgement for the test to give (or withhold)."""

    def __init__(self) -> None:
        self.sent: list[tuple[SourceRecord, str, Callable[[], None]]] = []

    def send(
        self,
        record: SourceRecord,
        reason: str,
        message: str,
        on_acked: Callable[[], None],
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        self.sent.append((record, reason, on_acked))


class Harness:
    def __init__(self, grace_period_s: float) -> None:
        self.source = FakeSource()
        self.dead_letters = FakeDeadLetters()
        self.buffer = BufferAccount(max_events=1000, max_bytes=10**9, resume_ratio=0.5)
        self.flushed = asyncio.Event()
        self.registry = CollectorRegistry()
        self.settlement = Settlement(
            self.source,
            self.dead_letters,
            Metrics(self.registry),
            self.buffer,
            self.flushed.set,
            grace_period_s,
        )

    def consume(self, tp: TopicPartitionKey, *offsets: int) -> list[SourceRecord]:
        """What the consume loop does with a poll: track, then hold in the buffer."""
        records = [SourceRecord(*tp, offset, None, b"v", None) for offset in offsets]
        tickets = []
        for record, epoch in zip(records, self.settlement.track(records), strict=True):
            if epoch is not None:
                record.epoch, record.size = epoch, SIZE
                tickets.append(record)
        self.buffer.add(SIZE * len(tickets), len(tickets))
        return tickets

    def deliver(self, *tickets: SourceRecord) -> None:
        self.settlement.delivered("1", [EVENT] * len(tickets), [(ticket,) for ticket in tickets])

    # The rebalance callbacks block the consumer thread while the loop does the work.

    async def assign(self, *tps: TopicPartitionKey) -> None:
        await asyncio.to_thread(self.settlement.assigned, list(tps))

    def revoke(self, *tps: TopicPartitionKey) -> asyncio.Task[Mapping[TopicPartitionKey, int]]:
        return asyncio.create_task(asyncio.to_thread(self.settlement.revoked, list(tps)))

    async def lose(self, *tps: TopicPartitionKey) -> None:
        await asyncio.to_thread(self.settlement.lost, list(tps))


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness(NO_TIMEOUT_S)
    h.settlement.start()
    yield h
    await h.settlement.close()


@pytest.fixture
async def impatient() -> AsyncIterator[Harness]:
    h = Harness(SHORT_GRACE_S)
    h.settlement.start()
    yield h
    await h.settlement.close()


async def test_out_of_order_settlement_commits_only_the_contiguous_settled_prefix(
    harness: Harness,
) -> None:
    await harness.assign(TP)
    t = harness.consume(TP, 0, 1, 2, 3, 4)
    harness.deliver(t[3], t[1])
    await harness.settlement.commit()
    assert harness.source.committed == {}, "offset 0 is not settled yet"
    harness.deliver(t[0])
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 2}
    harness.deliver(t[2])
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 4}
    harness.deliver(t[4])
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 5}
    assert harness.buffer.events == 0
    assert harness.buffer.bytes == 0


async def test_copies_of_one_event_settle_together(harness: Harness) -> None:
    await harness.assign(TP)
    t = harness.consume(TP, 0, 1, 2)
    harness.settlement.delivered("1", [EVENT], [(t[2], t[0])])
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 1}
    assert harness.buffer.events == 1
    # Each consumed copy counts as a delivered message.
    labels = {"event_name": EVENT.event_name, "action_source": EVENT.action_source}
    delivered = harness.registry.get_sample_value(
        "capi_stream_events_total", {**labels, "outcome": "delivered"}
    )
    assert delivered == 2


async def test_a_dead_letter_settles_only_once_the_broker_acknowledges_it(
    harness: Harness,
) -> None:
    await harness.assign(TP)
    t = harness.consume(TP, 0, 1, 2)
    harness.settlement.dead_letter(t[0], "decode_error", "not JSON", None, 0)
    harness.settlement.failed(EVENT, (t[1],), Failure("rejected_by_pinterest", "bad", 200, 1))
    harness.settlement.skipped(t[2])
    [(first, reason, acked_first), (second, _, acked_second)] = harness.dead_letters.sent
    assert (first.offset, reason, second.offset) == (0, "decode_error", 1)
    await harness.settlement.commit()
    assert harness.source.committed == {}, "no dead letter acknowledged yet"
    acked_first()
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 1}
    acked_second()
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 3}
    assert harness.settlement.summary() == (
        "0 events delivered, 2 dead-lettered (decode_error 1, rejected_by_pinterest 1), 1 skipped"
    )


async def test_a_commit_dropped_by_a_rebalance_is_made_again(harness: Harness) -> None:
    await harness.assign(TP)
    harness.deliver(*harness.consume(TP, 0, 1))
    harness.source.refuse = True
    await harness.settlement.commit()
    assert harness.source.committed == {}
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 2}
    calls = len(harness.source.calls)
    await harness.settlement.commit()
    assert len(harness.source.calls) == calls, "nothing moved: nothing to commit"


async def test_revoke_flushes_then_waits_for_the_partitions_events_to_settle(
    harness: Harness,
) -> None:
    await harness.assign(TP, OTHER)
    t = harness.consume(TP, 0, 1, 2)
    harness.deliver(t[0])
    revoking = harness.revoke(TP)
    await harness.flushed.wait()
    assert not revoking.done()
    harness.deliver(t[2], t[1])
    assert await revoking == {TP: 3}
    assert harness.settlement.tracker.assigned() == [OTHER]


async def test_revoke_mid_flight_gives_up_after_the_grace_period_with_the_settled_prefix(
    impatient: Harness,
) -> None:
    h = impatient
    await h.assign(TP, OTHER)
    t = h.consume(TP, 0, 1, 2, 3)
    other = h.consume(OTHER, 7)
    h.deliver(t[0], t[1], t[3])
    assert await h.revoke(TP) == {TP: 2}, "offset 2 never settled"
    h.deliver(t[2])
    h.deliver(*other)
    await h.settlement.commit()
    assert h.source.committed == {OTHER: 8}, "the revoked partition is no longer committed"
    assert h.buffer.events == 0, "a late result still frees its memory"


async def test_revoke_commits_nothing_already_committed(harness: Harness) -> None:
    await harness.assign(TP)
    harness.deliver(*harness.consume(TP, 0, 1))
    await harness.settlement.commit()
    assert await harness.revoke(TP) == {}


async def test_lost_partitions_commit_nothing_even_when_their_events_settle(
    harness: Harness,
) -> None:
    await harness.assign(TP, OTHER)
    t = harness.consume(TP, 0, 1, 2)
    harness.deliver(t[0])
    await harness.settlement.commit()
    assert harness.source.committed == {TP: 1}
    await harness.lose(TP)
    calls = len(harness.source.calls)
    harness.deliver(t[1], t[2])
    await harness.settlement.commit()
    assert harness.source.calls[calls:] == []
    assert harness.source.committed == {TP: 1}
    assert not harness.flushed.is_set(), "lost partitions are not drained"
    assert harness.settlement.unsettled() == 0


async def test_a_late_result_after_a_new_epoch_never_moves_the_commit(impatient: Harness) -> None:
    h = impatient
    await h.assign(TP)
    old = h.consume(TP, 0, 1, 2)
    assert await h.revoke(TP) == {}
    await h.assign(TP)
    new = h.consume(TP, 0, 1, 2)
    assert [ticket.epoch for ticket in new] != [ticket.epoch for ticket in old]
    h.deliver(*old)
    await h.settlement.commit()
    assert h.source.committed == {}, "results of the earlier assignment are discarded"
    h.deliver(new[0])
    await h.settlement.commit()
    assert h.source.committed == {TP: 1}


async def test_rebalance_callbacks_before_start_commit_nothing() -> None:
    h = Harness(NO_TIMEOUT_S)
    h.settlement.assigned([TP])
    assert h.settlement.revoked([TP]) == {}
    assert h.settlement.tracker.assigned() == []


async def test_close_commits_what_is_settled_and_then_lets_go_without_waiting(
    harness: Harness,
) -> None:
    await harness.assign(TP)
    t = harness.consume(TP, 0, 1)
    harness.deliver(t[0])
    await harness.settlement.close()
    assert harness.source.committed == {TP: 1}
    assert await harness.revoke(TP) == {}, "offset 1 is unsettled and never waited for"
    assert not harness.flushed.is_set()
