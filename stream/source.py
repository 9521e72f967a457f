"""Consumes source topics in batches off the event loop; pause/resume and rebalance hooks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream.credentials import REFUSED_CREDENTIALS
from stream.errors import ConfigurationError
from stream.logs import RateLimitedLogger
from stream.models import SourceRecord
from stream.offsets import TopicPartitionKey

log = logging.getLogger(__name__)

TIMESTAMP_NOT_AVAILABLE = 0

# Defaults a deployment may override through kafka.properties.
DEFAULT_CONSUMER_CONFIG = {
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    # librdkafka's prefetch is memory we do not count: keep it bounded (16 MiB).
    "queued.max.messages.kbytes": "16384",
    "fetch.max.bytes": "16777216",
    # With the queue full, librdkafka waits fetch.queue.backoff.ms (1 s by default) before the
    # next fetch: a consume + transform loop then idles 0.7-1.1 s at a time and reaches ~57k
    # msg/s where its CPU allows ~89k; at 10 ms it runs ~94k with no empty polls (issue 20).
    "fetch.queue.backoff.ms": "10",
    "statistics.interval.ms": "5000",
}
# Offsets are committed only by us, only for settled messages: never overridable.
FORCED_CONSUMER_CONFIG = {"enable.auto.commit": "false", "enable.auto.offset.store": "false"}
# Refused credentials never heal by retrying with the same password: unless
# kafka.sasl_password_file changes meanwhile (then the consumer reconnects with the new one), the
# run fails so the operator sees it. A broker that has just started may refuse briefly before its
# SCRAM credentials are loaded, so only a refusal that lasts this long without an assignment or
# a message counts.
REFUSED_CREDENTIALS_GRACE_S = 10.0
# Metadata for the partition share is usually cached; a rebalance callback must stay short.
SHARE_METADATA_TIMEOUT_S = 2.0


class RebalanceListener(Protocol):
    """Called on the consumer thread, inside `poll` or `close`.

    `revoked` may block while in-flight work drains and returns the positions to commit before
    the partitions are released; `lost` partitions already belong to someone else.
    """

    def assigned(self, partitions: list[TopicPartitionKey]) -> None: ...

    def revoked(self, partitions: list[TopicPartitionKey]) -> Mapping[TopicPartitionKey, int]: ...

    def lost(self, partitions: list[TopicPartitionKey]) -> None: ...


class KafkaSource:
    """A confluent-kafka consumer driven from one dedicated thread.

    Every consumer call (consume, commit, pause, close) runs on that thread, so rebalance
    callbacks never race with a commit. `generation` changes on every rebalance; a commit
    computed before one is dropped rather than applied to a changed assignment.
    """

    def __init__(
        self,
        client_config: Mapping[str, str],
        group_id: str,
        topics: list[str],
        on_statistics: Callable[[str], None] | None = None,
        reread_password: Callable[[], str | None] | None = None,
    ) -> None:
        config: dict[str, Any] = {
            **DEFAULT_CONSUMER_CONFIG,
            **client_config,
            "group.id": group_id,
            **FORCED_CONSUMER_CONFIG,
        }
        config["error_cb"] = self._on_error
        if on_statistics is not None:
            config["stats_cb"] = on_statistics
        else:
            config.pop("statistics.interval.ms", None)
        self._config = config
        self._topics = topics
        self._reread_password = reread_password
        # Given to start(): the listener commits through this source, so it is built later.
        self._listener: RebalanceListener
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        # Only the consumer thread logs through it: a broker outage repeats the same errors.
        self._storms = RateLimitedLogger(log)
        self._consumer: Consumer | None = None
        self._want_paused = False
        self._held: frozenset[TopicPartitionKey] = frozenset()
        self._paused: set[TopicPartitionKey] = set()
        self._refused: KafkaError | None = None
        self._refused_since: float | None = None
        self.generation = 0
        self.assignment: set[TopicPartitionKey] = set()
        # True once the group coordinator has given this member its share, even an empty one
        # (cooperative-sticky calls on_assign with no partitions); False again once lost.
        self.joined = False
        # This member's part of the subscribed topics' partitions (1.0 until known).
        self.partition_share = 1.0
        self._share_stale = False

    @property
    def paused_partitions(self) -> int:
        return len(self._paused)

    async def start(self, listener: RebalanceListener) -> None:
        """Subscribes; `listener` hears of every assignment change from then on."""
        self._listener = listener
        await self._call(self._start)

    async def poll(self, max_messages: int, timeout_s: float) -> list[SourceRecord]:
        records: list[SourceRecord] = await self._call(self._poll, max_messages, timeout_s)
        return records

    def pause(self) -> None:
        """Stops fetching every assigned partition from the next poll on (still polling)."""
        self._want_paused = True

    def resume(self) -> None:
        self._want_paused = False

    def hold(self, partitions: frozenset[TopicPartitionKey]) -> None:
        """Keeps just these partitions paused, whatever `pause`/`resume` say of the others."""
        self._held = partitions

    async def commit(self, positions: Mapping[TopicPartitionKey, int], generation: int) -> bool:
        """Commits synchronously; False when a rebalance happened since `generation`."""
        if not positions:
            return True
        committed: bool = await self._call(self._commit, dict(positions), generation)
        return committed

    async def close(self) -> None:
        if self._consumer is not None:
            await self._call(self._close)
        self._executor.shutdown(wait=True)

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    # Everything below runs on the consumer thread.

    def _start(self) -> None:
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _poll(self, max_messages: int, timeout_s: float) -> list[SourceRecord]:
        consumer = self._consumer
        if consumer is None:
            return []
        self._apply_pause(consumer)
        records = []
        for message in consumer.consume(max_messages, timeout_s):
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                self._storms.warning(f"consumer:{error.code()}", "consumer error: %s", error.str())
                continue
            records.append(_record(message))
        if self._share_stale:
            self._measure_share(consumer)
        if records:
            self._refused_since = None
        refused = self._refused_since is not None or self._refused is not None
        if refused and self._rotated_password(consumer):
            return records
        if self._refused is not None:
            raise KafkaException(self._refused)
        return records

    def _rotated_password(self, consumer: Consumer) -> bool:
        """While Kafka refuses the credentials, a new password in kafka.sasl_password_file (a
        rotated Kubernetes Secret) is taken up by a new consumer; True when that happened."""
        if self._reread_password is None:
            return False
        try:
            password = self._reread_password()
        except ConfigurationError:
            return False  # mid-rotation the file may be briefly missing or empty
        if password is None or password == self._config.get("sasl.password"):
            return False
        log.warning(
            "Kafka refuses the credentials and kafka.sasl_password_file changed: reconnecting"
        )
        self._config["sasl.password"] = password
        consumer.close()
        self._consumer = None
        self._refused = None
        self._refused_since = None
        self._start()
        return True

    def _apply_pause(self, consumer: Consumer) -> None:
        wanted = self.assignment if self._want_paused else self._held & self.assignment
        new = wanted - self._paused
        if new:
            consumer.pause([TopicPartition(t, p) for t, p in new])
            self._paused |= new
        done = self._paused - wanted
        if done:
            consumer.resume([TopicPartition(t, p) for t, p in done])
            self._paused -= done

    def _commit(self, positions: dict[TopicPartitionKey, int], generation: int) -> bool:
        consumer = self._consumer
        if consumer is None or generation != self.generation:
            return False
        owned = {key: offset for key, offset in positions.items() if key in self.assignment}
        return self._commit_now(consumer, owned)

    def _commit_now(self, consumer: Consumer, positions: Mapping[TopicPartitionKey, int]) -> bool:
        if not positions:
            return True
        offsets = [TopicPartition(t, p, offset) for (t, p), offset in positions.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed: %s", exc.args[0].str() if exc.args else exc)
            return False
        return True

    def _close(self) -> None:
        consumer = self._consumer
        self._consumer = None
        if consumer is not None:
            consumer.close()

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka reports connection-level errors here, not through consume(); the others
        # (brokers down, timeouts) it keeps retrying by itself.
        if error.code() not in REFUSED_CREDENTIALS or self._refused is not None:
            return
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
            log.warning("Kafka refused the credentials: %s", error.str())
        elif now - self._refused_since >= REFUSED_CREDENTIALS_GRACE_S:
            log.error(
                "Kafka kept refusing the credentials for %.0fs: %s",
                now - self._refused_since,
                error.str(),
            )
            self._refused = error

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._refused_since = None
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.generation += 1
        self.assignment.update(keys)
        self.joined = True
        self._share_stale = True
        log.info("assigned %d partitions: %s", len(keys), _describe(keys))
        self._listener.assigned(keys)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.generation += 1
        if not keys:
            return
        log.info("revoking %d partitions: %s", len(keys), _describe(keys))
        positions = self._listener.revoked(keys)
        self._commit_now(consumer, positions)
        self._forget(keys)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.generation += 1
        self.joined = False
        log.warning("lost %d partitions: %s", len(keys), _describe(keys))
        self._listener.lost(keys)
        self._forget(keys)

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        self.assignment.difference_update(keys)
        self._paused.difference_update(keys)
        self._share_stale = True

    def _measure_share(self, consumer: Consumer) -> None:
        # Called from _poll, never from a rebalance callback: confluent-kafka aborts on a
        # consumer call made inside one of its own callbacks.
        self._share_stale = False
        total = 0
        for topic in self._topics:
            try:
                metadata = consumer.list_topics(topic, timeout=SHARE_METADATA_TIMEOUT_S)
            except KafkaException:
                return  # keep the last share: the next rebalance measures again
            found = metadata.topics.get(topic)
            total += len(found.partitions) if found is not None and found.error is None else 0
        if total:
            self.partition_share = len(self.assignment) / total


def _record(message: Message) -> SourceRecord:
    kind, timestamp = message.timestamp()
    # Only error events lack a topic, partition or offset, and those never get here. No cast():
    # a call per field is ~0.05 µs each, a fifth of building the record (issue 20). A consumed
    # message's headers are always a list of (name, value) pairs, or None.
    return SourceRecord(
        message.topic(),  # type: ignore[arg-type]
        message.partition(),  # type: ignore[arg-type]
        message.offset(),  # type: ignore[arg-type]
        message.key(),
        message.value(),
        None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
        message.headers(),  # type: ignore[arg-type]
    )


def _describe(keys: list[TopicPartitionKey]) -> str:
    return ", ".join(f"{topic}[{partition}]" for topic, partition in sorted(keys))
