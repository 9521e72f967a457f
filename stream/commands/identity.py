"""`capi-stream identity forget`: tombstones a user's identity profile on every changelog."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from stream.errors import CapiStreamError, ConfigurationError
from stream.identity.profile import identity_key
from stream.settings import load_settings

TIMEOUT_S = 30.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["forget"], help="forget: delete a user's profile")
    parser.add_argument("--config", type=Path, help="YAML configuration file (default: built-in)")
    parser.add_argument(
        "--user-id", action="append", default=[], help="a userId to forget (repeatable)"
    )
    parser.add_argument(
        "--anonymous-id", action="append", default=[], help="an anonymousId to forget (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    kafka = settings.kafka
    changelogs = [
        settings.identity.changelog_topic(kafka.group_id, topic)
        for topic in settings.enriched_topics()
    ]
    if not changelogs:
        raise ConfigurationError("sources", "no source has enrich: identity")
    named = [identity_key(b"u", user) for user in args.user_id]
    named += [identity_key(b"a", anonymous) for anonymous in args.anonymous_id]
    keys = [key for key in named if key is not None]
    if not keys:
        raise ConfigurationError("--user-id", "name at least one --user-id or --anonymous-id")
    config: dict[str, str | int | float | bool] = {**kafka.client_config()}
    metadata = AdminClient(config).list_topics(timeout=TIMEOUT_S)
    failures: list[KafkaError] = []
    producer = Producer({**config, "acks": "all", "enable.idempotence": "true"})
    written = 0
    for changelog in changelogs:
        topic = metadata.topics.get(changelog)
        if topic is None or topic.error is not None:
            continue  # never created: nothing was ever stored for that source
        # The key's partition follows the producer's partitioner, unknown here: every
        # partition gets the tombstone, and a running forwarder applies the one it owns.
        for partition in topic.partitions:
            for key in keys:
                producer.produce(
                    changelog,
                    None,
                    key,
                    partition=partition,
                    on_delivery=lambda error, _m: failures.append(error) if error else None,
                )
                written += 1
    if producer.flush(TIMEOUT_S) > 0 or failures:
        raise CapiStreamError(f"{len(failures) or 'some'} tombstones were not acknowledged")
    # Only counts: the ids themselves are personal data.
    print(f"forgot {len(keys)} identities: {written} tombstones written", file=sys.stdout)
    return 0
