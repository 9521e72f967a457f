"""Summarises selected dead letters (`capi-stream dlq inspect`) and renders records for people."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from stream.dlq.contract import MESSAGE
from stream.dlq.reader import DeadLetterReader, DeadLetterRecord, Selection


@dataclass(slots=True)
class Summary:
    """Counts over the dead letters read by `inspect`."""

    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_failed: datetime | None = None
    last_failed: datetime | None = None
    truncated: int = 0

    def add(self, record: DeadLetterRecord) -> None:
        self.total += 1
        self.truncated += record.truncated
        self.by_reason[record.reason] += 1
        self.by_source[record.source_topic or "(unknown)"] += 1
        self.messages[(record.reason, record.header(MESSAGE) or "")] += 1
        when = record.failed_at
        if when is not None:
            if self.first_failed is None or when < self.first_failed:
                self.first_failed = when
            if self.last_failed is None or when > self.last_failed:
                self.last_failed = when


def inspect(
    reader: DeadLetterReader,
    selection: Selection,
    show: int,
    on_record: Callable[[DeadLetterRecord], None],
) -> Summary:
    """Summarises the selected records; hands the first `show` of them to `on_record`."""
    summary = Summary()
    for record in reader:
        if selection.past_until(record):
            reader.stop(record.partition, record.offset)
            continue
        if not selection.matches(record):
            continue
        summary.add(record)
        if summary.total <= show:
            on_record(record)
    return summary


def format_time(moment: datetime | None) -> str:
    return moment.isoformat(timespec="milliseconds") if moment is not None else "-"


def render_summary(summary: Summary, topic: str, top: int) -> str:
    lines = [
        f"dead-letter topic {topic}: {summary.total:,} record{'s' if summary.total != 1 else ''}",
    ]
    if not summary.total:
        return "\n".join(lines) + "\n"
    lines.append(f"first failed_at  {format_time(summary.first_failed)}")
    lines.append(f"last failed_at   {format_time(summary.last_failed)}")
    if summary.truncated:
        lines.append(
            f"truncated        {summary.truncated:,} (values cut to fit the topic; replay refuses "
            "them, their source offsets hold the full messages)"
        )
    lines.extend(_table("reason", summary.by_reason.most_common()))
    lines.extend(_table("source topic", summary.by_source.most_common()))
    common = summary.messages.most_common(top)
    lines.append("")
    lines.append(f"top error messages ({len(common)} of {len(summary.messages)} distinct)")
    width = max(len(f"{count:,}") for _key, count in common)
    for (reason, message), count in common:
        lines.append(f"  {count:>{width},}  {reason}: {message or '(empty)'}")
    return "\n".join(lines) + "\n"


def _table(title: str, rows: list[tuple[str, int]]) -> list[str]:
    width = max(len(title), *(len(name) for name, _count in rows))
    lines = ["", f"  {title:<{width}}  {'count':>9}  share"]
    total = sum(count for _name, count in rows)
    for name, count in rows:
        lines.append(f"  {name:<{width}}  {count:>9,}  {100 * count / total:5.1f}%")
    return lines


def render_record(record: DeadLetterRecord, show_values: bool) -> str:
    """One record with its headers; key and value (they may hold raw PII) only when asked."""
    lines = [f"--- {record.coordinates}  failed_at {format_time(record.failed_at)}"]
    lines.extend(
        f"  {name}: {value.decode('utf-8', errors='replace')}" for name, value in record.headers
    )
    for label, data in (("key", record.key), ("value", record.value)):
        if data is None:
            lines.append(f"  {label}: (none)")
        elif show_values:
            lines.append(f"  {label}: {data.decode('utf-8', errors='replace')}")
        else:
            lines.append(f"  {label}: ({len(data):,} bytes hidden; --show-values prints it)")
    return "\n".join(lines) + "\n"
