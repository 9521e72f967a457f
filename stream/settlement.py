"""Settles every consumed message (delivered, dead-lettered or skipped) and commits the offsets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, Protocol, TypeVar

from stream.backpressure import BufferAccount
from stream.dispatcher import Failure
from stream.dlq.contract import DeadLetterReason
from stream.metrics import UNKNOWN, Metrics
from stream.models import PinterestEvent, SourceRecord
from stream.offsets import OffsetTracker, TopicPartitionKey

R = TypeVar("R")

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
DRAIN_POLL_S = 0.01
# How much longer than the grace period the consumer thread waits for a rebalance's handling.
REBALANCE_MARGIN_S = 5.0
_TIMESTAMP_MS = attrgetter("timestamp_ms")
_SIZE = attrgetter("size")


class Committer(Protocol):
    """The source as settlement sees it: a commit is dropped if a rebalance came in between."""

    @property
    def generation(self) -> int: ...

    async def commit(self, positions: Mapping[TopicPartitionKey, int], generation: int) -> bool: ...


class DeadLetters(Protocol):
    """Writes a dead letter and calls `on_acked` once (and only once) the broker has it."""

    def send(
        self,
        record: SourceRecord,
        reason: str,
        message: str,
        on_acked: Callable[[], None],
        status: int | None = None,
        attempts: int = 0,
    ) -> None: ...


class Settlement:
    """The at-least-once core: the dispatcher's `Outcomes` and the source's `RebalanceListener`.

    Guarantees: an offset is committed only after every message at or below it was delivered,
    acknowledged by the dead-letter topic, or skipped; commits advance per partition over the
    contiguous settled prefix. On revocation the open batches are flushed and the partitions'
    events get `grace_period_s` to settle before their settled prefix is committed; lost
    partitions commit nothing. Results for a partition arriving after it was revoked or lost,
    even if it was assigned again since, never move its commit (each assignment is an epoch).

    Everything but the three rebalance callbacks runs on the event loop; those run on the
    consumer thread and hand their work to the loop, which owns all pipeline state.
    """

    def __init__(
        self,
        source: Committer,
        dead_letters: DeadLetters,
        metrics: Metrics,
        buffer: BufferAccount,
        flush: Callable[[], None],
        grace_period_s: float,
        before_commit: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """`flush` sends every open batch to the dispatcher now (before a revocation);
        `before_commit`, awaited at every commit tick, must answer True before settled offsets
        are committed (the identity changelog holds every change the settled messages made)."""
        self.tracker = OffsetTracker()
        self._source = source
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._buffer = buffer
        self._flush = flush
        self._grace_period_s = grace_period_s
        self._before_commit = before_commit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commits: asyncio.Task[None] | None = None
        self._closing = False
        # Settled by this process, for the shutdown summary.
        self._delivered = 0
        self._skipped = 0
        self._dead_lettered: dict[str, int] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Binds to the running loop and commits every COMMIT_INTERVAL_S from now on."""
        self._loop = asyncio.get_running_loop()
        self._commits = asyncio.create_task(self._commit_loop(), name="commit")

    async def close(self) -> None:
        """Stops the periodic commits, commits what is settled; later revocations just let go."""
        if self._commits is not None:
            self._commits.cancel()
            await asyncio.gather(self._commits, return_exceptions=True)
            self._commits = None
        await self.commit()
        self._closing = True

    def unsettled(self) -> int:
        return self.tracker.unsettled()

    def summary(self) -> str:
        """What this process settled: delivered, dead-lettered (per reason) and skipped."""
        dead_lettered = sum(self._dead_lettered.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self._dead_lettered.items()))
        return (
            f"{self._delivered} events delivered, {dead_lettered} dead-lettered"
            f"{f' ({reasons})' if dead_lettered else ''}, {self._skipped} skipped"
        )

    # --- consuming -----------------------------------------------------------------------------

    def track(self, records: Sequence[SourceRecord]) -> list[int | None]:
        """Registers a poll's records; their epochs, None for those not to process."""
        return self.tracker.track_all(records)

    def skipped(self, record: SourceRecord) -> None:
        """The message is deliberately not sent (by configuration)."""
        self._settle(record)
        self._skipped += 1
        self._metrics.event_skipped()

    def dead_letter(
        self,
        record: SourceRecord,
        reason: DeadLetterReason,
        message: str,
        status: int | None,
        attempts: int,
        event_name: str = UNKNOWN,
        action_source: str = UNKNOWN,
    ) -> None:
        """Sends the message to the dead-letter topic; it settles when the broker acknowledges."""

        def acked() -> None:
            self._metrics.event_dead_lettered(reason, event_name, action_source)
            self._dead_lettered[reason] = self._dead_lettered.get(reason, 0) + 1
            self._settle(record)

        self._dead_letters.send(record, reason, message, acked, status=status, attempts=attempts)

    def _settle(self, record: SourceRecord) -> None:
        self.tracker.settle_all((record,))
        self._buffer.release(record.size)

    # --- the dispatcher's Outcomes -------------------------------------------------------------

    def delivered(
        self,
        ad_account_id: str,
        events: Sequence[PinterestEvent],
        tokens: Sequence[tuple[SourceRecord, ...]],
    ) -> None:
        # Once per answer, not per event: this is where every delivered message ends.
        records = list(chain.from_iterable(tokens))
        self.tracker.settle_all(records)
        if len(records) != len(events):  # an event consumed more than once counts per copy
            events = [event for event, copies in zip(events, tokens, strict=True) for _ in copies]
        self._metrics.events_delivered(
            ad_account_id, events, map(_TIMESTAMP_MS, records), time.time()
        )
        self._delivered += len(records)
        self._buffer.release(sum(map(_SIZE, records)), len(records))

    def failed(
        self, event: PinterestEvent, tokens: tuple[SourceRecord, ...], failure: Failure
    ) -> None:
        for record in tokens:
            self.dead_letter(
                record,
                failure.reason,
                failure.message,
                failure.status,
                failure.attempts,
                event.event_name,
                event.action_source,
            )

    # --- committing ----------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit()

    async def commit(self) -> None:
        """Commits each partition's settled prefix that moved since its last commit."""
        generation = self._source.generation
        positions = self.tracker.commit_positions()
        # The positions are taken first: every message below them was ingested, so whatever it
        # wrote is in what `before_commit` waits for. It runs at every tick, even with nothing
        # to commit (the identity state also applies forget requests then).
        if self._before_commit is not None and not await self._before_commit():
            return
        if positions and await self._source.commit(positions, generation):
            self.tracker.mark_committed(positions)

    # --- the source's RebalanceListener (called on the consumer thread) ------------------------

    def assigned(self, partitions: list[TopicPartitionKey]) -> None:
        self._on_loop(self._assigned(partitions))

    def revoked(self, partitions: list[TopicPartitionKey]) -> Mapping[TopicPartitionKey, int]:
        positions = self._on_loop(self._revoked(partitions))
        return positions or {}

    def lost(self, partitions: list[TopicPartitionKey]) -> None:
        self._on_loop(self._lost(partitions))

    def _on_loop(self, work: Coroutine[Any, Any, R]) -> R | None:
        """Runs `work` on the event loop and waits for it (the loop owns all pipeline state)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            work.close()
            return None
        future = asyncio.run_coroutine_threadsafe(work, loop)
        try:
            return future.result(self._grace_period_s + REBALANCE_MARGIN_S)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            # Committing nothing is the safe answer: the next owner re-reads from the last commit.
            log.error("rebalance handling timed out; nothing committed for these partitions")
            future.cancel()
            return None

    async def _assigned(self, partitions: list[TopicPartitionKey]) -> None:
        self.tracker.assign(partitions)
        self._metrics.partitions_assigned(len(self.tracker.assigned()))

    async def _revoked(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        keys = set(partitions)
        if not self._closing:
            # Partial batches may hold these partitions' events: send them now, then give the
            # in-flight work a bounded time to settle before committing and letting go.
            self._flush()
            await wait_until(lambda: not self.tracker.unsettled(keys), self._grace_period_s)
        positions = self.tracker.revoke(keys)
        self._forget(keys)
        return positions

    async def _lost(self, partitions: list[TopicPartitionKey]) -> None:
        self.tracker.lose(partitions)
        self._forget(set(partitions))

    def _forget(self, keys: set[TopicPartitionKey]) -> None:
        self._metrics.partitions_revoked(keys)
        self._metrics.partitions_assigned(len(self.tracker.assigned()))


async def wait_until(condition: Callable[[], bool], limit_s: float) -> bool:
    """Polls `condition` until true or `limit_s` passed; settlements have no single event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(DRAIN_POLL_S)
    return True
