"""Bounds the events held in memory: pauses consumption over the cap, isolates stalled accounts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from stream.metrics import Metrics
from stream.offsets import TopicPartitionKey

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

log = logging.getLogger(__name__)

# An ad account in setup error may hold this share of the buffer's low-water mark; beyond it
# the partitions its events come from are paused, so the other accounts keep the rest.
STALLED_SHARE = 0.5
# How often the partitions feeding a stalled account are looked up again (new ones may appear).
STALLED_RESCAN_S = 1.0


class BufferAccount:
    """Counts the events and bytes held in memory from consumption until settlement.

    `over()` says consumption must pause; `drained()` that it may resume (under the low-water
    mark, `resume_ratio` of both caps), so pausing does not flap around one threshold.

    Events set aside (`set_aside`) are left out of both checks: they belong to an ad account
    whose partitions are paused on their own, so they cannot grow, and counting them would keep
    every other account paused until that one heals.
    """

    __slots__ = (
        "aside_bytes",
        "aside_events",
        "bytes",
        "events",
        "max_bytes",
        "max_events",
        "resume_bytes",
        "resume_events",
    )

    def __init__(self, max_events: int, max_bytes: int, resume_ratio: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.resume_events = int(max_events * resume_ratio)
        self.resume_bytes = int(max_bytes * resume_ratio)
        self.events = 0
        self.bytes = 0
        self.aside_events = 0
        self.aside_bytes = 0

    def set_aside(self, events: int, size: int) -> None:
        self.aside_events = events
        self.aside_bytes = size

    def add(self, size: int, events: int = 1) -> None:
        self.events += events
        self.bytes += size

    def release(self, size: int, events: int = 1) -> None:
        self.events -= events
        self.bytes -= size

    def over(self) -> bool:
        return (
            self.events - self.aside_events >= self.max_events
            or self.bytes - self.aside_bytes >= self.max_bytes
        )

    def drained(self) -> bool:
        return (
            self.events - self.aside_events <= self.resume_events
            and self.bytes - self.aside_bytes <= self.resume_bytes
        )


class Pausable(Protocol):
    """The source as backpressure sees it; pausing never leaves the consumer group."""

    @property
    def paused_partitions(self) -> int: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def hold(self, partitions: frozenset[TopicPartitionKey]) -> None: ...


class Holdings(Protocol[T_co]):
    """The dispatcher as backpressure sees it: what each ad account holds and why it stalls."""

    def setup_errors(self) -> Mapping[str, int | None]: ...

    def held_events(self, ad_account_id: str) -> int: ...

    def partitions_feeding(
        self, ad_account_id: str, origin: Callable[[T_co], tuple[TopicPartitionKey, int]]
    ) -> tuple[frozenset[TopicPartitionKey], int, int]: ...


class Backpressure(Generic[T]):
    """Pauses consumption while the buffer is over its cap and resumes it under the low-water
    mark only; pauses just the partitions feeding an ad account stalled by a setup error once it
    holds its share of the buffer, and resumes them once the account heals.

    A partition that also carries events of working accounts is paused too: its offsets cannot
    be committed past the stalled events anyway, and its memory must stay bounded.
    """

    def __init__(
        self,
        buffer: BufferAccount,
        source: Pausable,
        dispatcher: Holdings[T],
        metrics: Metrics,
        origin: Callable[[T], tuple[TopicPartitionKey, int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`origin` tells a dispatcher token's partition and its size in the buffer."""
        self._buffer = buffer
        self._source = source
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._origin = origin
        self._clock = clock
        self.paused = False
        self._isolated: dict[str, frozenset[TopicPartitionKey]] = {}
        self._next_rescan = 0.0

    def apply(self) -> None:
        """Pauses or resumes as the buffer and the ad accounts' health demand (once per poll)."""
        self._isolate_stalled_accounts()
        buffer = self._buffer
        if not self.paused and buffer.over():
            self.paused = True
            self._source.pause()
            log.info("buffer full (%d events, %d bytes): pausing", buffer.events, buffer.bytes)
        elif self.paused and buffer.drained():
            self.paused = False
            self._source.resume()
            log.info("buffer drained (%d events): resuming", buffer.events)
        self._metrics.partitions_paused(self._source.paused_partitions)

    def _isolate_stalled_accounts(self) -> None:
        dispatcher = self._dispatcher
        stalled = dispatcher.setup_errors()
        if not stalled and not self._isolated:
            return
        share = int(self._buffer.resume_events * STALLED_SHARE)
        over = {account for account in stalled if dispatcher.held_events(account) >= share}
        now = self._clock()
        if over == self._isolated.keys() and now < self._next_rescan:
            return
        self._next_rescan = now + STALLED_RESCAN_S
        isolated: dict[str, frozenset[TopicPartitionKey]] = {}
        aside_events = aside_bytes = 0
        for account in over:
            partitions, events, size = dispatcher.partitions_feeding(account, self._origin)
            isolated[account] = partitions
            if events > share:
                # Only what it holds beyond its share stops counting against the others.
                aside_events += events - share
                aside_bytes += size * (events - share) // events
            if account not in self._isolated:
                log.warning(
                    "ad account %s is paused by a setup error and holds %d events: pausing "
                    "the %d partitions they come from (%s); other accounts keep flowing",
                    account,
                    events,
                    len(partitions),
                    ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)),
                )
        for account in self._isolated.keys() - isolated.keys():
            log.info("ad account %s works again: resuming its partitions", account)
        self._isolated = isolated
        self._buffer.set_aside(aside_events, aside_bytes)
        self._source.hold(frozenset().union(*isolated.values()))
