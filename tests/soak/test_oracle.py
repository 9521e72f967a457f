"""The soak's oracle and schedule catch what they are meant to catch (no Kafka, no processes)."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson

from tests.soak.chaos import Plan, schedule
from tests.soak.oracle import DeadLetterSeen, PiiScanner, judge, read_deliveries
from tests.soak.workload import Expectation, hashes_digest, sha256

GOOD_USER_DATA = {"em": [sha256("a@example.com")], "client_ip_address": "203.0.113.1"}


def expectation(fate: str, event_id: str, reason: str | None = None) -> Expectation:
    return Expectation(
        "web",
        fate,
        reason,
        event_id,
        "checkout",
        hashes_digest(GOOD_USER_DATA),  # type: ignore[arg-type]
    )


def record(path: Path, *events: dict[str, object]) -> Path:
    lines = [
        orjson.dumps({"seq": i, "ad_account_id": "1", "received_at": 1000.0 + i, "event": event})
        for i, event in enumerate(events)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def event(event_id: str, name: str = "checkout", user_data: object = None) -> dict[str, object]:
    return {"event_id": event_id, "event_name": name, "user_data": user_data or GOOD_USER_DATA}


def failed(verdict_checks: list[object]) -> set[str]:
    return {c.name for c in verdict_checks if not c.ok}  # type: ignore[attr-defined]


def test_a_clean_run_passes(tmp_path: Path) -> None:
    expectations = [
        expectation("deliver", "a"),
        expectation("dead_letter", "b", "too_old"),
        expectation("dead_letter", "00c", "rejected_by_pinterest"),
        expectation("skip", "d"),
    ]
    locations = [("t", 0, i) for i in range(4)]
    deliveries = read_deliveries(
        record(tmp_path / "r.jsonl", event("a"), event("a")), {"a": expectations[0].hashes}
    )
    letters = [
        DeadLetterSeen("too_old", ("t", 0, 1)),
        DeadLetterSeen("rejected_by_pinterest", ("t", 0, 2)),
        DeadLetterSeen("too_old", ("t", 0, 1)),  # a re-sent dead letter is allowed
    ]
    verdict = judge(expectations, locations, deliveries, letters, {"t": {0: 4}}, {"t": {0: 4}})
    assert failed(verdict.checks) == set()
    assert verdict.summary["duplicate_deliveries"] == 1
    assert verdict.summary["dlq_duplicate_records"] == 1


def test_every_kind_of_wrong_outcome_is_caught(tmp_path: Path) -> None:
    expectations = [
        expectation("deliver", "a"),
        expectation("deliver", "missing"),
        expectation("deliver", "hashed-wrong"),
        expectation("dead_letter", "p", "decode_error"),
        expectation("dead_letter", "00r", "rejected_by_pinterest"),
        expectation("skip", "s"),
    ]
    locations = [("t", 0, i) for i in range(6)]
    deliveries = read_deliveries(
        record(
            tmp_path / "r.jsonl",
            event("a"),
            event("a", name="page_visit"),  # a duplicate that changed its name
            event("hashed-wrong", user_data={"em": [sha256("b@example.com")]}),
            event("s"),  # a skipped message that was sent
        ),
        {e.event_id: e.hashes for e in expectations if e.fate == "deliver" and e.event_id},
    )
    letters = [
        DeadLetterSeen("invalid_event", ("t", 0, 3)),  # wrong reason
        DeadLetterSeen("too_old", ("t", 0, 5)),  # the skipped one dead-lettered
    ]
    verdict = judge(expectations, locations, deliveries, letters, {"t": {0: 5}}, {"t": {0: 6}})
    assert failed(verdict.checks) == {
        "every_valid_event_delivered",
        "nothing_unexpected_delivered",
        "duplicates_identical",
        "hashes_match_raw_values",
        "rejected_by_pinterest_in_dlq",
        "poison_in_dlq_with_reason",
        "nothing_else_in_dlq",
        "committed_equals_end_offsets",
    }


def test_pii_scanner_finds_raw_values_in_any_shape_but_not_hashes() -> None:
    scanner = PiiScanner(
        [" Ada.Lovelace12@Example.com "], ["+1 (415) 555-0100"], ["Lovelace"], ["tok-123"]
    )
    text = "user ada.lovelace12@example.com called 14155550100; Lovelace; tok-123"
    assert scanner.hits(text) == {"email": 1, "phone": 1, "name": 1, "token": 1}
    assert scanner.hits(f"em={sha256('ada.lovelace12@example.com')} grace period") == {}


def test_schedule_is_seeded_and_api_faults_never_overlap() -> None:
    plan = Plan.full(420, 300_000)
    first, again, other = schedule(plan, 1), schedule(plan, 1), schedule(plan, 2)
    assert first == again
    assert first != other
    faults = [e for e in first if e.action == "api_fault"]
    assert sorted(e.name for e in faults) == sorted(plan.api_faults)
    for before, after in itertools.pairwise(faults):
        assert before.at_s + before.duration_s <= after.at_s + 1e-9
    assert all(e.at_s > 0 and e.at_s + e.duration_s <= plan.window_s for e in first)
    assert sum(e.action == "kill_9" for e in first) == 5
    assert [e.consumers for e in first if e.action == "scale"] == [3, 1]
    assert sum(e.action == "broker_restart" for e in first) == 1
