"""Dead letters near 1 MB through `capi-stream run`: they fit, or are cut to fit and say so."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import yaml
from confluent_kafka.admin import NewTopic

from stream.cli import main
from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import (
    Scenario,
    assert_delivered_exactly_once,
    new_group,
    produce,
)
from tests.kafka_helpers import Broker, headers_of
from tests.sandbox_helpers import SandboxProcess
from traffic.generator import ClickstreamGenerator

# The size the probe used: librdkafka's default limit (1,000,000) refused it with the
# dead-letter headers added; a default topic (1,048,588) takes it.
NEAR_LIMIT = 999_900
DLQ_LIMIT = 600_000


def topic_with_limit(kafka: Broker, max_message_bytes: int) -> str:
    name = f"dlq-{uuid.uuid4().hex[:12]}"
    admin = kafka.admin()
    topic = NewTopic(
        name,
        num_partitions=1,
        replication_factor=1,
        config={"max.message.bytes": str(max_message_bytes)},
    )
    admin.create_topics([topic])[name].result(timeout=30)
    kafka.wait_for_topic(name, 1)
    return name


def test_near_1mb_dead_letters_fit_compressed_or_cut_and_the_forwarder_commits_past_them(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path, capsys
) -> None:
    topic = new_topic()
    messages = list(ClickstreamGenerator(seed=41, poison_ratio=0.02).messages(2000))
    # Neither is JSON: random bytes do not compress and must be cut for a 600,000-byte topic;
    # the repeated byte compresses to almost nothing and is dead-lettered whole.
    incompressible = os.urandom(NEAR_LIMIT)
    compressible = b"x" * NEAR_LIMIT
    produce(kafka, topic, messages[:1000])
    first_big = kafka.end_offsets(topic)[0]
    kafka.produce(topic, [(b"big-1", incompressible), (b"big-2", compressible)])
    produce(kafka, topic, messages[1000:])
    run = Scenario(kafka, topic, topic_with_limit(kafka, DLQ_LIMIT), new_group(), messages)
    poison = sum(1 for m in messages if m.kind == "poison")

    config = run.config(sandbox)
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(run.committed, 90, "all offsets committed")
        assert forwarder.process.poll() is None, "still running"
        assert forwarder.metric("capi_stream_dead_letters_truncated_total") == 1
        assert forwarder.metric("capi_stream_dead_letters_total") == poison + 2
        assert forwarder.terminate() == 0
    assert_delivered_exactly_once(sandbox, run.expected)
    log = forwarder.log()
    assert f"dead-letter topic {run.dlq} takes records up to {DLQ_LIMIT} bytes" in log
    assert f"too large for {run.dlq}: value of {NEAR_LIMIT} bytes cut to" in log

    letters = {
        int(headers_of(m)["capi.source.offset"]): m for m in kafka.read_all(run.dlq, timeout=60)
    }
    assert len(letters) == poison + 2
    cut, whole = letters[first_big], letters[first_big + 1]
    cut_headers = headers_of(cut)
    assert cut_headers["capi.error.reason"] == "decode_error"
    assert cut_headers["capi.source.topic"] == run.topic
    assert cut_headers["capi.value.truncated"] == "true"
    assert cut_headers["capi.value.bytes"] == str(NEAR_LIMIT)
    assert cut_headers["capi.value.sha256"] == hashlib.sha256(incompressible).hexdigest()
    assert cut.key() == b"big-1"  # type: ignore[attr-defined]
    value = cut.value()  # type: ignore[attr-defined]
    assert DLQ_LIMIT - 2000 < len(value) < DLQ_LIMIT
    assert incompressible.startswith(value)
    assert whole.value() == compressible  # type: ignore[attr-defined]
    assert "capi.value.truncated" not in headers_of(whole)
    assert headers_of(whole)["capi.error.reason"] == "decode_error"

    config_file = tmp_path / "operator.yaml"
    config_file.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["dlq", "replay", "--config", str(config_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 truncated dead letter(s) refused" in out
    assert f"  {run.topic}/0/{first_big} (dead letter {run.dlq}/0/" in out
