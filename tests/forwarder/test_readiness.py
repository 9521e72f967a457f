"""Readiness as DESIGN §5 defines it: joined the group, with or without partitions."""

from __future__ import annotations

from pathlib import Path

from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import scenario
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import SandboxProcess


def test_a_member_without_partitions_is_ready_so_a_rollout_surge_never_hangs(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    # Replicas equal to partitions, then one more: the surge pod of a rolling update.
    run = scenario(kafka, new_topic, seed=21, count=200, partitions=2)
    config = run.config(sandbox)
    with (
        running_forwarder(config, tmp_path / "a", "a") as first,
        running_forwarder(config, tmp_path / "b", "b") as second,
    ):
        wait_until(run.committed, 60, "all offsets committed")
        members = (first, second)
        wait_until(
            lambda: sum(m.metric("capi_stream_assigned_partitions") for m in members) == 2,
            60,
            "both partitions assigned",
        )
        with running_forwarder(config, tmp_path / "c", "c") as surge:
            wait_until(lambda: surge.readyz()[0] == 200, 60, "the surge member ready")
            everyone = (first, second, surge)
            wait_until(
                lambda: sum(m.metric("capi_stream_assigned_partitions") for m in everyone) == 2,
                60,
                "the two partitions shared by three members",
            )
            idle = [m for m in everyone if m.metric("capi_stream_assigned_partitions") == 0]
            assert idle, "one of three members of a two-partition topic owns nothing"
            assert all(m.readyz() == (200, "ready\n") for m in everyone)
