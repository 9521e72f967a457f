"""Keeps the identity stores of the partitions a consumer owns, backed by compacted changelogs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, not in its stubs
    AdminClient,
    NewTopic,
)

from stream.credentials import RotatedPassword
from stream.errors import ConfigurationError
from stream.identity.rocks import RocksResources, RocksStore
from stream.logs import RateLimitedLogger
from stream.offsets import TopicPartitionKey
from stream.settings import Settings
from stream.source import RebalanceListener
from stream.watermarks import watermarks

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S: Final = 30.0
RESTORE_BATCH: Final = 10_000
RESTORE_POLL_S: Final = 1.0
# A restore that makes no progress this long gives up (the partition is then enriched from
# what the local store holds, and the changelog is read again at the next assignment).
RESTORE_STALL_S: Final = 60.0
TAIL_BATCH: Final = 1_000
# A commit waits at most this long for the changelog (and is tried again a second later).
COMMIT_FLUSH_S: Final = 10.0


class ChangeloggedStore:
    """One partition's RocksDB store whose every write also goes to its changelog partition."""

    def __init__(
        self, local: RocksStore, producer: Producer, changelog: str, partition: int
    ) -> None:
        self.local = local
        self.get = local.get
        self._put = local.put
        self._producer = producer
        self._changelog = changelog
        self._partition = partition

    def put(self, key: bytes, value: bytes) -> None:
        self._put(key, value)
        self._send(key, value)

    def delete(self, key: bytes) -> None:
        self.local.delete(key)
        self._send(key, None)

    def resend(self, key: bytes) -> None:
        """Writes the key's current value (or its absence) to the changelog again."""
        self._send(key, self.get(key))

    def _send(self, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(self._changelog, value, key, partition=self._partition)
                return
            except BufferError:
                # The local queue is full (it is flushed every second, so only under extreme
                # churn): wait for room rather than lose the change.
                self._producer.poll(0.1)


@dataclass(slots=True)
class Restores:
    """What restoring stores cost, for the metrics."""

    records: int = 0
    seconds: list[float] = field(default_factory=list)


class IdentityState:
    """The identity stores of this consumer's assigned partitions of enriched topics.

    On assignment (the consumer thread, before any of the partition's messages is handed out)
    each store is opened from `identity.state_dir` and caught up from its changelog partition,
    starting at the changelog offset the store last recorded (from the start when the directory
    is new or does not match the changelog). Every write goes to the changelog too; `flush`
    waits until the changelog has all of them, so it must succeed before source offsets are
    committed. Revoked and lost partitions' stores are closed (their files stay for a later
    assignment). The changelog is also tailed for tombstones written by `capi-stream identity
    forget`, so a forgotten user is forgotten by the running forwarder within a commit interval.
    """

    def __init__(
        self,
        settings: Settings,
        resources: RocksResources | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        kafka = settings.kafka
        self._settings = settings
        self._client_config: dict[str, str | int | float | bool] = {**kafka.client_config()}
        self._changelogs = {
            topic: settings.identity.changelog_topic(kafka.group_id, topic)
            for topic in settings.enriched_topics()
        }
        self._sources = {changelog: topic for topic, changelog in self._changelogs.items()}
        self._directory = settings.identity.state_dir / kafka.group_id
        self._ttl_s = settings.identity.ttl_days * 86_400
        self._resources = resources or RocksResources()
        self._clock = clock
        self.stores: dict[TopicPartitionKey, ChangeloggedStore] = {}
        self.restores = Restores()
        self.changelog_errors = 0
        self.forgotten = 0
        self._failed: list[tuple[str, int, bytes]] = []
        self._storms = RateLimitedLogger(log)
        self._rotated = RotatedPassword(self._client_config, kafka.password_file_reader())
        self._producer = Producer(
            {
                **self._client_config,
                "acks": "all",
                "enable.idempotence": "true",
                "linger.ms": "50",
                "compression.type": "zstd",
                "queue.buffering.max.messages": "1000000",
                "error_cb": self._on_error,
                "on_delivery": self._on_delivery,
            }
        )
        self._reader = Consumer(
            {
                **self._client_config,
                "group.id": f"{kafka.group_id}-identity-restore",
                "enable.auto.commit": "false",
                "enable.auto.offset.store": "false",
                "enable.partition.eof": "true",
                "error_cb": self._on_error,
            }
        )
        # The reader serves both the restore (consumer thread) and the tail (flush thread).
        self._reader_lock = threading.Lock()

    @property
    def enriched_topics(self) -> frozenset[str]:
        return frozenset(self._changelogs)

    # --- set-up --------------------------------------------------------------------------------

    def ensure_changelogs(self) -> None:
        """Creates missing changelog topics (compacted, deleting what is older than the TTL, as
        many partitions as their source topic); raises ConfigurationError if one exists with
        another partition count or cannot be created."""
        admin = AdminClient({**self._client_config})
        metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
        missing = []
        for topic, changelog in self._changelogs.items():
            source = metadata.topics.get(topic)
            if source is None or source.error is not None:
                raise ConfigurationError("sources", f"source topic {topic} does not exist")
            partitions = len(source.partitions)
            existing = metadata.topics.get(changelog)
            if existing is not None and existing.error is None:
                if len(existing.partitions) != partitions:
                    raise ConfigurationError(
                        "identity",
                        f"changelog topic {changelog} has {len(existing.partitions)} partitions, "
                        f"its source topic {topic} has {partitions}: they must be equal",
                    )
                continue
            missing.append(
                NewTopic(
                    changelog,
                    num_partitions=partitions,
                    replication_factor=self._settings.identity.changelog_replication_factor,
                    config={
                        "cleanup.policy": "compact,delete",
                        "retention.ms": str(int(self._ttl_s * 1000)),
                    },
                )
            )
        if not missing:
            return
        for changelog, future in admin.create_topics(missing).items():
            try:
                future.result(ADMIN_TIMEOUT_S)
                log.info("created identity changelog topic %s", changelog)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ConfigurationError(
                        "identity",
                        f"cannot create changelog topic {changelog} ({error.name()}): create it "
                        "compacted with as many partitions as its source topic",
                    ) from None

    # --- the consumer's assignment (consumer thread) -------------------------------------------

    def assigned(self, partitions: list[TopicPartitionKey]) -> None:
        """Opens and restores the stores of the newly assigned enriched partitions."""
        for key in partitions:
            topic, partition = key
            changelog = self._changelogs.get(topic)
            if changelog is None or key in self.stores:
                continue
            path = self._directory / f"{topic}-{partition}"
            local = RocksStore(path, self._resources, self._ttl_s)
            started = self._clock()
            with self._reader_lock:
                local = self._restore(local, path, changelog, partition)
            elapsed = self._clock() - started
            self.restores.seconds.append(elapsed)
            log.info("identity store of %s[%d] restored in %.2fs", topic, partition, elapsed)
            self.stores[key] = ChangeloggedStore(local, self._producer, changelog, partition)

    def released(self, partitions: list[TopicPartitionKey]) -> None:
        """Closes the stores of revoked or lost partitions (after their last commit)."""
        for key in partitions:
            store = self.stores.pop(key, None)
            if store is None:
                continue
            changelog = self._changelogs[key[0]]
            with self._reader_lock:
                self._reader.incremental_unassign([TopicPartition(changelog, key[1])])
            store.local.close()

    def _restore(self, local: RocksStore, path: Path, changelog: str, partition: int) -> RocksStore:
        low, high = watermarks(self._reader, TopicPartition(changelog, partition), self._clock)
        start = local.checkpoint()
        if start is not None and start > high:
            # The changelog was recreated: what the store holds no longer matches it.
            log.warning("identity store %s is ahead of its changelog; rebuilt from it", path)
            local.close()
            RocksStore.wipe(path)
            local = RocksStore(path, self._resources, self._ttl_s)
            start = None
        position = max(start or 0, low)
        self._reader.incremental_assign([TopicPartition(changelog, partition, position)])
        last_progress = self._clock()
        while position < high:
            messages = self._reader.consume(RESTORE_BATCH, RESTORE_POLL_S)
            for message in messages:
                error = message.error()
                mine = message.topic() == changelog and message.partition() == partition
                if not mine:
                    # The reader also tails the other owned partitions for tombstones.
                    self._tailed(message)
                elif error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        position = high  # compaction may have left gaps below it
                else:
                    self._apply(local, message, tombstones_only=False)
                    position = message.offset() + 1  # type: ignore[operator]
                    self.restores.records += 1
            if messages:
                last_progress = self._clock()
            elif self._clock() - last_progress > RESTORE_STALL_S:
                log.error("restoring %s[%d] stalled at offset %d", changelog, partition, position)
                break
        local.set_checkpoint(position)
        return local

    # --- before each commit (a worker thread) --------------------------------------------------

    async def flushed(self) -> bool:
        """`flush` off the event loop: Settlement's `before_commit`."""
        return await asyncio.to_thread(self.flush, COMMIT_FLUSH_S)

    def flush(self, timeout_s: float) -> bool:
        """True once the changelogs hold every write made so far (then offsets may be committed);
        applies forget tombstones found on the changelogs and records each store's position."""
        failed, self._failed = self._failed, []
        for changelog, partition, key in failed:
            store = self.stores.get((self._sources[changelog], partition))
            if store is not None:
                # The store holds the newest value: re-send that, not the failed one.
                store.resend(key)
        if self._producer.flush(timeout_s) > 0 or self._failed:
            return False
        self._tail()
        return True

    def _tail(self) -> None:
        with self._reader_lock:
            while True:
                messages = self._reader.consume(TAIL_BATCH, 0)
                if not messages:
                    break
                positions: dict[TopicPartitionKey, int] = {}
                for message in messages:
                    key = self._tailed(message)
                    if key is not None:
                        positions[key] = message.offset() + 1  # type: ignore[operator]
                for key, position in positions.items():
                    store = self.stores.get(key)
                    if store is not None:
                        store.local.set_checkpoint(position)

    def _tailed(self, message: Message) -> TopicPartitionKey | None:
        """Applies a tombstone read while tailing; the partition it came from, if owned."""
        if message.error() is not None:
            return None
        key = (self._sources.get(message.topic() or "", ""), message.partition() or 0)
        store = self.stores.get(key)
        if store is None:
            return None
        if message.value() is None:
            self._apply(store.local, message, tombstones_only=True)
            self.forgotten += 1
        return key

    @staticmethod
    def _apply(local: RocksStore, message: Message, *, tombstones_only: bool) -> None:
        key = message.key()
        if not isinstance(key, bytes):
            return
        value = message.value()
        if value is None:
            local.delete(key)
        elif not tombstones_only:
            local.put(key, value)

    # --- figures, errors, shutdown -------------------------------------------------------------

    def stored(self) -> tuple[int, int]:
        """Profiles (RocksDB's estimate) and disk bytes of the open stores."""
        keys = disk = 0
        for store in list(self.stores.values()):
            keys += store.local.estimated_keys()
            disk += store.local.disk_bytes()
        return keys, disk

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        """Failed changelog writes are re-sent at the next flush, which fails meanwhile."""
        key = message.key()
        if error is not None and isinstance(key, bytes):
            self.changelog_errors += 1
            self._failed.append((message.topic() or "", message.partition() or 0, key))
            self._storms.warning("delivery", "identity changelog write failed: %s", error.str())

    def _on_error(self, error: KafkaError) -> None:
        self._storms.warning(error.name(), "identity changelog: %s", error.str())
        # Both clients share this callback: a rotated password goes to both.
        self._rotated.on_error(
            error,
            "identity changelog clients",
            getattr(self, "_producer", None),
            getattr(self, "_reader", None),
        )

    def close(self) -> None:
        self.released(list(self.stores))
        self._producer.flush(ADMIN_TIMEOUT_S)
        self._reader.close()


class IdentityRebalance:
    """The source's rebalance listener when sources enrich: stores are restored before
    settlement hears of an assignment, and a revoked partition's offsets are committed only if
    its changelog writes are all delivered."""

    def __init__(self, settlement: RebalanceListener, state: IdentityState, flush_s: float) -> None:
        self._settlement = settlement
        self._state = state
        self._flush_s = flush_s

    def assigned(self, partitions: list[TopicPartitionKey]) -> None:
        self._state.assigned(partitions)
        self._settlement.assigned(partitions)

    def revoked(self, partitions: list[TopicPartitionKey]) -> Mapping[TopicPartitionKey, int]:
        positions = self._settlement.revoked(partitions)
        if positions and not self._state.flush(self._flush_s):
            log.error("identity changelog not flushed; nothing committed for these partitions")
            positions = {}
        self._state.released(partitions)
        return positions

    def lost(self, partitions: list[TopicPartitionKey]) -> None:
        self._settlement.lost(partitions)
        self._state.released(partitions)
