"""The pure pieces behind the pressure behaviours: credential refresh and held events."""

from __future__ import annotations

import asyncio
import random

from prometheus_client import CollectorRegistry

from stream.dispatcher import Dispatcher
from stream.metrics import Metrics
from stream.pinterest.classify import ApiResponse
from stream.retry import Backoff
from tests.unit.test_dispatcher import (
    KEY,
    Outcomes,
    Recorder,
    ScriptedSender,
    answer,
    batch,
    no_sleep,
    settle,
)


def refreshing_dispatcher(
    sender: ScriptedSender, recorder: Recorder, refresh: list[bool]
) -> Dispatcher[str]:
    """A dispatcher whose credential refresh answers from `refresh` (True: a new token)."""
    return Dispatcher(
        sender,
        Outcomes(recorder),
        Backoff(0.5, 60.0, 900.0, rng=random.Random(1)),
        Metrics(CollectorRegistry()),
        initial_concurrency=1,
        max_concurrency=1,
        setup_error_probe_s=30.0,
        refresh_credentials=lambda: refresh.pop(0) if refresh else False,
        sleep=no_sleep,
    )


async def test_a_401_with_a_rotated_token_is_retried_at_once_without_a_setup_error() -> None:
    answers = [ApiResponse(401, b'{"code":2,"message":"Authentication failed."}')]
    sender = ScriptedSender(lambda ids: answers.pop(0) if answers else answer("processed"))
    recorder = Recorder()
    refresh = [True]
    d = refreshing_dispatcher(sender, recorder, refresh)
    d.submit(batch("a"))
    await settle(d)
    assert sender.requests == [["a"], ["a"]]
    assert recorder.delivered == ["a"]
    assert refresh == [], "the token was re-read"
    assert d.setup_errors() == {}


async def test_a_401_with_the_same_token_is_a_setup_error() -> None:
    sender = ScriptedSender(lambda ids: ApiResponse(401, b"{}"))
    recorder = Recorder()
    d = refreshing_dispatcher(sender, recorder, [False])
    d.submit(batch("a"))
    for _ in range(100):
        if d.setup_errors():
            break
        await asyncio.sleep(0)
    assert d.setup_errors() == {KEY.ad_account_id: 401}
    assert recorder.failed == {}
    assert d.held_events(KEY.ad_account_id) == 1
    assert d.partitions_feeding(KEY.ad_account_id, lambda token: ((token, 0), 1)) == (
        frozenset({("a", 0)}),
        1,
        1,
    )
    await d.cancel()
    assert d.held_events(KEY.ad_account_id) == 0
