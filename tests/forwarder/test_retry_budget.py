"""The retry budget against the real broker and sandbox: a setup-error pause does not spend it."""

from __future__ import annotations

from pathlib import Path

from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import delivered_keys, scenario
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess

BUDGET_S = 3.0
PROBE_S = 0.5


def test_a_setup_error_pause_longer_than_the_budget_then_an_outage_dead_letters_nothing(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    """The issue's probe, end to end: the token is refused for longer than the retry budget,
    then Pinterest answers 503 for a second. Before, the pause had used up the budget and the
    first 503 dead-lettered every waiting event as retries_exhausted; now they are delivered."""
    run = scenario(kafka, new_topic, seed=41, count=500)
    sandbox.set_faults(token_revoked=True)
    config = run.config(
        sandbox,
        batching={"linger_ms": 50},
        sending={
            "retry_budget_s": BUDGET_S,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
            "setup_error_probe_s": PROBE_S,
        },
    )
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(
            lambda: forwarder.metric("capi_stream_setup_error", ad_account=DEFAULT_AD_ACCOUNT) == 1,
            30,
            "the setup error",
        )
        # Probes come one per PROBE_S: this many span more than the whole budget.
        probes = int(2 * BUDGET_S / PROBE_S)
        wait_until(
            lambda: sandbox.stats()["requests"]["by_status"].get("401", 0) > probes,
            30,
            f"{probes} refused probes",
        )
        sandbox.set_faults(token_revoked=False, outage_seconds=1.0)
        wait_until(run.committed, 60, "all offsets committed")
        retried = forwarder.metric("capi_stream_retries_total", reason="server_error")
        assert forwarder.terminate() == 0
    assert sandbox.stats()["requests"]["by_status"].get("503", 0) > 0
    assert retried > 0
    assert kafka.read_all(run.dlq) == []
    assert set(delivered_keys(sandbox)) == run.expected
