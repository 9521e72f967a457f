"""A real run scraped by a real Prometheus: every dashboard query and alert rule returns data,
the setup-error alert fires while the token is revoked, and no PII or token leaks anywhere.

One module-scoped run feeds every test: the local Kafka, the sandbox, `capi-stream run` and
Prometheus (scrape and rule evaluation every second) go through four phases:

1. a realistic mix with dead letters (poison messages, events Pinterest rejects, too-old events),
   events more than an hour late, and messages carrying distinctive PII;
2. Pinterest throttles half the requests (429);
3. the token is revoked (401 → setup error) until the alert fires, then restored;
4. everything drains and is committed; the forwarder stops, and the deployment-down alert fires.

The target carries the `namespace` and `pod` labels Kubernetes service discovery would add.
Dashboard queries on kube-state-metrics (restarts of pods never scraped, memory limits) have no
exporter here: they are checked to parse, not to return data. No dead letter of this run is too big
for its topic: the dead-letters-truncated panel returns the counter's zeros (it has no labels, so it
is exported from the start), and a test says so.

Throughout, the quality poller reads the sandbox's Event Quality Score every second (and is
refused while the token is revoked).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.forwarder.harness import Forwarder, forwarder_config, running_forwarder, wait_until
from tests.kafka_helpers import Broker
from tests.observability.conftest import REPO
from tests.observability.prometheus import PrometheusProcess, running_prometheus
from tests.sandbox_helpers import running_sandbox
from traffic.generator import ClickstreamGenerator

# The module's first test runs the whole four-phase forwarder run in its fixture (waits of up to
# 510 s together); the others only query its Prometheus.
pytestmark = pytest.mark.timeout(600)

DASHBOARD = REPO / "helm" / "capi-stream" / "dashboards" / "capi-stream.json"
RULES = REPO / "helm" / "capi-stream" / "rules" / "capi-stream-alerts.yaml"
TARGET_LABELS = {"namespace": "conversions", "pod": "capi-capi-stream-7d9f8-x2x4q"}
# What Grafana would substitute: the namespace, every job, pod and ad account, and a rate window
# of four 1 s scrapes plus margin.
VARIABLES = {
    "$__rate_interval": "5s",
    "$namespace": "conversions",
    "$job": ".+",
    "$pod": ".+",
    "$ad_account": ".+",
}
KUBE_STATE_METRIC = re.compile(r"\bkube_[a-z_]+\b")

CANARY_TOKEN = "pina_CANARYtok3n_9f8e7d6c5b4a"
CANARY_EMAILS = [f"quixotica.canary{i}@zebediah-canary.example" for i in range(5)]
CANARY_PHONES = ["+1 (555) 017-3939", "+44 20 7946 0958"]
CANARY_PHONE_DIGITS = ["15550173939", "442079460958"]
CANARY_NAMES = ["Quixotica", "Zebediahson", "Xanthippe", "Vortigern"]
CANARY_STREET = "1313 Mockingbird Canary Lane"
CANARIES = [CANARY_TOKEN, *CANARY_EMAILS, *CANARY_PHONES, *CANARY_PHONE_DIGITS, *CANARY_NAMES]


def canary_message(index: int, *, event_id: str, age: timedelta = timedelta()) -> bytes:
    """A Segment `Order Completed` full of distinctive PII."""
    when = datetime.now(UTC) - age
    return json.dumps(
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": event_id,
            "timestamp": when.isoformat(),
            "userId": f"canary-user-{index}",
            "context": {
                "ip": "203.0.113.77",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
                "traits": {
                    "email": CANARY_EMAILS[index % len(CANARY_EMAILS)],
                    "phone": CANARY_PHONES[index % len(CANARY_PHONES)],
                    "firstName": CANARY_NAMES[index % 2],
                    "lastName": CANARY_NAMES[2 + index % 2],
                    "address": {"street": CANARY_STREET, "city": "Springfield", "country": "US"},
                },
            },
            "properties": {"order_id": f"o-{index}", "value": 42.5, "currency": "usd"},
        }
    ).encode()


def canary_messages() -> list[bytes]:
    valid = [canary_message(i, event_id=f"canary-ok-{i}") for i in range(10)]
    rejected = [canary_message(i, event_id=f"canary-reject-{i}") for i in range(5)]
    too_old = [
        canary_message(i, event_id=f"canary-old-{i}", age=timedelta(days=9)) for i in range(3)
    ]
    # Cut short: undecodable, but the bytes still carry an address and a name.
    truncated = [canary_message(i, event_id=f"canary-cut-{i}")[:-40] for i in range(3)]
    return valid + rejected + too_old + truncated


@dataclass
class Run:
    prometheus: PrometheusProcess
    start: float
    end: float
    forwarder_log: str
    metrics_texts: list[str]
    dlq: list[Any]
    changelog: list[Any]
    firing_while_revoked: set[str]
    firing_after_stop: set[str]
    readyz_while_revoked: tuple[int, str]
    throttled_requests: float
    recovered_at: float


def rules_for_test(directory: Path) -> Path:
    """The rules with alerts' `for:` shortened to seconds; the expressions stay byte-identical."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "2s"
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def scraped(prometheus: PrometheusProcess, expr: str) -> bool:
    return bool(prometheus.query(expr))


@pytest.fixture(scope="module")
def run(
    kafka: Broker, prometheus_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("observed")
    topic, dlq = kafka.create_topic(partitions=3), kafka.create_topic()
    group = f"obs-{uuid.uuid4().hex[:8]}"
    rules_path = rules_for_test(directory)
    now = time.time()
    fresh = ClickstreamGenerator(seed=7, poison_ratio=0.05)
    late = ClickstreamGenerator(seed=8, now=lambda: now - 2 * 3600, poison_ratio=0.0)
    kafka.produce(topic, [(m.key, m.value) for m in fresh.messages(3000)])
    kafka.produce(topic, [(m.key, m.value) for m in late.messages(300)])
    kafka.produce(topic, canary_messages())

    def all_committed() -> bool:
        return kafka.committed_offsets(group, topic) == kafka.end_offsets(topic)

    metrics_texts: list[str] = []

    def snapshot(forwarder: Forwarder) -> None:
        metrics_texts.append(forwarder.get("/metrics")[1])

    with ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox(token=CANARY_TOKEN))
        sandbox.set_faults(reject_event_ids="^canary-reject-")
        config = forwarder_config(
            kafka.bootstrap,
            sandbox,
            group_id=group,
            dead_letter_topic=dlq,
            # Enriching, so the identity panels have data and the changelog is scanned for PII.
            sources=[{"topic": topic, "enrich": "identity"}],
            identity={"state_dir": str(directory / "identity-state")},
            sending={"setup_error_probe_s": 1, "backoff_initial_s": 0.1, "backoff_max_s": 1},
            logging={"level": "DEBUG"},
            pinterest={"quality": {"enabled": True, "poll_interval_s": 1}},
        )
        forwarder = stack.enter_context(running_forwarder(config, directory))
        target = forwarder.base_url.removeprefix("http://")
        prometheus = stack.enter_context(
            running_prometheus(
                directory / "prometheus",
                prometheus_bin,
                [target],
                [rules_path],
                target_labels=TARGET_LABELS,
            )
        )
        start = time.time()

        # Phase 1: the mix, with dead letters, late events and PII.
        wait_until(all_committed, 120, "phase 1 committed")
        snapshot(forwarder)

        # Phase 2: every request throttled until Prometheus has seen it, then relief.
        sandbox.set_faults(throttle_429=1.0)
        kafka.produce(topic, [(m.key, m.value) for m in fresh.messages(2000)])
        wait_until(
            lambda: scraped(
                prometheus, 'sum(capi_stream_retries_total{reason="rate_limited"}) > 0'
            ),
            60,
            "Prometheus scraped the 429 retries",
        )
        sandbox.set_faults(throttle_429=0.0)
        wait_until(all_committed, 120, "phase 2 committed")
        throttled = forwarder.metric("capi_stream_requests_total", code="429")
        snapshot(forwarder)

        # Phase 3: token revoked until the alert fires.
        sandbox.set_faults(token_revoked=True)
        kafka.produce(topic, [(m.key, m.value) for m in fresh.messages(500)])
        wait_until(
            lambda: "CapiStreamSetupError" in prometheus.firing(), 60, "setup-error alert firing"
        )
        firing = prometheus.firing()
        readyz = forwarder.get("/readyz")
        snapshot(forwarder)

        # Phase 4: fixed; everything drains.
        sandbox.set_faults(token_revoked=False)
        wait_until(all_committed, 120, "phase 4 committed")
        wait_until(
            lambda: scraped(prometheus, "max(capi_stream_setup_error) == 0"),
            30,
            "Prometheus saw the recovery",
        )
        recovered_at = time.time()
        snapshot(forwarder)
        assert "CapiStreamDown" not in prometheus.firing()
        assert forwarder.terminate() == 0
        end = time.time()
        # Gone, as after a crash: nothing of capi-stream's own can say so, `up` can.
        wait_until(lambda: "CapiStreamDown" in prometheus.firing(), 30, "down alert firing")
        firing_after_stop = prometheus.firing()

        yield Run(
            prometheus=prometheus,
            start=start,
            end=end,
            forwarder_log=forwarder.log(),
            metrics_texts=metrics_texts,
            dlq=kafka.read_all(dlq),
            changelog=kafka.read_all(f"{group}-{topic}-identity-changelog"),
            firing_while_revoked=firing,
            firing_after_stop=firing_after_stop,
            readyz_while_revoked=readyz,
            throttled_requests=throttled,
            recovered_at=recovered_at,
        )


def substitute(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def panel_queries(*, kube_state_metrics: bool = False) -> list[tuple[str, str]]:
    """The dashboard's queries: on capi-stream's own metrics, or on kube-state-metrics'."""
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            if bool(KUBE_STATE_METRIC.search(target["expr"])) == kube_state_metrics:
                queries.append((f"{panel['title']} / {target['legendFormat']}", target["expr"]))
    return queries


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [
        float(value)
        for series in result
        for _, value in series["values"]
        if math.isfinite(float(value))
    ]


@pytest.mark.kafka
@pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=[q[0] for q in panel_queries()])
def test_dashboard_query_returns_data(run: Run, panel: str, expr: str) -> None:
    result = run.prometheus.query_range(substitute(expr), run.start, run.end)
    assert result, f"{panel}: no series"
    assert finite_values(result), f"{panel}: only NaN/Inf"


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("panel", "expr"),
    panel_queries(kube_state_metrics=True),
    ids=[q[0] for q in panel_queries(kube_state_metrics=True)],
)
def test_kube_state_metrics_query_is_valid(run: Run, panel: str, expr: str) -> None:
    # No kube-state-metrics here: Prometheus parses and runs the query, which finds no series.
    assert run.prometheus.api("format_query", query=substitute(expr)), panel
    assert run.prometheus.query_range(substitute(expr), run.start, run.end) == [], panel


def test_only_pod_level_panels_need_kube_state_metrics() -> None:
    titles = {name.split(" / ")[0] for name, _ in panel_queries(kube_state_metrics=True)}
    assert titles == {"Memory per pod", "Restarts"}


@pytest.mark.kafka
def test_deployment_down_alert_fires_once_the_forwarder_is_gone(run: Run) -> None:
    assert "CapiStreamDown" not in run.firing_while_revoked
    assert "CapiStreamDown" in run.firing_after_stop
    (alert,) = [
        a
        for a in run.prometheus.api("alerts")["alerts"]
        if a["labels"]["alertname"] == "CapiStreamDown"
    ]
    assert alert["labels"]["namespace"] == TARGET_LABELS["namespace"]
    assert alert["annotations"]["runbook_url"].endswith("/docs/runbook.md#capistreamdown")


@pytest.mark.kafka
def test_every_alert_rule_is_loaded_and_evaluates(run: Run) -> None:
    groups = run.prometheus.api("rules")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    original = yaml.safe_load(RULES.read_text())
    for group in original["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", rule.get("record"))
            live = loaded[name]
            assert live["health"] == "ok", (name, live.get("lastError"))
            # The test copy only shortened `for:`; Prometheus runs the exact expression.
            original_expr = run.prometheus.api("format_query", query=rule["expr"])
            assert run.prometheus.api("format_query", query=live["query"]) == original_expr
            run.prometheus.query_range(rule["expr"], run.start, run.end)


@pytest.mark.kafka
def test_setup_error_alert_fires_while_the_token_is_revoked(run: Run) -> None:
    assert "CapiStreamSetupError" in run.firing_while_revoked
    status, body = run.readyz_while_revoked
    assert status == 200, body
    assert "setup error" in body
    history = run.prometheus.query_range(
        "max by (ad_account) (capi_stream_setup_error_status)", run.start, run.end
    )
    assert 401.0 in finite_values(history)
    (after_fix,) = run.prometheus.api(
        "query", query="max(capi_stream_setup_error)", time=run.recovered_at
    )["result"]
    assert float(after_fix["value"][1]) == 0


@pytest.mark.kafka
def test_the_run_covered_dead_letters_throttling_and_lateness(run: Run) -> None:
    assert run.throttled_requests > 0
    reasons = {
        dict(message.headers())["capi.error.reason"].decode()  # type: ignore[attr-defined]
        for message in run.dlq
    }
    assert {"decode_error", "too_old", "rejected_by_pinterest"} <= reasons
    late = run.prometheus.query_range("max(capi_stream_late_events_total)", run.start, run.end)
    assert max(finite_values(late)) >= 250


@pytest.mark.kafka
def test_no_pii_or_token_in_metrics_logs_or_dead_letter_headers(run: Run) -> None:
    # The canaries did go through: their dead letters carry the original bytes.
    assert any(CANARY_EMAILS[0].encode() in message.value() for message in run.dlq)  # type: ignore[attr-defined]
    assert "paused" in run.forwarder_log
    headers = [
        f"{key}={value.decode(errors='replace') if value else ''}"
        for message in run.dlq
        for key, value in (message.headers() or [])  # type: ignore[attr-defined]
    ]
    assert headers
    # The canary users were learned by identity enrichment: their profiles are on the changelog.
    assert run.changelog
    changelog = b"".join((m.key() or b"") + (m.value() or b"") for m in run.changelog)  # type: ignore[attr-defined]
    places = {
        "/metrics": "\n".join(run.metrics_texts),
        "forwarder log": run.forwarder_log,
        "DLQ headers": "\n".join(headers),
        "identity changelog": changelog.decode(errors="replace"),
    }
    assert b"canary-user-" not in changelog, "a userId reached the changelog unhashed"
    for place, text in places.items():
        lowered = text.lower()
        for canary in CANARIES:
            assert canary.lower() not in lowered, f"{canary!r} leaked into {place}"
        assert CANARY_STREET.lower() not in lowered, place


@pytest.mark.kafka
def test_pinterests_score_was_scraped_and_the_revoked_token_counted(run: Run) -> None:
    query = 'max by (platform, lookback) (capi_stream_quality_status{ingestion_source="%s"})'
    status = run.prometheus.query_range(query % "CONVERSIONS_API", run.start, run.end)
    assert {(s["metric"]["platform"], s["metric"]["lookback"]) for s in status} >= {
        ("WEB", "1d"),
        ("WEB", "14d"),
    }
    assert set(finite_values(status)) <= {0.0, 1.0, 2.0}
    refused = run.prometheus.query_range(
        'max(capi_stream_quality_poll_errors_total{reason="unauthorized"})', run.start, run.end
    )
    assert max(finite_values(refused)) >= 1


@pytest.mark.kafka
def test_resilience_is_recorded_per_ad_account_and_pinterest_warned(run: Run) -> None:
    # The sandbox warns, as Pinterest does, on events without external_id.
    warnings = run.prometheus.query_range(
        "sum by (ad_account, warning) (capi_stream_pinterest_warnings_total)", run.start, run.end
    )
    assert any(series["metric"]["warning"] == "external_id_missing" for series in warnings)
    accounts = {series["metric"]["ad_account"] for series in warnings}
    flag = "capi_stream:ad_account_resilient:1h"
    resilient = run.prometheus.query_range(flag, run.start, run.end)
    assert accounts
    assert {series["metric"]["ad_account"] for series in resilient} >= accounts
    assert set(finite_values(resilient)) <= {0.0, 1.0}
    for series in resilient:
        assert series["metric"]["namespace"] == TARGET_LABELS["namespace"]
        assert "pod" not in series["metric"]


@pytest.mark.kafka
def test_no_dead_letter_was_truncated_yet_its_panel_has_data(run: Run) -> None:
    (expr,) = [expr for name, expr in panel_queries() if name.startswith("Dead letters truncated")]
    result = run.prometheus.query_range(substitute(expr), run.start, run.end)
    assert result
    assert set(finite_values(result)) == {0.0}
