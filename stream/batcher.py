"""Groups events per (ad account, test flag) into requests bounded by count, bytes and linger."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from stream.models import PinterestEvent

T = TypeVar("T")

REQUEST_PREFIX = b'{"data":['
REQUEST_SUFFIX = b"]}"
REQUEST_OVERHEAD = len(REQUEST_PREFIX) + len(REQUEST_SUFFIX)


class BatchKey(NamedTuple):
    """Requests go to one ad account, with or without `?test=true`.

    A NamedTuple rather than a frozen dataclass: it is hashed for every event added, and a
    tuple's hash is C (60 ns) where a dataclass's is a Python method (210 ns).
    """

    ad_account_id: str
    test: bool = False


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """Distinct events of one request; `tokens[i]` are the consumed copies `events[i]` settles.

    Copies with the same event_id and event_name are sent once and settle together, except
    offline events: Pinterest never deduplicates those, so two of them are two conversions.
    """

    key: BatchKey
    events: tuple[PinterestEvent, ...]
    tokens: tuple[tuple[T, ...], ...]

    def body(self) -> bytes:
        return REQUEST_PREFIX + b",".join([event.body for event in self.events]) + REQUEST_SUFFIX

    @property
    def copies(self) -> int:
        return sum(len(tokens) for tokens in self.tokens)

    def halves(self) -> tuple[Batch[T], Batch[T]]:
        """Splits the batch in two (to find the events a whole-request 400 is about)."""
        middle = len(self.events) // 2
        return (
            Batch(self.key, self.events[:middle], self.tokens[:middle]),
            Batch(self.key, self.events[middle:], self.tokens[middle:]),
        )


class _OpenBatch(Generic[T]):
    __slots__ = ("events", "index", "merged", "opened_at", "size", "tokens")

    def __init__(self, opened_at: float) -> None:
        self.events: list[PinterestEvent] = []
        # Each event's first copy, in the tuple the sealed batch holds; the copies merged into
        # it (rare) wait in `merged` until sealing, so no per-event container is copied then.
        self.tokens: list[tuple[T, ...]] = []
        self.merged: dict[int, list[T]] = {}
        self.index: dict[tuple[str, str], int] = {}
        self.size = REQUEST_OVERHEAD
        self.opened_at = opened_at


class Batcher(Generic[T]):
    """Accumulates events per key; a batch is emitted when the next event would exceed
    `max_events` or `max_bytes` (of the encoded request), or when it has waited `linger_s`.

    An event larger than `max_bytes` on its own still goes out, alone in its batch: Pinterest
    documents no byte limit, so the limit only shapes requests and never rejects an event.
    """

    def __init__(
        self,
        max_events: int,
        max_bytes: int,
        linger_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._linger_s = linger_s
        self._clock = clock
        self._open: dict[BatchKey, _OpenBatch[T]] = {}

    def add(self, key: BatchKey, event: PinterestEvent, token: T) -> Batch[T] | None:
        """Adds one event; returns a batch that became complete, if any."""
        current = self._open.get(key)
        identity = (event.event_id, event.event_name)
        mergeable = event.action_source != "offline"
        if current is None:
            current = self._open[key] = _OpenBatch(self._clock())
        elif mergeable:
            position = current.index.get(identity)
            if position is not None:
                current.merged.setdefault(position, []).append(token)
                return None
        emitted: Batch[T] | None = None
        grown = current.size + len(event.body) + (1 if current.events else 0)
        if current.events and grown > self._max_bytes:
            emitted = self._seal(key, current)
            current = self._open[key] = _OpenBatch(self._clock())
            grown = current.size + len(event.body)
        if mergeable:
            current.index[identity] = len(current.events)
        current.events.append(event)
        current.tokens.append((token,))
        current.size = grown
        if len(current.events) >= self._max_events or grown >= self._max_bytes:
            if emitted is not None:
                # Only an oversized single event gets here right after a seal; keep it for
                # the next call so each add returns at most one batch.
                return emitted
            del self._open[key]
            return self._seal(key, current)
        if emitted is not None:
            return emitted
        return None

    def next_due(self) -> float | None:
        """Clock time at which the oldest open batch reaches its linger, if any."""
        if not self._open:
            return None
        return min(batch.opened_at for batch in self._open.values()) + self._linger_s

    def due(self) -> list[Batch[T]]:
        """Removes and returns every batch that has waited its linger."""
        limit = self._clock() - self._linger_s
        keys = [key for key, batch in self._open.items() if batch.opened_at <= limit]
        return [self._seal(key, self._open.pop(key)) for key in keys]

    def flush(self) -> list[Batch[T]]:
        """Removes and returns every open batch (shutdown, revoke)."""
        batches = [self._seal(key, batch) for key, batch in self._open.items()]
        self._open.clear()
        return batches

    def pending_events(self) -> int:
        return sum(len(batch.events) for batch in self._open.values())

    @staticmethod
    def _seal(key: BatchKey, batch: _OpenBatch[T]) -> Batch[T]:
        tokens = batch.tokens
        for position, copies in batch.merged.items():
            tokens[position] = (*tokens[position], *copies)
        return Batch(key, tuple(batch.events), tuple(tokens))
