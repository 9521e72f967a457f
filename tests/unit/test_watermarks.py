"""The watermark query (identity restore, DLQ commands) rides out a leader not known yet."""

from __future__ import annotations

from typing import cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream.watermarks import LEADER_RETRY_S, WATERMARKS_TIMEOUT_S, watermarks


class Reader:
    """Answers with each error in turn, then with the offsets."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.asked = 0

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 42


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


CHANGELOG = TopicPartition("g-orders-identity-changelog", 0)


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    ],
)
def test_a_leader_not_known_yet_is_asked_again(code: int) -> None:
    # Seen in CI: a changelog created a moment before its first restore.
    reader, clock = Reader(code, code), Clock()
    assert watermarks(cast(Consumer, reader), CHANGELOG, clock, clock.sleep) == (3, 42)
    assert reader.asked == 3
    assert clock.now == pytest.approx(2 * LEADER_RETRY_S)


def test_any_other_error_fails_at_once() -> None:
    reader, clock = Reader(KafkaError.TOPIC_AUTHORIZATION_FAILED), Clock()
    with pytest.raises(KafkaException) as raised:
        watermarks(cast(Consumer, reader), CHANGELOG, clock, clock.sleep)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert reader.asked == 1


def test_a_leader_that_never_comes_fails_after_the_timeout() -> None:
    reader = Reader(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    clock = Clock()
    with pytest.raises(KafkaException):
        watermarks(cast(Consumer, reader), CHANGELOG, clock, clock.sleep)
    assert clock.now >= WATERMARKS_TIMEOUT_S
    assert reader.asked == pytest.approx(WATERMARKS_TIMEOUT_S / LEADER_RETRY_S + 1, abs=1)
