"""The dispatcher against a scripted sender (no network, no Kafka)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream.batcher import Batch, BatchKey
from stream.dispatcher import Dispatcher, Failure
from stream.metrics import Metrics
from stream.models import PinterestEvent
from stream.pinterest.classify import ApiResponse
from stream.retry import Backoff

KEY = BatchKey("549764106778")


def event(event_id: str) -> PinterestEvent:
    body = orjson.dumps({"event_id": event_id, "event_name": "checkout"})
    return PinterestEvent(event_id, "checkout", "web", 1_700_000_000, None, body)


def batch(*ids: str) -> Batch[str]:
    return Batch(KEY, tuple(event(i) for i in ids), tuple((i,) for i in ids))


def answer(*statuses: str, status: int = 200) -> ApiResponse:
    events = [{"status": s, "error_message": "bad" if s == "failed" else ""} for s in statuses]
    return ApiResponse(status, orjson.dumps({"events": events}))


class ScriptedSender:
    """Answers each request with `respond(ids in the request)`; records every request."""

    def __init__(self, respond: Callable[[list[str]], ApiResponse]) -> None:
        self.respond = respond
        self.requests: list[list[str]] = []

    async def send(self, ad_account_id: str, test: bool, body: bytes) -> ApiResponse:
        ids = [e["event_id"] for e in orjson.loads(body)["data"]]
        self.requests.append(ids)
        await asyncio.sleep(0)
        return self.respond(ids)


class Recorder:
    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.failed: dict[str, Failure] = {}

    def delivered_(self, event: PinterestEvent, tokens: tuple[str, ...]) -> None:
        self.delivered.extend(tokens)

    def failed_(self, event: PinterestEvent, tokens: tuple[str, ...], failure: Failure) -> None:
        for token in tokens:
            self.failed[token] = failure


class Outcomes:
    def __init__(self, recorder: Recorder) -> None:
        self.delivered = recorder.delivered_
        self.failed = recorder.failed_


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def dispatcher(
    sender: ScriptedSender, recorder: Recorder, budget_s: float = 900.0
) -> tuple[Dispatcher[str], Metrics]:
    metrics = Metrics(CollectorRegistry())
    return (
        Dispatcher(
            sender,
            Outcomes(recorder),
            Backoff(0.5, 60.0, budget_s, rng=random.Random(1)),
            metrics,
            initial_concurrency=2,
            max_concurrency=4,
            setup_error_probe_s=30.0,
            sleep=no_sleep,
        ),
        metrics,
    )


async def settle(d: Dispatcher[str]) -> None:
    for _ in range(10_000):
        if not d.active_batches:
            return
        await asyncio.sleep(0)
    pytest.fail("batches never settled")


async def test_partial_failure_settles_each_event_once_and_resends_nothing() -> None:
    sender = ScriptedSender(
        lambda ids: answer(*("failed" if i == "b" else "processed" for i in ids))
    )
    recorder = Recorder()
    d, _ = dispatcher(sender, recorder)
    d.submit(batch("a", "b", "c"))
    await settle(d)
    assert sender.requests == [["a", "b", "c"]]
    assert recorder.delivered == ["a", "c"]
    assert recorder.failed == {"b": Failure("rejected_by_pinterest", "bad", 200, 1)}


async def test_transient_errors_retry_then_dead_letter_as_retries_exhausted() -> None:
    loop_clock = [0.0]
    sender = ScriptedSender(lambda ids: ApiResponse(503, b'{"code":4197,"message":"ramped"}'))
    recorder = Recorder()
    metrics = Metrics(CollectorRegistry())

    async def advancing_sleep(seconds: float) -> None:
        loop_clock[0] += seconds
        await asyncio.sleep(0)

    backoff = Backoff(0.5, 4.0, 20.0, rng=random.Random(3), clock=lambda: loop_clock[0])
    d: Dispatcher[str] = Dispatcher(
        sender,
        Outcomes(recorder),
        backoff,
        metrics,
        initial_concurrency=1,
        max_concurrency=1,
        setup_error_probe_s=30.0,
        sleep=advancing_sleep,
    )
    d.submit(batch("a"))
    await settle(d)
    failure = recorder.failed["a"]
    assert failure.reason == "retries_exhausted"
    assert failure.status == 503
    assert failure.attempts == len(sender.requests) > 3
    assert loop_clock[0] == pytest.approx(20.0)
    assert (
        metrics.registry.get_sample_value("capi_stream_retries_total", {"reason": "server_error"})
        == len(sender.requests) - 1
    )


async def test_recovery_after_retries_delivers() -> None:
    answers = iter([ApiResponse(None, error="timeout"), ApiResponse(429, b""), answer("processed")])
    sender = ScriptedSender(lambda ids: next(answers))
    recorder = Recorder()
    d, _ = dispatcher(sender, recorder)
    d.submit(batch("a"))
    await settle(d)
    assert recorder.delivered == ["a"]
    assert len(sender.requests) == 3


async def test_bisection_isolates_the_events_a_400_is_about() -> None:
    def respond(ids: list[str]) -> ApiResponse:
        if "e3" in ids or "e6" in ids:
            return ApiResponse(400, b'{"code":1,"message":"Invalid request"}')
        return answer(*("processed" for _ in ids))

    sender = ScriptedSender(respond)
    recorder = Recorder()
    d, _ = dispatcher(sender, recorder)
    ids = [f"e{n}" for n in range(8)]
    d.submit(batch(*ids))
    await settle(d)
    assert sorted(recorder.failed) == ["e3", "e6"]
    assert {f.reason for f in recorder.failed.values()} == {"request_invalid"}
    assert sorted(recorder.delivered) == sorted(set(ids) - {"e3", "e6"})
    delivered_requests = [r for r in sender.requests if "e3" not in r and "e6" not in r]
    assert sorted(i for r in delivered_requests for i in r) == sorted(recorder.delivered)


async def test_setup_error_sends_only_probes_and_never_dead_letters() -> None:
    revoked = [True]
    sender = ScriptedSender(
        lambda ids: (
            ApiResponse(401, b'{"code":2,"message":"Authentication failed."}')
            if revoked[0]
            else answer(*("processed" for _ in ids))
        )
    )
    recorder = Recorder()
    probes: list[float] = []

    async def probe_sleep(seconds: float) -> None:
        probes.append(seconds)
        if len(probes) == 3:
            revoked[0] = False
        await asyncio.sleep(0)

    metrics = Metrics(CollectorRegistry())
    d: Dispatcher[str] = Dispatcher(
        sender,
        Outcomes(recorder),
        Backoff(0.5, 60.0, 900.0),
        metrics,
        initial_concurrency=1,
        max_concurrency=1,
        setup_error_probe_s=30.0,
        sleep=probe_sleep,
    )
    for n in range(5):
        d.submit(batch(f"e{n}"))
    for _ in range(200):
        await asyncio.sleep(0)
        if d.setup_errors():
            break
    assert d.setup_errors() == {KEY.ad_account_id: 401}
    await settle(d)
    assert recorder.failed == {}
    assert sorted(recorder.delivered) == [f"e{n}" for n in range(5)]
    assert set(probes) == {30.0}
    # The first failure, one probe per interval, then each waiting batch once: no storm.
    assert len(sender.requests) == 1 + len(probes) + 4
    assert d.setup_errors() == {}
    assert (
        metrics.registry.get_sample_value(
            "capi_stream_setup_error", {"ad_account": KEY.ad_account_id}
        )
        == 0
    )


async def test_a_429_with_a_hint_holds_every_request_of_the_account() -> None:
    sender = ScriptedSender(lambda ids: ApiResponse(429, b"", {"Retry-After": "9"}))
    recorder = Recorder()
    d, _ = dispatcher(sender, recorder)
    d.submit(batch("a"))
    d.submit(batch("b"))
    for _ in range(1000):
        await asyncio.sleep(0)
    # The first 429 (and the request already in flight beside it) hold the account: the fake
    # sleep returns at once, yet no further request goes out before the 9 s hold ends.
    assert len(sender.requests) <= 2
    assert recorder.delivered == []
    assert recorder.failed == {}
    await d.cancel()
