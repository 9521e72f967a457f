"""Asks a partition's low and high offsets, again while its leader is not known yet."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

WATERMARKS_TIMEOUT_S: Final = 30.0
# A topic just created, or whose leader is moving (a broker restarting), answers these for a
# moment; asking again until WATERMARKS_TIMEOUT_S rides that out instead of failing a
# partition's assignment (the identity restore) or an operator's command (the DLQ tools, which
# are likely run right after an outage).
TRANSIENT_LEADER_ERRORS: Final = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)
LEADER_RETRY_S: Final = 0.2
# The last ask, made just before the deadline, still gets a round trip's time.
MIN_ASK_S: Final = 1.0


def watermarks(
    reader: Consumer,
    partition: TopicPartition,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, int]:
    """The partition's (low, high) offsets; any other error, or one that lasts, is raised.

    All asks share one WATERMARKS_TIMEOUT_S: each gets only the time left, so an ask that hangs
    after a few transient errors cannot stretch the whole to twice the timeout.
    """
    deadline = clock() + WATERMARKS_TIMEOUT_S
    while True:
        left = max(deadline - clock(), MIN_ASK_S)
        try:
            low, high = reader.get_watermark_offsets(partition, timeout=left)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in TRANSIENT_LEADER_ERRORS or clock() >= deadline:
                raise
            sleep(LEADER_RETRY_S)
            continue
        return low, high
