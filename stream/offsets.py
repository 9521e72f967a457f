"""Per-partition settled-offset tracking: yields the contiguous prefix that may be committed."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from stream.models import SourceRecord

TopicPartitionKey = tuple[str, int]


class _Partition:
    __slots__ = ("committed", "epoch", "last_tracked", "pending", "position", "settled")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        # Offsets in consumption order; a deque because settles mostly arrive near the head.
        self.pending: deque[int] = deque()
        self.settled: set[int] = set()
        self.position: int | None = None
        self.committed: int | None = None
        self.last_tracked = -1


class OffsetTracker:
    """Tracks every consumed offset until it is settled, per assigned partition.

    Guarantees: `commit_positions()` never returns an offset above an unsettled one, whatever
    order settlements arrive in; each assignment of a partition gets a new epoch, and settlements
    carrying an older epoch (late results for a partition that was revoked or lost) are ignored,
    so they can never be committed.
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _Partition] = {}
        self._next_epoch = 1

    def assign(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for key in partitions:
            self._partitions[key] = _Partition(self._next_epoch)
            self._next_epoch += 1

    def revoke(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Forgets the partitions; returns their final positions not yet committed."""
        final: dict[TopicPartitionKey, int] = {}
        for key in partitions:
            state = self._partitions.pop(key, None)
            if state is None or state.position is None:
                continue
            if state.position != state.committed:
                final[key] = state.position
        return final

    def lose(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Forgets the partitions without committing anything: another member owns them now."""
        for key in partitions:
            self._partitions.pop(key, None)

    def assigned(self) -> list[TopicPartitionKey]:
        return list(self._partitions)

    def track(self, topic: str, partition: int, offset: int) -> int | None:
        """Registers a consumed offset; returns the epoch to settle it with, None if unassigned."""
        return self.track_all([SourceRecord(topic, partition, offset, None, None, None)])[0]

    def track_all(self, records: Sequence[SourceRecord]) -> list[int | None]:
        """`track` for each record of a poll, in order: the epochs, None where not to process."""
        epochs: list[int | None] = []
        append = epochs.append
        for record, state in self._with_states(records):
            offset = record.offset
            if state is None or offset <= state.last_tracked:
                # Unassigned, or a re-fetch (seek, resume) repeating offsets already in flight:
                # process each offset once.
                append(None)
                continue
            state.last_tracked = offset
            state.pending.append(offset)
            append(state.epoch)
        return epochs

    def settle(self, topic: str, partition: int, epoch: int, offset: int) -> None:
        self.settle_all([SourceRecord(topic, partition, offset, None, None, None, epoch=epoch)])

    def settle_all(self, records: Iterable[SourceRecord]) -> None:
        """Marks each record's offset done; records of an older assignment (epoch) are ignored."""
        for record, state in self._with_states(records):
            if state is None or state.epoch != record.epoch:
                continue
            offset = record.offset
            pending = state.pending
            if not pending or offset < pending[0]:
                continue
            if offset != pending[0]:
                state.settled.add(offset)
                continue
            pending.popleft()
            position = offset + 1
            settled = state.settled
            while pending and pending[0] in settled:
                head = pending.popleft()
                settled.discard(head)
                position = head + 1
            state.position = position

    def _with_states(
        self, records: Iterable[SourceRecord]
    ) -> Iterator[tuple[SourceRecord, _Partition | None]]:
        """Each record with its partition's state, None if unassigned. Polls and answers come in
        runs of one partition: the state is looked up once per run, not per record."""
        partitions = self._partitions
        topic: str | None = None
        partition = -1
        state: _Partition | None = None
        for record in records:
            if record.partition != partition or record.topic != topic:
                topic = record.topic
                partition = record.partition
                state = partitions.get((topic, partition))
            yield record, state

    def commit_positions(self) -> dict[TopicPartitionKey, int]:
        """Committable positions (last settled contiguous offset + 1) that changed since commit."""
        return {
            key: state.position
            for key, state in self._partitions.items()
            if state.position is not None and state.position != state.committed
        }

    def mark_committed(self, positions: dict[TopicPartitionKey, int]) -> None:
        for key, position in positions.items():
            state = self._partitions.get(key)
            if state is not None:
                state.committed = position

    def unsettled(self, partitions: Iterable[TopicPartitionKey] | None = None) -> int:
        keys = self._partitions if partitions is None else partitions
        total = 0
        for key in keys:
            state = self._partitions.get(key)
            if state is not None:
                total += len(state.pending)
        return total
