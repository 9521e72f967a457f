"""`dlq inspect|replay` with dead letters whose value was cut to fit, against the real broker."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from stream.cli import main
from tests.kafka_helpers import Broker
from tests.operator.conftest import Letter, OperatorSetup, write_letters

FULL = b'{"event":"checkout","padding":"' + b"x" * 5000 + b'"}'


def cut(source: str, offset: int, reason: str) -> Letter:
    """A dead letter as the forwarder writes one too large for its topic."""
    return Letter(
        FULL[:1000],
        b"user-1",
        reason,
        "not valid JSON" if reason == "decode_error" else "Invalid id.",
        source,
        2,
        offset,
        extra_headers=(
            ("capi.value.truncated", b"true"),
            ("capi.value.bytes", str(len(FULL)).encode()),
            ("capi.value.sha256", hashlib.sha256(FULL).hexdigest().encode()),
        ),
    )


def test_replay_refuses_truncated_dead_letters_even_forced_and_points_at_the_source(
    kafka: Broker,
    new_topic: Callable[..., str],
    operator_setup: Callable[..., OperatorSetup],
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup = operator_setup()
    source = new_topic()
    letters = [
        cut(source, 40, "decode_error"),
        Letter(b'{"n":1}', b"user-2", source_topic=source, source_offset=41),
        cut(source, 42, "rejected_by_pinterest"),
    ]
    write_letters(kafka, setup.dlq, letters)

    assert main(["dlq", "inspect", "--config", str(setup.config)]) == 0
    assert "truncated        2 (values cut to fit the topic" in capsys.readouterr().out

    assert main(["dlq", "replay", "--config", str(setup.config), "--force"]) == 0
    out = capsys.readouterr().out
    assert "replayed 1 of 3 dead letters" in out
    assert "truncated: value cut to fit the dead-letter topic, never replayed: 2" in out
    assert "2 truncated dead letter(s) refused; each full message is at its source" in out
    assert f"  {source}/2/40 (dead letter {setup.dlq}/0/0)\n" in out
    assert f"  {source}/2/42 (dead letter {setup.dlq}/0/2)\n" in out
    replayed = kafka.read_all(source)
    assert [m.value() for m in replayed] == [b'{"n":1}']  # type: ignore[attr-defined]
    assert f"group {setup.group_id}-dlq-replay committed (partition:offset) 0:3" in out
