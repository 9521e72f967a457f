"""`capi-stream dlq inspect|replay`: options and output around `stream.dlq`."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from stream.dlq.contract import DEAD_LETTER_REASONS
from stream.dlq.inspect import inspect, render_record, render_summary
from stream.dlq.reader import Selection, open_consumer, read_range, select
from stream.dlq.replay import (
    REFUSED_WITHOUT_FORCE,
    Progress,
    Replayer,
    ReplayOptions,
    open_producer,
    render_replay,
)
from stream.errors import ConfigurationError
from stream.settings import Settings, load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="inspect|replay")
    inspect_parser = actions.add_parser(
        "inspect",
        help="summarise the dead-letter topic",
        description="Reads the dead-letter topic up to its current end and summarises it: counts "
        "by reason and source topic, first and last failure, the most common error messages.",
    )
    _common(inspect_parser)
    inspect_parser.add_argument(
        "--show", type=int, default=0, metavar="N", help="also print the first N records"
    )
    inspect_parser.add_argument(
        "--show-values",
        action="store_true",
        help="print keys and values with --show (they may hold raw PII)",
    )
    inspect_parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="error messages listed (default 10)"
    )

    replay_parser = actions.add_parser(
        "replay",
        help="re-publish dead letters to their source topic",
        description="Re-publishes the selected dead letters to their original topic (or "
        "--to-topic) with the original key; the error headers are replaced by capi.replayed and "
        "capi.replayed_from. Offsets of the replay group are committed on the dead-letter topic "
        "after the broker acknowledged, so running it again does not replay the same records. "
        "Records a run passes over (not selected) are behind the group's position afterwards. "
        "Truncated dead letters (capi.value.truncated) are never replayed: the report lists "
        "their source offsets, where the full messages are while the source topic retains them.",
    )
    _common(replay_parser)
    replay_parser.add_argument(
        "--to-topic", help="publish here instead of each record's source topic"
    )
    replay_parser.add_argument(
        "--group",
        help="consumer group for the replay position (default: <kafka.group_id>-dlq-replay)",
    )
    replay_parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="ignore the group's committed position and start at the oldest dead letter",
    )
    replay_parser.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    replay_parser.add_argument(
        "--force", action="store_true", help="also replay decode_error dead letters"
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument(
        "--reason",
        action="append",
        choices=DEAD_LETTER_REASONS,
        help="only this reason (repeatable)",
    )
    parser.add_argument(
        "--source-topic", action="append", help="only dead letters of this topic (repeatable)"
    )
    parser.add_argument(
        "--since", help="failed at or after: ISO-8601 time (UTC if no zone) or 30m, 2h, 7d ago"
    )
    parser.add_argument("--until", help="failed at or before: same forms as --since")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    selection = select(args.reason, args.source_topic, args.since, args.until)
    if args.action == "inspect":
        return _inspect(args, settings, selection)
    return _replay(args, settings, selection)


def _inspect(args: argparse.Namespace, settings: Settings, selection: Selection) -> int:
    if args.show < 0 or args.top < 1:
        raise ConfigurationError("--show/--top", "must be positive")
    topic = settings.kafka.dead_letter_topic
    # Assign-only and never committing, so this group id leaves no trace on the cluster.
    group = f"{settings.kafka.group_id}-dlq-inspect-{uuid.uuid4().hex[:8]}"
    consumer = open_consumer(settings.kafka, group)
    try:
        reader = read_range(consumer, topic, selection.since, after_commits=False)
        shown: list[str] = []
        summary = inspect(
            reader,
            selection,
            args.show,
            lambda record: shown.append(render_record(record, args.show_values)),
        )
    finally:
        consumer.close()
    sys.stdout.write(render_summary(summary, topic, args.top))
    if shown:
        sys.stdout.write(f"\nfirst {len(shown)} record(s):\n" + "".join(shown))
    return 0


def _replay(args: argparse.Namespace, settings: Settings, selection: Selection) -> int:
    if args.reason and not args.force:
        refused = REFUSED_WITHOUT_FORCE & set(args.reason)
        if refused:
            raise ConfigurationError(
                "--reason",
                f"{', '.join(sorted(refused))} would fail again the same way; add --force "
                "if the source topic's consumers have changed",
            )
    topic = settings.kafka.dead_letter_topic
    group = args.group or f"{settings.kafka.group_id}-dlq-replay"
    options = ReplayOptions(
        selection=selection, to_topic=args.to_topic, force=args.force, dry_run=args.dry_run
    )
    consumer = open_consumer(settings.kafka, group)
    producer = None if args.dry_run else open_producer(settings.kafka)
    progress = Progress("replay")
    try:
        reader = read_range(consumer, topic, selection.since, after_commits=not args.from_beginning)
        report = Replayer(consumer, producer, options, progress).run(reader, topic)
    finally:
        progress.close()
        if producer is not None:
            producer.flush(10)
        consumer.close()
    sys.stdout.write(render_replay(report, topic, group, args.dry_run))
    return 0
