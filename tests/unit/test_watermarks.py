"""The watermark query (identity restore, DLQ commands) rides out a leader not known yet."""

from __future__ import annotations

from typing import cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream.watermarks import LEADER_RETRY_S, MIN_ASK_S, WATERMARKS_TIMEOUT_S, watermarks


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Reader:
    """Answers with each error in turn, then with the offsets; an error given as a number of
    seconds is an ask that hangs that long (capped by its timeout, as librdkafka's is) and
    then times out."""

    def __init__(self, *errors: int | float, clock: Clock | None = None) -> None:
        self.errors = list(errors)
        self.clock = clock
        self.asked = 0
        self.timeouts: list[float] = []

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        self.timeouts.append(timeout)
        if self.errors:
            error = self.errors.pop(0)
            if isinstance(error, float):
                assert self.clock is not None
                self.clock.sleep(min(error, timeout))
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
            raise KafkaException(KafkaError(error))
        return 3, 42


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


def test_an_ask_that_hangs_after_transient_errors_ends_within_the_one_timeout() -> None:
    # Each ask used to get the whole timeout: 25 s of a leader moving, then an ask that hangs,
    # took 55 s. The asks share one deadline instead.
    clock = Clock()
    moving = [KafkaError.NOT_LEADER_FOR_PARTITION] * int(25.0 / LEADER_RETRY_S)
    reader = Reader(*moving, 3600.0, clock=clock)
    with pytest.raises(KafkaException) as raised:
        watermarks(cast(Consumer, reader), CHANGELOG, clock, clock.sleep)
    assert raised.value.args[0].code() == KafkaError._TIMED_OUT
    assert clock.now <= WATERMARKS_TIMEOUT_S + LEADER_RETRY_S
    assert reader.timeouts[0] == WATERMARKS_TIMEOUT_S
    assert reader.timeouts[-1] == pytest.approx(WATERMARKS_TIMEOUT_S - 25.0, abs=LEADER_RETRY_S)


def test_an_ask_at_the_deadline_still_gets_a_round_trip() -> None:
    clock = Clock()
    moving = [KafkaError.LEADER_NOT_AVAILABLE] * int(WATERMARKS_TIMEOUT_S / LEADER_RETRY_S - 1)
    reader = Reader(*moving, clock=clock)
    assert watermarks(cast(Consumer, reader), CHANGELOG, clock, clock.sleep) == (3, 42)
    assert min(reader.timeouts) >= MIN_ASK_S
