"""The sandbox behaves like Pinterest's Conversions API, through real HTTP to a real subprocess."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.cli import main
from tests.sandbox_helpers import (
    DEFAULT_AD_ACCOUNT,
    SandboxProcess,
    running_sandbox,
    sha256,
    valid_event,
)


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxProcess]:
    with running_sandbox("--seed", "7") as started:
        yield started


@pytest.fixture
def sandbox_clean(shared: SandboxProcess) -> SandboxProcess:
    """The module's sandbox with counters, recordings and fault knobs back to their start."""
    shared.clear_faults()
    shared.reset()
    return shared


def _bad_hash(event_id: str) -> dict[str, Any]:
    event = valid_event(event_id)
    event["user_data"]["em"] = ["Jane.Doe@Example.com"]
    return event


# --- the events endpoint ------------------------------------------------------------------


def test_valid_batch_is_processed_and_recorded(sandbox_clean: SandboxProcess) -> None:
    events = [valid_event(f"ok-{i}") for i in range(3)]
    answer = sandbox_clean.send(events)
    assert answer.status == 200
    assert answer.body == {
        "num_events_received": 3,
        "num_events_processed": 3,
        "events": [{"status": "processed", "error_message": "", "warning_message": ""}] * 3,
    }
    recorded = sandbox_clean.wait_for_events(3)
    assert [r["event"]["event_id"] for r in recorded] == ["ok-0", "ok-1", "ok-2"]
    assert recorded[0]["event"] == events[0]
    assert {r["ad_account_id"] for r in recorded} == {DEFAULT_AD_ACCOUNT}
    assert abs(recorded[0]["received_at"] - time.time()) < 60


def test_mixed_batch_fails_events_in_order(sandbox_clean: SandboxProcess) -> None:
    now = int(time.time())
    no_identifiers = valid_event("no-ids")
    no_identifiers["user_data"] = {"external_id": [sha256("u")]}
    events = [
        valid_event("good-1"),
        _bad_hash("bad-hash"),
        valid_event("future", event_time=now + 3600),
        valid_event("old", event_time=now - 8 * 86400),
        no_identifiers,
        valid_event("bad-source", action_source="store"),
        valid_event("good-2", event_name="subscription"),
    ]
    answer = sandbox_clean.send(events)
    assert answer.status == 200
    assert answer.body["num_events_received"] == 7
    assert answer.body["num_events_processed"] == 2
    statuses = [e["status"] for e in answer.body["events"]]
    assert statuses == ["processed", "failed", "failed", "failed", "failed", "failed", "processed"]
    messages = [e["error_message"] for e in answer.body["events"]]
    assert "user_data.em[0]" in messages[1]
    assert "Jane" not in messages[1]
    assert "in the future" in messages[2]
    assert "in the past" in messages[3]
    assert "em, hashed_maids" in messages[4]
    assert "action_source" in messages[5]
    assert "Unknown" in answer.body["events"][6]["warning_message"]
    recorded = sandbox_clean.wait_for_events(2)
    assert [r["event"]["event_id"] for r in recorded] == ["good-1", "good-2"]
    stats = sandbox_clean.stats()["events"]
    assert (stats["received"], stats["processed"], stats["failed"]) == (7, 2, 5)
    assert stats["failure_reasons"] == {
        "hash_invalid": 1,
        "event_time_future": 1,
        "event_time_too_old": 1,
        "identifiers_missing": 1,
        "action_source": 1,
    }


def test_all_failed_is_422_with_details(sandbox_clean: SandboxProcess) -> None:
    answer = sandbox_clean.send([_bad_hash("a"), _bad_hash("b")])
    assert answer.status == 422
    assert answer.body["code"] == 953
    assert answer.body["message"]
    details = answer.body["details"]
    assert details["num_events_received"] == 2
    assert details["num_events_processed"] == 0
    assert [e["status"] for e in details["events"]] == ["failed", "failed"]
    assert sandbox_clean.events() == []


def test_unknown_key_fails_the_whole_request(sandbox_clean: SandboxProcess) -> None:
    event = valid_event("x")
    event["custom_data"]["category_name"] = "shoes"
    answer = sandbox_clean.send([valid_event("fine"), event])
    assert answer.status == 400
    assert answer.body["code"] == 4196
    assert "category_name" in answer.body["message"]
    assert "data[1].custom_data" in answer.body["message"]
    assert sandbox_clean.stats()["events"]["received"] == 0


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"data": [valid_event(f"e{i}") for i in range(1001)]}, "$.data"),
        ({"data": []}, "$.data"),
        ({"data": [valid_event(event_time="now")]}, "$.data[0].event_time"),
    ],
    ids=["1001-events", "no-events", "wrong-type"],
)
def test_malformed_body_is_400_naming_the_path(
    sandbox_clean: SandboxProcess, body: dict[str, Any], path: str
) -> None:
    answer = sandbox_clean.send(body)
    assert answer.status == 400
    assert path in answer.body["message"]


def test_body_that_is_not_json_is_400(sandbox_clean: SandboxProcess) -> None:
    answer = sandbox_clean.send(b'{"data": [')
    assert answer.status == 400
    assert answer.body["code"] == 4196


@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_wrong_token_is_401(sandbox_clean: SandboxProcess, token: str) -> None:
    answer = sandbox_clean.send([valid_event()], token=token)
    assert answer.status == 401
    assert answer.body["code"] == 2


@pytest.mark.parametrize("account", ["not-a-number", "1234567890123456789"])
def test_malformed_ad_account_is_404(sandbox_clean: SandboxProcess, account: str) -> None:
    assert sandbox_clean.send([valid_event()], ad_account=account).status == 404


def test_listed_ad_accounts_only(sandbox_factory: Callable[..., SandboxProcess]) -> None:
    sandbox = sandbox_factory("--ad-account", "111", "--ad-account", "222", token="t0k")
    answer = sandbox.send([valid_event()], ad_account="333")
    assert answer.status == 403
    assert answer.body["code"] == 29
    assert sandbox.send([valid_event()], ad_account="222").status == 200
    assert sandbox.send([valid_event()], ad_account="222", token="sandbox-token").status == 401


def test_test_mode_records_nothing_and_evaluates_first_20(sandbox_clean: SandboxProcess) -> None:
    events = [valid_event(f"t{i}") for i in range(24)] + [_bad_hash("t-bad")]
    answer = sandbox_clean.send(events, test=True)
    assert answer.status == 200
    assert answer.body["num_events_received"] == 25
    assert answer.body["num_events_processed"] == 20
    assert len(answer.body["events"]) == 20
    stats = sandbox_clean.stats()["events"]
    assert (stats["processed"], stats["test"], stats["recorded"]) == (0, 20, 0)
    assert sandbox_clean.events() == []


def test_rate_limit_headers_and_429(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(rate_limit=3)
    remaining = []
    for _ in range(3):
        answer = sandbox_clean.send([valid_event()])
        assert answer.status == 200
        assert (
            answer.headers["x-ratelimit-limit"] == '3, 3;w=60;name="ads_conversions_ad_account_id"'
        )
        assert 1 <= int(answer.headers["x-ratelimit-reset"]) <= 60
        remaining.append(answer.headers["x-ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    limited = sandbox_clean.send([valid_event()])
    assert limited.status == 429
    assert limited.body["code"] == 8
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(limited.headers["x-ratelimit-reset"]) <= 60
    # Another ad account has its own quota.
    assert sandbox_clean.send([valid_event()], ad_account="42").status == 200
    assert sandbox_clean.stats()["requests"]["by_status"] == {"200": 4, "429": 1}


# --- fault knobs ----------------------------------------------------------------------------


def test_latency_and_jitter(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(latency_ms=300, jitter_ms=200)
    durations = []
    for _ in range(3):
        started = time.monotonic()
        assert sandbox_clean.send([valid_event()]).status == 200
        durations.append(time.monotonic() - started)
    assert min(durations) >= 0.3
    assert max(durations) < 5.0


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [
        ("error_500", 500, None),
        ("error_502", 502, None),
        ("error_503", 503, 4197),
        ("throttle_429", 429, 8),
    ],
)
def test_error_probabilities(
    sandbox_clean: SandboxProcess, knob: str, status: int, code: int | None
) -> None:
    sandbox_clean.set_faults(**{knob: 1.0})
    answer = sandbox_clean.send([valid_event()])
    assert answer.status == status
    if code is not None:
        assert answer.body["code"] == code
    sandbox_clean.set_faults(**{knob: 0.5})
    statuses = {sandbox_clean.send([valid_event(f"p{i}")]).status for i in range(40)}
    assert statuses == {200, status}


def test_connection_reset(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(reset=1.0)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError)):
        sandbox_clean.send([valid_event()])
    sandbox_clean.set_faults(reset=0.0)
    assert sandbox_clean.send([valid_event()]).status == 200
    assert sandbox_clean.stats()["requests"]["by_status"] == {"reset": 1, "200": 1}


def test_hang_never_answers(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(hang=1.0)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        sandbox_clean.send([valid_event()], timeout=0.5)
    sandbox_clean.clear_faults()
    assert sandbox_clean.send([valid_event()]).status == 200
    assert sandbox_clean.stats()["requests"]["by_status"]["hang"] == 1


def test_outage_window(sandbox_clean: SandboxProcess) -> None:
    assert sandbox_clean.set_faults(outage_seconds=60)["outage_seconds"] > 50
    answer = sandbox_clean.send([valid_event()])
    assert answer.status == 503
    assert answer.body["code"] == 4197
    sandbox_clean.set_faults(outage_seconds=0)
    assert sandbox_clean.send([valid_event()]).status == 200


def test_outage_window_ends_by_itself(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(outage_seconds=0.5)
    assert sandbox_clean.send([valid_event()]).status == 503
    deadline = time.monotonic() + 10
    while sandbox_clean.send([valid_event()]).status == 503:
        assert time.monotonic() < deadline, "outage never ended"
        time.sleep(0.05)


def test_reject_event_ids(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(reject_event_ids="^bad-")
    answer = sandbox_clean.send([valid_event("bad-1"), valid_event("good"), valid_event("bad-2")])
    assert answer.status == 200
    assert [e["status"] for e in answer.body["events"]] == ["failed", "processed", "failed"]
    alone = sandbox_clean.send([valid_event("bad-3")])
    assert alone.status == 422
    assert alone.body["details"]["events"][0]["status"] == "failed"
    assert sandbox_clean.stats()["events"]["failure_reasons"] == {"rejected_by_fault": 3}


def test_invalid_request_event_ids(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(invalid_request_event_ids="poison")
    answer = sandbox_clean.send([valid_event("fine"), valid_event("the-poison-pill")])
    assert answer.status == 400
    assert "data[1].event_id" in answer.body["message"]
    assert sandbox_clean.send([valid_event("fine")]).status == 200


def test_token_revoked(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.set_faults(token_revoked=True)
    answer = sandbox_clean.send([valid_event()])
    assert answer.status == 401
    assert answer.body["code"] == 2
    sandbox_clean.set_faults(token_revoked=False)
    assert sandbox_clean.send([valid_event()]).status == 200


@pytest.mark.parametrize(
    "knobs",
    [{"no_such_knob": 1}, {"error_500": 1.5}, {"error_500": 0.6, "reset": 0.6}, {"hang": "x"}],
)
def test_bad_fault_knobs_are_refused(sandbox_clean: SandboxProcess, knobs: dict[str, Any]) -> None:
    before = sandbox_clean.faults()
    answer = sandbox_clean.request("PUT", "/_admin/faults", knobs)
    assert answer.status == 400
    assert sandbox_clean.faults() == before


def test_fault_flags_on_the_command_line(sandbox_factory: Callable[..., SandboxProcess]) -> None:
    sandbox = sandbox_factory("--error-503", "1", "--reject-event-ids", "^x", "--rate-limit", "7")
    faults = sandbox.faults()
    assert (faults["error_503"], faults["reject_event_ids"], faults["rate_limit"]) == (
        1.0,
        "^x",
        7,
    )
    assert sandbox.send([valid_event()]).status == 503
    sandbox.set_faults(error_503=0)
    assert sandbox.send([valid_event("x1")]).status == 422
    sandbox.clear_faults()
    assert sandbox.faults()["error_503"] == 1.0


def test_record_file(sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    record = tmp_path / "events.jsonl"
    sandbox = sandbox_factory("--record", str(record))
    sandbox.send([valid_event("r1"), _bad_hash("r-bad"), valid_event("r2")], ad_account="77")
    lines = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    assert [line["event"]["event_id"] for line in lines] == ["r1", "r2"]
    assert {line["ad_account_id"] for line in lines} == {"77"}
    assert all(isinstance(line["received_at"], float) for line in lines)


# --- insight --------------------------------------------------------------------------------


def test_stats_and_dedup(sandbox_clean: SandboxProcess) -> None:
    late = int(time.time()) - 2 * 3600
    sandbox_clean.send([valid_event("d1"), valid_event("d2"), valid_event("d1")])
    sandbox_clean.send([valid_event("d1"), valid_event("d1", event_name="add_to_cart")])
    offline = [valid_event("o1", action_source="offline")] * 2
    sandbox_clean.send([*offline, valid_event("late", event_time=late)])
    stats = sandbox_clean.stats()
    events = stats["events"]
    assert events["processed"] == 8
    # d1, d2, d1/add_to_cart, o1, o1 (offline: never deduplicated), late
    assert events["unique"] == 6
    assert events["duplicate"] == 2
    assert events["late"] == 1
    assert stats["requests"]["by_status"] == {"200": 3}
    assert stats["ad_accounts"] == {DEFAULT_AD_ACCOUNT: {"processed": 8}}
    sandbox_clean.reset()
    sandbox_clean.send([valid_event("d1")])
    assert sandbox_clean.stats()["events"]["unique"] == 1


def test_resilience_ratios(sandbox_clean: SandboxProcess) -> None:
    events = []
    for i in range(10):
        event = valid_event(f"r{i}", event_name="checkout" if i < 5 else "page_visit")
        user_data: dict[str, Any] = {"client_ip_address": "203.0.113.9", "client_user_agent": "UA"}
        if i == 0:
            user_data = {"hashed_maids": [sha256("maid")]}
        if i == 9:
            user_data["external_id"] = [sha256("u")]
        event["user_data"] = user_data
        events.append(event)
    assert sandbox_clean.send(events).status == 200
    resilience = sandbox_clean.stats()["resilience"]
    assert resilience == {
        "ip_and_user_agent_ratio": 0.9,
        "email_or_maid_bottom_funnel_ratio": 0.2,
        "external_id_ratio": 0.1,
        "bottom_funnel_events": 5,
        "good": True,
    }
    sandbox_clean.send([valid_event("no-ip", user_data={"em": [sha256("e")]})])
    assert sandbox_clean.stats()["resilience"]["good"] is False


def test_resilience_with_no_events_is_not_good(sandbox_clean: SandboxProcess) -> None:
    resilience = sandbox_clean.stats()["resilience"]
    assert resilience["good"] is False
    assert resilience["ip_and_user_agent_ratio"] is None


def test_admin_events_paginate(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.send([valid_event(f"p{i}") for i in range(5)])
    page = sandbox_clean.request("GET", "/_admin/events?since=1&limit=2").body
    assert [e["seq"] for e in page["events"]] == [1, 2]
    assert page["next"] == 3
    assert [e["event"]["event_id"] for e in sandbox_clean.events(since=3)] == ["p3", "p4"]


def test_status_page(sandbox_clean: SandboxProcess) -> None:
    sandbox_clean.send([valid_event()])
    answer = sandbox_clean.request("GET", "/")
    assert answer.status == 200
    page = answer.body.decode()
    assert "Resilience status" in page
    assert "processed" in page


def test_non_loopback_host_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "--host", "192.0.2.1"]) == 2
    assert "--host" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["true", "True", "1", "yes", "on"])
def test_truthy_spellings_of_test_are_test_mode(
    sandbox_clean: SandboxProcess, spelling: str
) -> None:
    answer = sandbox_clean.request(
        "POST",
        f"/v5/ad_accounts/{DEFAULT_AD_ACCOUNT}/events?test={spelling}",
        {"data": [valid_event("truthy")]},
        headers={"Authorization": f"Bearer {sandbox_clean.token}"},
    )
    assert answer.status == 200
    assert sandbox_clean.stats()["events"]["test"] == 1
    assert sandbox_clean.events() == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v5/ad_accounts/123/events", 405),
        ("POST", "/v5/ad_accounts/123/nothing-here", 404),
        ("GET", "/v5/nowhere", 404),
    ],
)
def test_every_error_answer_is_pinterest_json(
    sandbox_clean: SandboxProcess, method: str, path: str, status: int
) -> None:
    answer = sandbox_clean.request(method, path, {"data": []} if method == "POST" else None)
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/json")
    assert isinstance(answer.body["code"], int)
    assert answer.body["message"]
