"""The dispatcher against a scripted sender (no network, no Kafka)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream.batcher import Batch, BatchKey
from stream.dispatcher import Dispatcher, Failure
from stream.metrics import Metrics
from stream.models import PinterestEvent
from stream.pinterest.classify import ApiResponse
from stream.retry import Backoff
from stream.validate import MAX_AGE_S

KEY = BatchKey("549764106778")


def event(event_id: str, event_time: float | None = None) -> PinterestEvent:
    """An event; by default it happened just now, so retrying it never makes it too old."""
    body = orjson.dumps({"event_id": event_id, "event_name": "checkout"})
    when = int(time.time() if event_time is None else event_time)
    return PinterestEvent(event_id, "checkout", "web", when, None, body)


def batch(*ids: str, key: BatchKey = KEY, event_time: float | None = None) -> Batch[str]:
    return Batch(key, tuple(event(i, event_time) for i in ids), tuple((i,) for i in ids))


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

    def delivered_(
        self,
        account: str,
        events: Sequence[PinterestEvent],
        tokens: Sequence[tuple[str, ...]],
    ) -> None:
        assert len(events) == len(tokens)
        for copies in tokens:
            self.delivered.extend(copies)

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


class FakeTime:
    """One injected clock for the dispatcher (Unix time) and the backoff; only `sleep` and the
    sender move it, so a test of hours of outage runs in milliseconds."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def timed_dispatcher(
    sender: ScriptedSender,
    recorder: Recorder,
    clock: FakeTime,
    budget_s: float | None,
    *,
    concurrency: int = 4,
    probe_s: float = 30.0,
    ad_accounts: frozenset[str] | None = None,
) -> tuple[Dispatcher[str], Metrics]:
    metrics = Metrics(CollectorRegistry())
    d: Dispatcher[str] = Dispatcher(
        sender,
        Outcomes(recorder),
        Backoff(0.5, 60.0, budget_s, rng=random.Random(2), clock=clock),
        metrics,
        initial_concurrency=concurrency,
        max_concurrency=concurrency,
        setup_error_probe_s=probe_s,
        ad_accounts=ad_accounts,
        clock=clock,
        sleep=clock.sleep,
    )
    return d, metrics


async def test_setup_error_pauses_spend_no_retry_budget() -> None:
    """The issue's probe: budget 1 s, three 401s over 1.5 s, then a 503: the 503 is retried."""
    script = [ApiResponse(401, b'{"code":2,"message":"Authentication failed."}')] * 3
    script.append(ApiResponse(503, b'{"code":4197,"message":"ramped"}'))
    sender = ScriptedSender(
        lambda ids: script.pop(0) if script else answer("processed", "processed")
    )
    recorder = Recorder()
    clock = FakeTime()
    d, _ = timed_dispatcher(sender, recorder, clock, 1.0, probe_s=0.5)
    started = clock.now
    d.submit(batch("a", "b", event_time=clock.now))
    await settle(d)
    assert recorder.failed == {}
    assert sorted(recorder.delivered) == ["a", "b"]
    assert len(sender.requests) == 5
    assert clock.now - started >= 1.5
    assert d.setup_errors() == {}


async def test_queueing_for_a_slot_spends_no_retry_budget() -> None:
    """One slot; the first batch's request takes 10 s while the second queues for the slot,
    then the second meets a 503: with a 1 s budget it is still retried, and delivered."""
    clock = FakeTime()
    failed_once: set[str] = set()

    def respond(ids: list[str]) -> ApiResponse:
        if ids == ["slow"]:
            clock.now += 10.0
            return answer("processed")
        if ids[0] not in failed_once:
            failed_once.add(ids[0])
            return ApiResponse(503)
        return answer("processed")

    sender = ScriptedSender(respond)
    recorder = Recorder()
    d, _ = timed_dispatcher(sender, recorder, clock, 1.0, concurrency=1)
    failed_once.add("slow")
    d.submit(batch("slow", event_time=clock.now))
    d.submit(batch("queued", event_time=clock.now))
    await settle(d)
    assert recorder.failed == {}
    assert sorted(recorder.delivered) == ["queued", "slow"]
    assert sender.requests == [["slow"], ["queued"], ["queued"]]


async def test_an_outage_far_longer_than_the_old_budget_is_retried_until_it_ends() -> None:
    """Three hours of 503s and timeouts without a budget: nothing is dead-lettered, and every
    event is delivered once Pinterest answers again."""
    clock = FakeTime()
    end = clock.now + 3 * 3600

    def respond(ids: list[str]) -> ApiResponse:
        if clock.now < end:
            clock.now += 5.0
            return (
                ApiResponse(503) if len(sender.requests) % 2 else ApiResponse(None, error="timeout")
            )
        return answer(*("processed" for _ in ids))

    sender = ScriptedSender(respond)
    recorder = Recorder()
    d, metrics = timed_dispatcher(sender, recorder, clock, None)
    d.submit(batch("a", "b", event_time=clock.now))
    d.submit(batch("c", event_time=clock.now - 6 * 24 * 3600))
    await settle(d)
    assert recorder.failed == {}
    assert sorted(recorder.delivered) == ["a", "b", "c"]
    assert clock.now >= end
    retries = sum(
        metrics.registry.get_sample_value("capi_stream_retries_total", {"reason": reason}) or 0
        for reason in ("server_error", "timeout")
    )
    assert retries == len(sender.requests) - 2 > 3 * 3600 / 65


async def test_events_near_the_age_limit_age_out_as_too_old_and_the_rest_retry() -> None:
    """A batch mixing ages meets a two-hour outage: the event one hour from Pinterest's limit
    is dead-lettered as too_old before it, alone; the others are delivered afterwards and the
    aged-out event is never sent again."""
    clock = FakeTime()
    end = clock.now + 2 * 3600

    def respond(ids: list[str]) -> ApiResponse:
        if clock.now < end:
            return ApiResponse(503)
        return answer(*("processed" for _ in ids))

    sender = ScriptedSender(respond)
    recorder = Recorder()
    d, _ = timed_dispatcher(sender, recorder, clock, None)
    old = event("old", clock.now - MAX_AGE_S + 3600)
    young = event("young", clock.now - MAX_AGE_S + 3 * 3600)
    new = event("new", clock.now)
    d.submit(Batch(KEY, (old, young, new), (("old",), ("young",), ("new",))))
    await settle(d)
    assert list(recorder.failed) == ["old"]
    failure = recorder.failed["old"]
    assert failure.reason == "too_old"
    assert failure.status == 503
    assert failure.message.startswith("event_time: older than 7 days")
    assert sorted(recorder.delivered) == ["new", "young"]
    last_with_old = max(n for n, ids in enumerate(sender.requests) if "old" in ids)
    assert failure.attempts == last_with_old + 1
    assert all(ids == ["young", "new"] for ids in sender.requests[last_with_old + 1 :])


async def test_a_batch_for_an_unconfigured_account_is_dead_lettered_without_state() -> None:
    sender = ScriptedSender(lambda ids: answer(*("processed" for _ in ids)))
    recorder = Recorder()
    clock = FakeTime()
    d, metrics = timed_dispatcher(
        sender, recorder, clock, None, ad_accounts=frozenset({KEY.ad_account_id})
    )
    stranger = BatchKey("123456789")
    d.submit(batch("x", "y", key=stranger))
    d.submit(batch("a"))
    await settle(d)
    assert sender.requests == [["a"]]
    assert recorder.delivered == ["a"]
    assert sorted(recorder.failed) == ["x", "y"]
    failure = recorder.failed["x"]
    assert failure.reason == "invalid_event"
    assert "ad_account_id" in failure.message
    assert stranger.ad_account_id not in failure.message
    assert d.held_events(stranger.ad_account_id) == 0
    with pytest.raises(KeyError):
        d.account(stranger.ad_account_id)
    labelled = {
        sample.labels.get("ad_account")
        for family in metrics.registry.collect()
        for sample in family.samples
    }
    assert KEY.ad_account_id in labelled
    assert stranger.ad_account_id not in labelled


async def test_warned_events_are_counted_per_event_once_per_distinct_note() -> None:
    notes = {"a": "external_id is missing", "b": "", "c": "external_id is missing", "d": "x"}

    def respond(ids: list[str]) -> ApiResponse:
        events = [{"status": "processed", "warning_message": notes[i]} for i in ids]
        return ApiResponse(200, orjson.dumps({"events": events}))

    recorder = Recorder()
    d, metrics = dispatcher(ScriptedSender(respond), recorder)
    d.submit(batch("a", "b", "c", "d"))
    await settle(d)
    assert recorder.delivered == ["a", "b", "c", "d"]
    warned = {
        sample.labels["warning"]: sample.value
        for family in metrics.pinterest_warnings.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["ad_account"] == KEY.ad_account_id
    }
    assert warned == {"external_id_missing": 2.0, "other": 1.0}
