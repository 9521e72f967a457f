"""`capi-stream dlq inspect|replay` against the real broker, with contract-shaped dead letters."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from stream.cli import main
from stream.dlq.reader import Selection, open_consumer, read_range
from stream.dlq.replay import Progress, Replayer, ReplayOptions, open_producer
from stream.settings import KafkaSettings
from tests.kafka_helpers import Broker, headers_of
from tests.operator.conftest import Letter, OperatorSetup, write_letters

NOW = datetime.now(UTC)
RAW_EMAIL = b"jane.doe@example.com"


def letters_for(source: str, crm: str) -> list[Letter]:
    """Eight dead letters across reasons, sources and three days."""
    return [
        Letter(
            b'{"n":0,"email":"jane.doe@example.com"}',
            b"user-0",
            "rejected_by_pinterest",
            "Invalid event_timestamp parameter.",
            source,
            0,
            10,
            NOW - timedelta(days=3),
            422,
        ),
        Letter(
            b'{"n":1}',
            b"user-1",
            "rejected_by_pinterest",
            "Invalid event_timestamp parameter.",
            source,
            0,
            11,
            NOW - timedelta(days=2),
            422,
        ),
        Letter(
            b'{"n":2}',
            b"user-2",
            "invalid_event",
            "user_data: needs em, hashed_maids or ip+ua",
            source,
            1,
            5,
            NOW - timedelta(days=2),
        ),
        Letter(
            b"not json",
            b"user-3",
            "decode_error",
            "not valid JSON",
            source,
            1,
            6,
            NOW - timedelta(hours=30),
        ),
        Letter(
            b'{"n":4}',
            b"user-4",
            "retries_exhausted",
            "HTTP 503 after 12 attempts",
            crm,
            0,
            1,
            NOW - timedelta(hours=20),
            503,
            12,
        ),
        Letter(
            b'{"n":5}',
            None,
            "retries_exhausted",
            "HTTP 503 after 12 attempts",
            crm,
            0,
            2,
            NOW - timedelta(hours=10),
            503,
            12,
        ),
        Letter(
            b'{"n":6}',
            b"user-6",
            "rejected_by_pinterest",
            "Invalid event_timestamp parameter.",
            source,
            0,
            12,
            NOW - timedelta(hours=2),
            422,
        ),
        Letter(
            b'{"n":7}',
            b"user-7",
            "too_old",
            "event_time is older than 7 days",
            source,
            0,
            13,
            NOW - timedelta(hours=1),
        ),
    ]


@pytest.fixture
def filled(
    kafka: Broker, new_topic: Callable[..., str], operator_setup: Callable[..., OperatorSetup]
) -> tuple[OperatorSetup, str, str]:
    setup = operator_setup()
    source, crm = new_topic(), new_topic()
    write_letters(kafka, setup.dlq, letters_for(source, crm))
    return setup, source, crm


def cli(*args: str) -> int:
    return main(list(args))


def table_row(output: str, name: str) -> int:
    match = re.search(rf"^  {re.escape(name)}\s+([\d,]+)\s", output, re.MULTILINE)
    assert match, f"no row {name!r} in:\n{output}"
    return int(match.group(1).replace(",", ""))


# --- inspect -----------------------------------------------------------------------------------


def test_inspect_summarises_counts_times_and_messages(
    filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, source, crm = filled
    assert cli("dlq", "inspect", "--config", str(setup.config)) == 0
    out = capsys.readouterr().out
    assert f"dead-letter topic {setup.dlq}: 8 records" in out
    assert table_row(out, "rejected_by_pinterest") == 3
    assert table_row(out, "retries_exhausted") == 2
    assert table_row(out, "decode_error") == 1
    assert table_row(out, source) == 6
    assert table_row(out, crm) == 2
    first = (NOW - timedelta(days=3)).isoformat(timespec="milliseconds")
    last = (NOW - timedelta(hours=1)).isoformat(timespec="milliseconds")
    assert f"first failed_at  {first}" in out
    assert f"last failed_at   {last}" in out
    top = out.split("top error messages", 1)[1].splitlines()
    assert "3  rejected_by_pinterest: Invalid event_timestamp parameter." in top[1]
    assert "2  retries_exhausted: HTTP 503 after 12 attempts" in top[2]
    assert "user-0" not in out
    assert "jane.doe" not in out


def test_inspect_shows_headers_and_hides_values_unless_asked(
    filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, source, _crm = filled
    assert cli("dlq", "inspect", "--config", str(setup.config), "--show", "2") == 0
    out = capsys.readouterr().out
    records = out.split("first 2 record(s):", 1)[1]
    assert records.count("--- ") == 2
    assert f"--- {setup.dlq}/0/0" in records
    assert f"--- {setup.dlq}/0/1" in records
    assert f"  capi.source.topic: {source}" in records
    assert "  capi.http.status: 422" in records
    assert "  capi.source.offset: 10" in records
    assert "value: (38 bytes hidden; --show-values prints it)" in records
    assert "jane.doe" not in out
    assert "user-0" not in out

    assert cli("dlq", "inspect", "--config", str(setup.config), "--show", "1", "--show-values") == 0
    out = capsys.readouterr().out
    assert '  value: {"n":0,"email":"jane.doe@example.com"}' in out
    assert "  key: user-0" in out


def test_inspect_filters_by_time_reason_and_source(
    filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, source, crm = filled
    assert cli("dlq", "inspect", "--config", str(setup.config), "--since", "25h") == 0
    out = capsys.readouterr().out
    assert "4 records" in out
    assert table_row(out, "retries_exhausted") == 2

    until = (NOW - timedelta(hours=25)).isoformat()
    assert cli("dlq", "inspect", "--config", str(setup.config), "--until", until) == 0
    assert "4 records" in capsys.readouterr().out

    assert (
        cli(
            "dlq",
            "inspect",
            "--config",
            str(setup.config),
            "--reason",
            "rejected_by_pinterest",
            "--reason",
            "too_old",
            "--source-topic",
            source,
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "4 records" in out
    assert crm not in out


def test_inspect_empty_and_missing_topics(
    operator_setup: Callable[..., OperatorSetup],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = operator_setup(partitions=3)
    assert cli("dlq", "inspect", "--config", str(setup.config)) == 0
    assert f"dead-letter topic {setup.dlq}: 0 records" in capsys.readouterr().out

    monkeypatch.setenv("CAPI_STREAM_KAFKA__DEAD_LETTER_TOPIC", "no-such-dlq-topic")
    assert cli("dlq", "inspect", "--config", str(setup.config)) == 1
    assert "'no-such-dlq-topic' does not exist" in capsys.readouterr().err


def test_reader_stops_at_the_end_captured_at_start(
    kafka: Broker, operator_setup: Callable[..., OperatorSetup]
) -> None:
    setup = operator_setup(partitions=2)
    write_letters(kafka, setup.dlq, [Letter(b"a"), Letter(b"b")], partition=0)
    write_letters(kafka, setup.dlq, [Letter(b"c")], partition=1)
    consumer = open_consumer(KafkaSettings(bootstrap_servers=kafka.bootstrap), "t")
    try:
        reader = read_range(consumer, setup.dlq, None, after_commits=False)
        write_letters(kafka, setup.dlq, [Letter(b"late")] * 3, partition=1)
        values = sorted(record.value or b"" for record in reader)
    finally:
        consumer.close()
    assert values == [b"a", b"b", b"c"]
    assert reader.positions == {0: 2, 1: 1}


def test_bad_time_is_a_usage_error(
    filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, _source, _crm = filled
    assert cli("dlq", "inspect", "--config", str(setup.config), "--since", "yesterday") == 2
    assert "--since" in capsys.readouterr().err


# --- replay ------------------------------------------------------------------------------------


def replayed_by_topic(kafka: Broker, *topics: str) -> dict[str, list[object]]:
    return {topic: kafka.read_all(topic) for topic in topics}


def test_replay_republishes_with_key_and_replay_headers_once(
    kafka: Broker, filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, source, crm = filled
    assert cli("dlq", "replay", "--config", str(setup.config)) == 0
    out = capsys.readouterr().out
    assert "replayed 7 of 8 dead letters" in out
    assert "decode_error: refused without --force: 1" in out

    got = replayed_by_topic(kafka, source, crm)
    assert len(got[source]) == 5
    assert len(got[crm]) == 2
    first = got[source][0]
    assert first.value() == b'{"n":0,"email":"jane.doe@example.com"}'  # type: ignore[attr-defined]
    assert first.key() == b"user-0"  # type: ignore[attr-defined]
    assert headers_of(first) == {"capi.replayed": "1", "capi.replayed_from": f"{setup.dlq}/0/0"}
    assert [m.key() for m in got[crm]] == [b"user-4", None]  # type: ignore[attr-defined]
    assert kafka.committed_offsets(f"{setup.group_id}-dlq-replay", setup.dlq) == {0: 8}

    # The committed position makes a second run a no-op.
    assert cli("dlq", "replay", "--config", str(setup.config)) == 0
    assert "replayed 0 of 0 dead letters" in capsys.readouterr().out
    assert kafka.end_offsets(source) == {0: 5}


def test_replay_selects_and_refuses_decode_errors_without_force(
    kafka: Broker, filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, source, crm = filled
    assert cli("dlq", "replay", "--config", str(setup.config), "--reason", "decode_error") == 2
    assert "--force" in capsys.readouterr().err
    assert kafka.committed_offsets(f"{setup.group_id}-dlq-replay", setup.dlq) == {0: -1001}

    args = ("dlq", "replay", "--config", str(setup.config), "--group", "only-503")
    assert cli(*args, "--reason", "retries_exhausted", "--source-topic", crm) == 0
    out = capsys.readouterr().out
    assert "replayed 2 of 8" in out
    assert "not selected (rejected_by_pinterest): 3" in out
    assert kafka.end_offsets(crm) == {0: 2}
    assert kafka.end_offsets(source) == {0: 0}

    forced = ("dlq", "replay", "--config", str(setup.config), "--group", "forced")
    assert cli(*forced, "--reason", "decode_error", "--force") == 0
    (message,) = kafka.read_all(source)
    assert message.value() == b"not json"  # type: ignore[attr-defined]


def test_replay_dry_run_produces_and_commits_nothing(
    kafka: Broker, filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, source, crm = filled
    assert cli("dlq", "replay", "--config", str(setup.config), "--dry-run", "--since", "1d") == 0
    out = capsys.readouterr().out
    assert "would replay 4 of 4 dead letters" in out
    assert f"{setup.dlq}/0/4 (retries_exhausted) → {crm}" in out
    assert "dry run: nothing produced" in out
    assert kafka.end_offsets(source) == {0: 0}
    assert kafka.end_offsets(crm) == {0: 0}
    assert kafka.committed_offsets(f"{setup.group_id}-dlq-replay", setup.dlq) == {0: -1001}


def test_replay_until_commits_only_up_to_the_boundary(
    kafka: Broker, filled: tuple[OperatorSetup, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup, source, _crm = filled
    target = kafka.create_topic()
    args = ("dlq", "replay", "--config", str(setup.config), "--to-topic", target)
    assert cli(*args, "--until", "26h") == 0
    assert "replayed 3 of 4" in capsys.readouterr().out
    group = f"{setup.group_id}-dlq-replay"
    # Stopped at the first record after --until, so the rest waits for a later run.
    assert kafka.committed_offsets(group, setup.dlq) == {0: 4}
    assert cli(*args) == 0
    assert "replayed 4 of 4" in capsys.readouterr().out
    assert kafka.committed_offsets(group, setup.dlq) == {0: 8}
    froms = [headers_of(m)["capi.replayed_from"] for m in kafka.read_all(target)]
    assert froms == [f"{setup.dlq}/0/{o}" for o in (0, 1, 2, 4, 5, 6, 7)]
    assert kafka.end_offsets(source) == {0: 0}


def test_replay_counts_up_and_keeps_foreign_headers(
    kafka: Broker, operator_setup: Callable[..., OperatorSetup], new_topic: Callable[..., str]
) -> None:
    setup = operator_setup()
    source = new_topic()
    extra = (("capi.replayed", b"2"), ("capi.replayed_from", b"old/0/1"), ("traceparent", b"00-ab"))
    write_letters(kafka, setup.dlq, [Letter(b"v", b"k", source_topic=source, extra_headers=extra)])
    assert cli("dlq", "replay", "--config", str(setup.config)) == 0
    (message,) = kafka.read_all(source)
    assert headers_of(message) == {
        "traceparent": "00-ab",
        "capi.replayed": "3",
        "capi.replayed_from": f"{setup.dlq}/0/0",
    }


def test_replay_to_missing_topic_fails_without_committing(
    kafka: Broker, operator_setup: Callable[..., OperatorSetup], capsys: pytest.CaptureFixture[str]
) -> None:
    setup = operator_setup()
    write_letters(kafka, setup.dlq, [Letter(b"v", source_topic="no-such-source-topic")])
    assert cli("dlq", "replay", "--config", str(setup.config)) == 1
    assert "'no-such-source-topic' does not exist" in capsys.readouterr().err
    assert kafka.committed_offsets(f"{setup.group_id}-dlq-replay", setup.dlq) == {0: -1001}


def test_replay_over_partitions_in_chunks_with_progress(
    kafka: Broker, operator_setup: Callable[..., OperatorSetup], new_topic: Callable[..., str]
) -> None:
    setup = operator_setup(partitions=3)
    source = new_topic()
    for partition in range(3):
        letters = [Letter(f"{partition}-{i}".encode(), source_topic=source) for i in range(400)]
        write_letters(kafka, setup.dlq, letters, partition=partition)
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap)
    consumer = open_consumer(settings, "chunks")
    producer = open_producer(settings)
    stream = io.StringIO()
    progress = Progress("replay", stream, delay_s=0, interval_s=0)
    options = ReplayOptions(Selection(), chunk=250)
    try:
        reader = read_range(consumer, setup.dlq, None, after_commits=True)
        report = Replayer(consumer, producer, options, progress).run(reader, setup.dlq)
    finally:
        producer.flush(10)
        consumer.close()
    assert report.replayed == 1200
    assert report.committed == {0: 400, 1: 400, 2: 400}
    assert kafka.committed_offsets("chunks", setup.dlq) == {0: 400, 1: 400, 2: 400}
    values = sorted(m.value() for m in kafka.read_all(source))  # type: ignore[attr-defined]
    assert values == sorted(f"{p}-{i}".encode() for p in range(3) for i in range(400))
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "replay: 1,200/1,200 scanned (100%), 1,200 replayed"
