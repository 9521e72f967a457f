"""Judges a soak run: what was produced against what the sandbox, the DLQ and Kafka ended with."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.soak.workload import Expectation, hashes_digest

Location = tuple[str, int, int]
SAMPLE = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DeadLetterSeen:
    """The headers of one DLQ record that the oracle needs."""

    reason: str
    location: Location | None


@dataclass(slots=True)
class Deliveries:
    """The sandbox's record, folded per event_id."""

    copies: Counter[str] = field(default_factory=Counter)
    names: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    inconsistent: list[str] = field(default_factory=list)
    hash_mismatches: list[str] = field(default_factory=list)
    per_second: Counter[int] = field(default_factory=Counter)
    by_account: Counter[str] = field(default_factory=Counter)


def read_deliveries(record_file: Path, expected_hashes: Mapping[str, bytes]) -> Deliveries:
    """Streams the sandbox's JSONL record; keeps per event only what the checks need."""
    seen = Deliveries()
    with record_file.open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            event = record["event"]
            event_id = event["event_id"]
            seen.per_second[int(record["received_at"])] += 1
            seen.by_account[record["ad_account_id"]] += 1
            body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
            if event_id in seen.copies:
                same_name = seen.names[event_id] == event["event_name"]
                if not same_name or seen.bodies[event_id] != body:
                    seen.inconsistent.append(event_id)
            else:
                seen.names[event_id] = event["event_name"]
                seen.bodies[event_id] = body
                wanted = expected_hashes.get(event_id)
                if wanted is not None and hashes_digest(event["user_data"]) != wanted:
                    seen.hash_mismatches.append(event_id)
            seen.copies[event_id] += 1
    seen.bodies.clear()  # only needed while reading
    return seen


def dead_letter_from_headers(headers: Iterable[tuple[str, bytes | None]]) -> DeadLetterSeen:
    values = {key: (value or b"").decode(errors="replace") for key, value in headers}
    try:
        location: Location | None = (
            values["capi.source.topic"],
            int(values["capi.source.partition"]),
            int(values["capi.source.offset"]),
        )
    except (KeyError, ValueError):
        location = None
    return DeadLetterSeen(values.get("capi.error.reason", ""), location)


def _sample(items: Iterable[Any]) -> str:
    listed = list(items)
    return ", ".join(map(str, listed[:SAMPLE])) + (" …" if len(listed) > SAMPLE else "")


@dataclass(frozen=True, slots=True)
class Verdict:
    checks: list[Check]
    summary: dict[str, Any]


def judge(
    expectations: list[Expectation],
    locations: list[Location | None],
    deliveries: Deliveries,
    dead_letters: list[DeadLetterSeen],
    committed: Mapping[str, Mapping[int, int]],
    ends: Mapping[str, Mapping[int, int]],
) -> Verdict:
    """The delivery, DLQ, duplicate, hash and offset checks of the soak."""
    checks: list[Check] = []
    to_deliver = {e.event_id: e for e in expectations if e.fate == "deliver" and e.event_id}
    missing = [event_id for event_id in to_deliver if event_id not in deliveries.copies]
    unexpected = [event_id for event_id in deliveries.copies if event_id not in to_deliver]
    checks.append(
        Check(
            "every_valid_event_delivered",
            not missing,
            f"{len(to_deliver) - len(missing)} of {len(to_deliver)} delivered"
            + (f"; missing {_sample(missing)}" if missing else ""),
        )
    )
    checks.append(
        Check(
            "nothing_unexpected_delivered",
            not unexpected,
            f"{len(unexpected)} unexpected event ids"
            + (f": {_sample(unexpected)}" if unexpected else ""),
        )
    )
    duplicates = sum(count - 1 for count in deliveries.copies.values())
    checks.append(
        Check(
            "duplicates_identical",
            not deliveries.inconsistent,
            f"{duplicates} duplicate deliveries; {len(deliveries.inconsistent)} differ from the "
            "first copy (event_name or body)",
        )
    )
    checks.append(
        Check(
            "hashes_match_raw_values",
            not deliveries.hash_mismatches,
            f"{len(deliveries.copies) - len(deliveries.hash_mismatches)} of "
            f"{len(deliveries.copies)} delivered events carry the expected hashes"
            + (
                f"; wrong: {_sample(deliveries.hash_mismatches)}"
                if deliveries.hash_mismatches
                else ""
            ),
        )
    )

    by_location = {loc: i for i, loc in enumerate(locations) if loc is not None}
    wanted_letters: dict[Location, str | None] = {}
    for i, e in enumerate(expectations):
        location = locations[i]
        if e.fate == "dead_letter" and location is not None:
            wanted_letters[location] = e.reason
    found: dict[Location, str] = {}
    wrong_reason: list[str] = []
    stray: list[str] = []
    letters_by_reason: Counter[str] = Counter()
    for letter in dead_letters:
        letters_by_reason[letter.reason] += 1
        where = letter.location
        if where is None or where not in by_location or where not in wanted_letters:
            stray.append(f"{where} ({letter.reason})")
            continue
        if wanted_letters[where] != letter.reason:
            wrong_reason.append(f"{where}: {letter.reason}, expected {wanted_letters[where]}")
        found[where] = letter.reason
    absent = [loc for loc in wanted_letters if loc not in found]
    unique_by_reason = Counter(found.values())
    for reason in ("rejected_by_pinterest", "request_invalid"):
        wanted = [loc for loc, r in wanted_letters.items() if r == reason]
        lost = [loc for loc in wanted if found.get(loc) != reason]
        checks.append(
            Check(
                f"{reason}_in_dlq",
                not lost,
                f"{len(wanted) - len(lost)} of {len(wanted)} in the DLQ with reason {reason}",
            )
        )
    poison = [
        loc
        for loc, r in wanted_letters.items()
        if r not in ("rejected_by_pinterest", "request_invalid")
    ]
    poison_lost = [loc for loc in poison if loc not in found]
    checks.append(
        Check(
            "poison_in_dlq_with_reason",
            not poison_lost and not wrong_reason,
            f"{len(poison) - len(poison_lost)} of {len(poison)} poison messages dead-lettered"
            + (f"; wrong reasons: {_sample(wrong_reason)}" if wrong_reason else "")
            + (f"; missing: {_sample(poison_lost)}" if poison_lost else ""),
        )
    )
    checks.append(
        Check(
            "nothing_else_in_dlq",
            not stray and not absent,
            f"{len(dead_letters)} DLQ records, {len(found)} distinct messages; "
            f"{len(stray)} unexpected, {len(absent)} expected but absent"
            + (f": {_sample(stray)}" if stray else ""),
        )
    )
    offsets_ok = all(dict(committed.get(topic, {})) == dict(end) for topic, end in ends.items())
    checks.append(
        Check(
            "committed_equals_end_offsets",
            offsets_ok,
            "; ".join(
                f"{topic}: committed {sorted(dict(committed.get(topic, {})).items())} "
                f"end {sorted(dict(end).items())}"
                for topic, end in ends.items()
            ),
        )
    )
    kinds = Counter((e.source, e.fate) for e in expectations)
    summary: dict[str, Any] = {
        "events_produced": len(expectations),
        "produced_by_source_and_fate": {f"{s}/{f}": n for (s, f), n in sorted(kinds.items())},
        "distinct_events_delivered": len(deliveries.copies),
        "deliveries_total": sum(deliveries.copies.values()),
        "duplicate_deliveries": duplicates,
        "deliveries_by_ad_account": dict(deliveries.by_account),
        "dlq_records": len(dead_letters),
        "dlq_distinct_by_reason": dict(sorted(unique_by_reason.items())),
        "dlq_records_by_reason": dict(sorted(letters_by_reason.items())),
        "dlq_duplicate_records": len(dead_letters) - len(found) - len(stray),
    }
    return Verdict(checks, summary)


class PiiScanner:
    """Finds the soak's raw emails, phones, names and token in text; reports kinds, never values."""

    EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
    PHONE = re.compile(r"\+?\d[\d ()-]{7,}\d")

    def __init__(
        self,
        emails: Iterable[str],
        phones: Iterable[str],
        names: Iterable[str],
        secrets: Iterable[str],
    ) -> None:
        self._emails = {e.strip().lower() for e in emails}
        self._phones = {re.sub(r"\D", "", p).lstrip("0") for p in phones}
        self._names = re.compile(
            r"(?<!\w)(?:" + "|".join(re.escape(n) for n in sorted(set(names))) + r")(?!\w)"
        )
        self._secrets = [s for s in secrets if s]

    def hits(self, text: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for match in self.EMAIL.finditer(text):
            if match.group().lower() in self._emails:
                found["email"] += 1
        for match in self.PHONE.finditer(text):
            digits = re.sub(r"\D", "", match.group()).lstrip("0")
            if digits in self._phones:
                found["phone"] += 1
        found["name"] += sum(1 for _ in self._names.finditer(text))
        found["token"] += sum(text.count(secret) for secret in self._secrets)
        return +found

    def scan(self, paths: Iterable[Path]) -> dict[str, dict[str, int]]:
        """Hits per file and kind (files without any are left out)."""
        result: dict[str, dict[str, int]] = {}
        for path in paths:
            found = self.hits(path.read_text(errors="replace"))
            if found:
                result[str(path)] = dict(found)
        return result
