"""The Kafka half of `capi-stream verify`: bootstrap, source topics, dead-letter topic, group."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AclOperation,
    AdminClient,
    ConfigResource,
    ResourceType,
)

from stream.settings import Settings
from stream.source import DEFAULT_CONSUMER_CONFIG

# One metadata attempt; the loop around it stops at the deadline or at an error that waiting
# cannot fix, so an unreachable cluster is reported in about this long, not after the timeout.
ATTEMPT_S: Final = 0.5
GIVE_UP: Final = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION})
ASSIGNOR: Final = "partition.assignment.strategy"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing checked: `problem` is None when it is fine; `detail` says what was seen."""

    subject: str
    problem: str | None = None
    detail: str = ""


def check_kafka(settings: Settings, timeout_s: float) -> list[Finding]:
    """Every finding about the cluster the forwarder would use; nothing is written to it."""
    kafka = settings.kafka
    errors: list[KafkaError] = []
    # librdkafka's own log would repeat every failed connection on stderr; the error
    # callback collects the same reasons for the report.
    config: dict[str, Any] = {**kafka.client_config(), "error_cb": errors.append, "log_level": 0}
    admin = AdminClient(config)
    subject = f"bootstrap {kafka.bootstrap_servers}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata = admin.list_topics(timeout=ATTEMPT_S)
            break
        except KafkaException as exc:
            admin.poll(0)
            if time.monotonic() >= deadline or any(e.code() in GIVE_UP for e in errors):
                return [Finding(subject, f"unreachable: {_reason(errors, exc)}")]
    brokers = len(metadata.brokers)
    findings = [Finding(subject, detail=f"{brokers} broker{'s' if brokers != 1 else ''}")]
    sources = list(dict.fromkeys(source.topic for source in settings.sources))
    topics = [*sources, kafka.dead_letter_topic]
    described = admin.describe_topics(
        TopicCollection(topics), include_authorized_operations=True, request_timeout=timeout_s
    )
    found: dict[str, Any] = {}
    for topic in topics:
        dlq = topic == kafka.dead_letter_topic
        try:
            found[topic] = described[topic].result()
        except KafkaException as exc:
            key = "kafka.dead_letter_topic" if dlq else "the source's topic"
            what = "dead-letter topic" if dlq else "source topic"
            findings.append(Finding(f"{what} {topic}", _topic_problem(exc, key)))
    limits = _topic_configs(admin, list(found), timeout_s)
    findings += [_source_finding(found[t], limits.get(t, {})) for t in sources if t in found]
    if kafka.dead_letter_topic in found:
        source_limits = {
            t: limits[t]["max.message.bytes"]
            for t in sources
            if "max.message.bytes" in limits.get(t, {})
        }
        findings.append(
            _dead_letter_finding(
                found[kafka.dead_letter_topic],
                limits.get(kafka.dead_letter_topic, {}),
                source_limits,
            )
        )
    findings += _changelog_findings(metadata, settings)
    findings.append(_group_finding(admin, settings, timeout_s))
    return findings


def _changelog_findings(metadata: Any, settings: Settings) -> list[Finding]:
    """Identity enrichment's changelog topics: one partition per source partition."""
    findings = []
    for topic in settings.enriched_topics():
        changelog = settings.identity.changelog_topic(settings.kafka.group_id, topic)
        subject = f"identity changelog {changelog}"
        source, existing = metadata.topics.get(topic), metadata.topics.get(changelog)
        if existing is None or existing.error is not None:
            findings.append(Finding(subject, detail="created at start-up (needs CREATE on it)"))
        elif source is not None and len(existing.partitions) != len(source.partitions):
            findings.append(
                Finding(
                    subject,
                    f"has {len(existing.partitions)} partitions, {topic} has "
                    f"{len(source.partitions)}: recreate it with as many",
                )
            )
        else:
            findings.append(Finding(subject, detail=f"{len(existing.partitions)} partitions"))
    return findings


def _reason(errors: list[KafkaError], exc: KafkaException) -> str:
    # "All brokers are down" says less than the connection error before it.
    specific = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
    error = specific[-1] if specific else errors[-1] if errors else exc.args[0]
    return str(error.str())


def _topic_problem(exc: KafkaException, key: str) -> str:
    code = exc.args[0].code()
    if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return f"does not exist; create it, or correct {key}"
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return "not authorized: this principal may not DESCRIBE it (Kafka ACLs)"
    return f"cannot be described: {exc.args[0].str()}"


def _topic_configs(admin: AdminClient, topics: list[str], timeout_s: float) -> dict[str, Any]:
    """max.message.bytes and min.insync.replicas per topic; a topic whose configuration may not
    be read (no DescribeConfigs ACL) is left out, and its limits go unchecked."""
    if not topics:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    limits: dict[str, Any] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        entries = _result(future.result)
        if entries is None:
            continue
        limits[resource.name] = {
            name: int(entries[name].value)
            for name in ("max.message.bytes", "min.insync.replicas")
            if name in entries and entries[name].value is not None
        }
    return limits


def _result(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except KafkaException:
        return None


def _lacks(description: Any, operation: AclOperation) -> bool:
    # None: the broker did not say (an old broker); only a definite answer is a problem.
    allowed = description.authorized_operations
    return allowed is not None and operation not in allowed


def _partitions(description: Any) -> str:
    count = len(description.partitions)
    return f"{count} partition{'s' if count != 1 else ''}"


def _leaderless(description: Any) -> list[int]:
    return [p.id for p in description.partitions if p.leader is None or p.leader.id < 0]


def _source_finding(description: Any, limits: dict[str, int]) -> Finding:
    subject = f"source topic {description.name}"
    problems = []
    if _lacks(description, AclOperation.READ):
        problems.append("this principal may not READ it (Kafka ACLs)")
    if leaderless := _leaderless(description):
        problems.append(f"partitions {leaderless} have no leader")
    detail = _partitions(description)
    if "max.message.bytes" in limits:
        detail += f", max.message.bytes {limits['max.message.bytes']}"
    return Finding(subject, "; ".join(problems) or None, detail)


def _dead_letter_finding(
    description: Any, limits: dict[str, int], source_limits: dict[str, int]
) -> Finding:
    """Writable without writing: a test record would be replayed as a dead letter, so the
    checks are the ACL, a leader and enough in-sync replicas for acks=all on every partition,
    and room for the largest message a source topic holds (a dead letter carries it whole)."""
    subject = f"dead-letter topic {description.name}"
    problems = []
    if _lacks(description, AclOperation.WRITE):
        problems.append("this principal may not WRITE to it (Kafka ACLs)")
    if leaderless := _leaderless(description):
        problems.append(f"partitions {leaderless} have no leader")
    min_isr = limits.get("min.insync.replicas", 1)
    short = [p.id for p in description.partitions if len(p.isr) < min_isr]
    if short:
        problems.append(
            f"partitions {short} have fewer in-sync replicas than min.insync.replicas={min_isr}:"
            " acks=all writes fail"
        )
    detail = _partitions(description)
    largest = limits.get("max.message.bytes")
    if largest is None:
        detail += ", max.message.bytes not readable (DescribeConfigs not allowed)"
    else:
        detail += f", max.message.bytes {largest}"
        problems += [
            f"max.message.bytes {largest} is below source topic {topic}'s {size}: dead letters "
            f"of its largest messages would be refused; raise it to at least {size}"
            for topic, size in source_limits.items()
            if size > largest
        ]
    return Finding(subject, "; ".join(problems) or None, detail)


def _group_finding(admin: AdminClient, settings: Settings, timeout_s: float) -> Finding:
    group = settings.kafka.group_id
    subject = f"group {group}"
    future = admin.describe_consumer_groups(
        [group], include_authorized_operations=True, request_timeout=timeout_s
    )[group]
    try:
        description = future.result()
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return Finding(subject, "not authorized: this principal may not use the group (ACLs)")
        return Finding(subject, f"cannot be described: {exc.args[0].str()}")
    if _lacks(description, AclOperation.READ):
        return Finding(subject, "this principal may not READ the group: it cannot join or commit")
    members = len(description.members)
    state = str(description.state).rpartition(".")[2].lower()
    detail = f"{state}, {members} member{'s' if members != 1 else ''}"
    if state == "dead":  # what Kafka calls a group nobody has used yet
        detail = "not used yet"
    properties = settings.kafka.properties
    ours = properties.get(ASSIGNOR, DEFAULT_CONSUMER_CONFIG[ASSIGNOR])
    theirs = description.partition_assignor
    if members and theirs and theirs not in {s.strip() for s in ours.split(",")}:
        return Finding(
            subject,
            f"its members use the {theirs} assignor and this configuration {ours}: the "
            "forwarder could not join; use another group_id or the same assignor",
            detail,
        )
    return Finding(subject, detail=detail)
