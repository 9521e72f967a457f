"""Real dead letters from `capi-stream run`, inspected and replayed once the cause is fixed."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from stream.cli import main
from tests.forwarder.harness import forwarder_config, running_forwarder, wait_until
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import SandboxProcess
from traffic.generator import ClickstreamGenerator


def settled(kafka: Broker, group: str, topic: str) -> bool:
    return kafka.committed_offsets(group, topic) == kafka.end_offsets(topic)


def test_forwarder_dead_letters_are_inspected_then_replayed_and_delivered(
    kafka: Broker,
    new_topic: Callable[..., str],
    sandbox: SandboxProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, dlq = new_topic(partitions=2), new_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    messages = list(ClickstreamGenerator(seed=31, poison_ratio=0.05).messages(2000))
    valid = [m for m in messages if m.kind == "valid"]
    poison = Counter(m.reason for m in messages if m.kind == "poison")
    rejected = {m.event_id for m in valid if m.event_id and m.event_id[0] in "01"}
    assert rejected
    assert poison
    sandbox.set_faults(reject_event_ids="^[01]")
    kafka.produce(topic, [(m.key, m.value) for m in messages])
    config = forwarder_config(
        kafka.bootstrap, sandbox, [topic], group_id=group, dead_letter_topic=dlq
    )
    config_file = tmp_path / "operator.yaml"
    config_file.write_text(yaml.safe_dump(config))

    with running_forwarder(config, tmp_path):
        wait_until(lambda: settled(kafka, group, topic), 90, "first pass settled")
        assert main(["dlq", "inspect", "--config", str(config_file), "--show", "1"]) == 0
        out = capsys.readouterr().out
        total = len(rejected) + sum(poison.values())
        assert f"dead-letter topic {dlq}: {total:,} records" in out
        counts = dict(re.findall(r"^  (\w+)\s+([\d,]+)\s+[\d.]+%$", out, re.MULTILINE))
        assert counts["rejected_by_pinterest"] == f"{len(rejected):,}"
        for reason, count in poison.items():
            assert counts[str(reason)] == f"{count:,}"
        assert f"  capi.source.topic: {topic}" in out
        assert "bytes hidden; --show-values prints it" in out

        # The cause is fixed; the rejected events go back to their topic and are delivered.
        sandbox.clear_faults()
        replay = [
            "dlq",
            "replay",
            "--config",
            str(config_file),
            "--reason",
            "rejected_by_pinterest",
        ]
        assert main(replay) == 0
        out = capsys.readouterr().out
        assert f"replayed {len(rejected):,} of {total:,}" in out
        wait_until(
            lambda: rejected <= {e["event"]["event_id"] for e in sandbox.events()},
            90,
            "replayed events delivered",
        )
        wait_until(lambda: settled(kafka, group, topic), 90, "replayed messages settled")
        assert main(replay) == 0
        assert "replayed 0 of 0" in capsys.readouterr().out

    delivered = Counter(e["event"]["event_id"] for e in sandbox.events())
    assert set(delivered) == {m.event_id for m in valid}
    assert max(delivered.values()) == 1
    # Nothing new was dead-lettered by the replay.
    assert len(kafka.read_all(dlq)) == total
