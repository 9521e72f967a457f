"""The chart's pod, minus Kubernetes: its rendered config runs the real forwarder, which answers the
probes, delivers, and drains within terminationGracePeriodSeconds."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.forwarder.harness import running_forwarder, wait_until
from tests.helm.conftest import Rendered
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess
from traffic.generator import ClickstreamGenerator


@pytest.mark.kafka
def test_rendered_pod_config_runs_answers_probes_and_drains_in_time(
    render: Callable[..., Rendered],
    kafka: Broker,
    new_topic: Callable[..., str],
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    topic, dlq = new_topic(partitions=2), new_topic()
    group = f"chart-{uuid.uuid4().hex[:8]}"
    rendered = render(
        "default",
        "--set", f"kafka.bootstrapServers={kafka.bootstrap}",
        "--set", f"kafka.groupId={group}",
        "--set", f"kafka.deadLetterTopic={dlq}",
        "--set", f"sources[0].topic={topic}",
        "--set", f"pinterest.apiBaseUrl={sandbox.url}",
        "--set-string", f"pinterest.adAccountId={DEFAULT_AD_ACCOUNT}",
        "--set", f"pinterest.accessToken={sandbox.token}",
    )  # fmt: skip
    config = rendered.config()
    # The token file as the kubelet would mount it from the chart's Secret.
    secret = rendered.one("Secret", "-pinterest")
    token_file = tmp_path / "access-token"
    token_file.write_bytes(base64.b64decode(secret["data"]["access-token"]))
    config["pinterest"]["access_token_file"] = str(token_file)
    # Only the bind differs from the pod: loopback and a free port instead of 0.0.0.0:9108.
    config["metrics"] = {"host": "127.0.0.1", "port": 0}
    container = rendered.container()
    messages = list(ClickstreamGenerator(seed=8, poison_ratio=0.0).messages(200))
    kafka.produce(topic, [(m.key, m.value) for m in messages])
    delivered = sum(1 for m in messages if m.kind == "valid")

    with running_forwarder(config, tmp_path) as forwarder:
        for probe in ("startupProbe", "livenessProbe"):
            assert forwarder.get(container[probe]["httpGet"]["path"])[0] == 200
        readiness = container["readinessProbe"]["httpGet"]["path"]
        wait_until(lambda: forwarder.get(readiness)[0] == 200, 60, "readiness")
        wait_until(lambda: len(sandbox.events()) >= delivered, 90, "events delivered")
        started = time.monotonic()
        exit_code = forwarder.terminate(timeout=60)
        drained_in = time.monotonic() - started

    assert exit_code == 0
    grace = rendered.pod_spec()["terminationGracePeriodSeconds"]
    assert drained_in < grace, f"drain took {drained_in:.1f}s, Kubernetes kills at {grace}s"
    assert kafka.committed_offsets(group, topic) == kafka.end_offsets(topic)
