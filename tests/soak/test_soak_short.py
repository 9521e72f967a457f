"""The short soak (≈ 90 s, fewer faults, two of every kind of poison) passes every oracle check
and emits no PII or token."""

from __future__ import annotations

import json

import pytest

from tests.kafka_helpers import Broker
from tests.soak.chaos import Plan
from tests.soak.oracle import PiiScanner
from tests.soak.poison import KINDS
from tests.soak.runner import SoakOptions, SoakResult, run_soak
from tests.soak.workload import name_needles, workload

# The module's first test runs the whole soak in its fixture: a 70 s window, up to 90 s of
# drain and the checks after it.
pytestmark = pytest.mark.timeout(600)

SEED = 11
WINDOW_S = 70.0
EVENTS = 25_000


@pytest.fixture(scope="module")
def short_soak(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> SoakResult:
    out = tmp_path_factory.mktemp("soak")
    return run_soak(
        SoakOptions(
            out_dir=out,
            seed=SEED,
            plan=Plan.short(WINDOW_S, EVENTS),
            drain_timeout_s=90.0,
            bootstrap=kafka.bootstrap,
        )
    )


def test_short_soak_passes_every_check(short_soak: SoakResult) -> None:
    report = short_soak.report
    failed = {name: c["detail"] for name, c in report["checks"].items() if not c["ok"]}
    assert not failed, failed
    assert report["passed"] is True
    summary = report["summary"]
    assert summary["events_produced"] == EVENTS + 2 * len(KINDS)
    poison = summary["poison_by_kind"]
    assert {kind: tally["produced"] for kind, tally in poison.items()} == dict.fromkeys(KINDS, 2)
    assert poison["non_json_1mb"]["dead_lettered:decode_error"] == 2
    assert poison["non_json_1mb"]["cut_to_fit"] == 2
    assert poison["foreign_ad_account"]["dead_lettered:invalid_event"] == 2
    assert poison["bom"]["delivered"] == 2
    for check in (
        "poison_dead_lettered_with_headers",
        "poison_delivered_where_valid",
        "no_exit_but_the_scheduled_kills",
        "lag_returns_to_zero",
        "no_raw_pii_sent_to_pinterest",
    ):
        assert report["checks"][check]["ok"], check
    assert set(summary["dlq_distinct_by_reason"]) == {
        "decode_error",
        "invalid_event",
        "mapping_error",
        "too_old",
        "rejected_by_pinterest",
        "request_invalid",
    }
    assert len(summary["deliveries_by_ad_account"]) == 2, "the CRM source routes to a 2nd account"
    assert summary["drain_after_outage_s"] is not None
    done = {entry["name"] for entry in report["chaos"]}
    assert {"api_outage", "token_revoked", "kill_9", "consumers_2", "consumers_1"} <= done
    assert summary["forwarder_processes"] >= 4, "two kills and one scale-up started processes"
    assert short_soak.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(short_soak.report_path.read_text())["passed"] is True


def test_nothing_emitted_holds_raw_pii_or_the_token(short_soak: SoakResult) -> None:
    out = short_soak.report_path.parent
    emails, phones = set(), set()
    raw_sample = ""
    for item in workload(SEED, 0.0, EVENTS):
        if len(item.pii) == 2:
            emails.add(item.pii[0])
            phones.add(item.pii[1])
            raw_sample = raw_sample or item.value.decode()
    token = next(
        line.split(": ", 1)[1].strip()
        for line in next((out / "logs").glob("*.yaml")).read_text().splitlines()
        if line.strip().startswith("access_token:")
    )
    scanner = PiiScanner(emails, phones, name_needles(), [token])
    # The scanner has teeth: a raw produced message and the token itself are found.
    assert scanner.hits(raw_sample)["email"] >= 1
    assert scanner.hits(raw_sample)["phone"] >= 1
    assert scanner.hits(f"Authorization: Bearer {token}")["token"] == 1
    logs = sorted((out / "logs").glob("*.log"))
    scrapes = sorted((out / "metrics").glob("*.txt"))
    assert logs
    assert scrapes
    assert all(path.stat().st_size for path in logs)
    emitted = [*logs, *scrapes, out / "dlq-headers.jsonl", short_soak.report_path]
    assert (out / "dlq-headers.jsonl").read_text().count("capi.error.reason") > 100
    assert scanner.scan(emitted) == {}
