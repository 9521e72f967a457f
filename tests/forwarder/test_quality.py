"""The Event Quality Score poller against the real sandbox, alone and inside `capi-stream run`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics
from stream.quality import EqsClient, QualityPoller
from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import scenario
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess, valid_event

OTHER_ACCOUNT = "111"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(registry: CollectorRegistry) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
    }


def quality_value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, frozenset(labels.items())))


def delivery_samples(registry: CollectorRegistry) -> Samples:
    """Every capi-stream sample that is not the quality poller's own (delivery, readiness, setup
    errors); the process and platform collectors' figures change by themselves."""
    return {
        key: value
        for key, value in samples(registry).items()
        if key[0].startswith("capi_stream_") and not key[0].startswith("capi_stream_quality_")
    }


def poller(
    url: str, registry: CollectorRegistry, token: str, *accounts: str, timeout_s: float = 10.0
) -> QualityPoller:
    metrics = Metrics(registry)
    # A setup-error series exists before, so a change to it would show in the comparison.
    metrics.ad_account_registered(DEFAULT_AD_ACCOUNT, 4)
    return QualityPoller(
        EqsClient(url, timeout_s),
        metrics.quality,
        accounts or (DEFAULT_AD_ACCOUNT,),
        lambda: token,
        interval_s=3600,
        spacing_s=0.0,
    )


async def one_round(polling: QualityPoller) -> None:
    try:
        await asyncio.wait_for(polling.poll_once(), 30)
    finally:
        await polling.stop()


def errors(registry: CollectorRegistry, account: str = DEFAULT_AD_ACCOUNT) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples(registry).items()
        if name == "capi_stream_quality_poll_errors_total" and dict(labels)["ad_account"] == account
    }


async def test_poller_exports_status_and_components(sandbox: SandboxProcess) -> None:
    events = [valid_event(f"e{i}") for i in range(4)]
    del events[0]["user_data"]["em"]
    assert sandbox.send(events).status == 200
    registry = CollectorRegistry()
    await one_round(poller(sandbox.url, registry, sandbox.token))
    for lookback in ("1d", "14d"):
        labels = {
            "ad_account": DEFAULT_AD_ACCOUNT,
            "ingestion_source": "CONVERSIONS_API",
            "platform": "WEB",
            "lookback": lookback,
        }
        # valid_event has no click id, source URL or products: issues, hence FAIR.
        assert quality_value(registry, "capi_stream_quality_status", **labels) == 1.0
        email = {**labels, "component": "hashed_email", "event_name": "checkout"}
        assert quality_value(registry, "capi_stream_quality_coverage_ratio", **email) == 0.75
        assert quality_value(registry, "capi_stream_quality_issues", **email) == 0.0
        url = {**labels, "component": "source_url", "event_name": "checkout"}
        assert quality_value(registry, "capi_stream_quality_coverage_ratio", **url) == 0.0
        assert quality_value(registry, "capi_stream_quality_issues", **url) == 1.0
        last = quality_value(
            registry,
            "capi_stream_quality_last_success_timestamp_seconds",
            ad_account=DEFAULT_AD_ACCOUNT,
            lookback=lookback,
        )
        assert last is not None
        assert last > 0
    assert errors(registry) == {}


async def test_a_refused_token_is_counted_once_per_round_and_touches_nothing_else(
    sandbox: SandboxProcess,
) -> None:
    registry = CollectorRegistry()
    polling = poller(sandbox.url, registry, "not-the-token", DEFAULT_AD_ACCOUNT, OTHER_ACCOUNT)
    before = delivery_samples(registry)
    await one_round(polling)
    # The round stops at the first 401: the same token would fail for every other request.
    assert errors(registry) == {"unauthorized": 1.0}
    assert errors(registry, OTHER_ACCOUNT) == {}
    assert delivery_samples(registry) == before
    assert not [key for key in samples(registry) if key[0] == "capi_stream_quality_status"]


async def test_an_account_the_token_may_not_read_is_counted_and_the_others_are_read(
    sandbox_factory: Callable[..., SandboxProcess],
) -> None:
    sandbox = sandbox_factory("--ad-account", DEFAULT_AD_ACCOUNT)
    assert sandbox.send([valid_event()]).status == 200
    registry = CollectorRegistry()
    polling = poller(sandbox.url, registry, sandbox.token, OTHER_ACCOUNT, DEFAULT_AD_ACCOUNT)
    before = delivery_samples(registry)
    await one_round(polling)
    assert errors(registry, OTHER_ACCOUNT) == {"forbidden": 2.0}
    assert errors(registry) == {}
    status = {
        "ad_account": DEFAULT_AD_ACCOUNT,
        "ingestion_source": "CONVERSIONS_API",
        "platform": "WEB",
        "lookback": "14d",
    }
    assert quality_value(registry, "capi_stream_quality_status", **status) is not None
    assert delivery_samples(registry) == before


async def test_rate_limiting_ends_the_round_and_the_next_one_reads_again(
    sandbox: SandboxProcess,
) -> None:
    assert sandbox.send([valid_event()]).status == 200
    sandbox.set_faults(eqs_error=429)
    registry = CollectorRegistry()
    polling = poller(sandbox.url, registry, sandbox.token, DEFAULT_AD_ACCOUNT, OTHER_ACCOUNT)
    before = delivery_samples(registry)
    try:
        # The sandbox's 429 says x-ratelimit-reset: 1; the next round waits at least that long.
        assert await polling.poll_once() == 1.0
        assert errors(registry) == {"rate_limited": 1.0}
        assert errors(registry, OTHER_ACCOUNT) == {}
        sandbox.set_faults(eqs_error=None)
        assert await polling.poll_once() == 0.0
    finally:
        await polling.stop()
    assert errors(registry) == {"rate_limited": 1.0}
    assert quality_value(
        registry,
        "capi_stream_quality_status",
        ad_account=DEFAULT_AD_ACCOUNT,
        ingestion_source="CONVERSIONS_API",
        platform="WEB",
        lookback="1d",
    ) == pytest.approx(1.0)
    assert delivery_samples(registry) == before


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def test_timeouts_and_server_errors_are_counted(
    silent_server: str, sandbox: SandboxProcess
) -> None:
    registry = CollectorRegistry()
    await one_round(poller(silent_server, registry, "token", timeout_s=0.2))
    assert errors(registry) == {"timeout": 2.0}
    sandbox.set_faults(eqs_error=503)
    registry = CollectorRegistry()
    await one_round(poller(sandbox.url, registry, sandbox.token))
    assert errors(registry) == {"server_error": 2.0}


def test_forwarder_exports_pinterests_score_and_a_bad_quality_token_changes_nothing(
    kafka: Broker, new_topic: Callable[..., str], sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=19, count=300)
    quality: dict[str, Any] = {"enabled": True, "poll_interval_s": 1}
    with running_forwarder(run.config(sandbox, pinterest={"quality": quality}), tmp_path) as fwd:
        wait_until(run.committed, 60, "all offsets committed")

        def statuses() -> list[float]:
            return [
                value
                for key, value in fwd.metrics().items()
                if key.startswith("capi_stream_quality_status{")
                and 'ingestion_source="CONVERSIONS_API"' in key
                and 'platform="WEB"' in key
            ]

        wait_until(lambda: len(statuses()) == 2, 30, "the Event Quality Score on /metrics")
        assert set(statuses()) <= {0.0, 1.0, 2.0}
        assert fwd.metric("capi_stream_quality_coverage_ratio", component="ip_address") > 0
        assert fwd.readyz()[0] == 200
    bad_token = {**quality, "access_token": "not-the-read-token"}
    run = scenario(kafka, new_topic, seed=20, count=300)
    config = run.config(sandbox, pinterest={"quality": bad_token})
    with running_forwarder(config, tmp_path, "bad-token") as fwd:
        wait_until(run.committed, 60, "all offsets committed despite the refused quality token")
        wait_until(
            lambda: fwd.metric("capi_stream_quality_poll_errors_total", reason="unauthorized") > 0,
            30,
            "the refused quality token counted",
        )
        assert fwd.readyz()[0] == 200
        assert fwd.metric("capi_stream_setup_error") == 0
        assert fwd.metric("capi_stream_events_total", outcome="delivered") > 0
        assert "not read" in fwd.log()
