"""Judges a soak run: what was produced against what the sandbox, the DLQ and Kafka ended with."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import orjson

from tests.soak.poison import Poison
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
    """One DLQ record: its reason and source coordinates, its headers, and its value where the
    oracle checks it (poison messages)."""

    reason: str
    location: Location | None
    headers: Mapping[str, str] = field(default_factory=dict)
    value: bytes | None = None


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
    return DeadLetterSeen(values.get("capi.error.reason", ""), location, values)


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


REQUIRED_HEADERS = ("capi.error.message", "capi.attempts", "capi.failed_at")
TRUNCATION_HEADERS = ("capi.value.truncated", "capi.value.bytes", "capi.value.sha256")


def _letter_problems(poison: Poison, letter: DeadLetterSeen, dlq_max_bytes: int) -> list[str]:
    """What is wrong with one dead letter of a poison message (empty: nothing)."""
    problems: list[str] = []
    headers, original = letter.headers, poison.value
    if letter.reason != poison.produced.expectation.reason:
        problems.append(f"reason {letter.reason}, expected {poison.produced.expectation.reason}")
    problems += [f"no {name}" for name in REQUIRED_HEADERS if not headers.get(name)]
    if headers.get("capi.value.truncated") == "true":
        kept = letter.value or b""
        if headers.get("capi.value.bytes") != str(len(original)):
            problems.append(f"capi.value.bytes {headers.get('capi.value.bytes')}")
        if headers.get("capi.value.sha256") != hashlib.sha256(original).hexdigest():
            problems.append("capi.value.sha256 is not the original's")
        if not (len(kept) < min(len(original), dlq_max_bytes) and original.startswith(kept)):
            problems.append(f"cut value of {len(kept)} bytes is not a short prefix")
        if poison.must_cut is False:
            problems.append("cut although it fits uncompressed")
    else:
        if any(name in headers for name in TRUNCATION_HEADERS):
            problems.append("truncation headers on a whole dead letter")
        if letter.value != original:
            problems.append("value differs from the original message")
        if poison.must_cut:
            problems.append(f"whole although {len(original):,} bytes do not fit compressed")
    return problems


def judge_poison(
    poisons: list[tuple[Poison, Location | None]],
    dead_letters: list[DeadLetterSeen],
    deliveries: Deliveries,
    dlq_max_bytes: int,
) -> Verdict:
    """Each poison message dead-lettered (every copy with its reason, the error and source
    headers, and cut to fit exactly where it must be), or delivered where transform says it
    is valid; tallies per kind."""
    letters: dict[Location, list[DeadLetterSeen]] = {}
    for letter in dead_letters:
        if letter.location is not None:
            letters.setdefault(letter.location, []).append(letter)
    bad_letters: list[str] = []
    undelivered: list[str] = []
    tallies: dict[str, Counter[str]] = {}
    for poison, location in poisons:
        tally = tallies.setdefault(poison.kind, Counter())
        tally["produced"] += 1
        expected = poison.produced.expectation
        found = letters.get(location, []) if location is not None else []
        where = f"{poison.kind} {location[1:] if location else '(not produced)'}"
        if expected.fate == "dead_letter":
            if not found:
                bad_letters.append(f"{where}: not dead-lettered")
                continue
            tally[f"dead_lettered:{expected.reason}"] += 1
            tally["dlq_duplicates"] += len(found) - 1
            tally["cut_to_fit"] += found[0].headers.get("capi.value.truncated") == "true"
            for letter in found:
                bad_letters += [
                    f"{where}: {p}" for p in _letter_problems(poison, letter, dlq_max_bytes)
                ]
        elif found:
            bad_letters.append(
                f"{where}: dead-lettered ({found[0].reason}), expected {expected.fate}"
            )
        elif expected.fate == "deliver":
            if expected.event_id in deliveries.copies:
                tally["delivered"] += 1
            else:
                undelivered.append(where)
        else:
            tally["skipped"] += 1
    wanted = sum(1 for poison, _ in poisons if poison.produced.expectation.fate == "dead_letter")
    valid = sum(1 for poison, _ in poisons if poison.produced.expectation.fate == "deliver")
    checks = [
        Check(
            "poison_dead_lettered_with_headers",
            not bad_letters,
            f"{wanted} poison messages to dead-letter, "
            f"{sum(t['cut_to_fit'] for t in tallies.values())} cut to fit"
            + (f"; problems: {_sample(bad_letters)}" if bad_letters else ""),
        ),
        Check(
            "poison_delivered_where_valid",
            not undelivered,
            f"{valid - len(undelivered)} of {valid} valid poison messages delivered"
            + (f"; missing: {_sample(undelivered)}" if undelivered else ""),
        ),
    ]
    summary = {
        "poison_by_kind": {
            kind: dict(sorted((+tally).items())) for kind, tally in sorted(tallies.items())
        }
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
        unique = sorted(set(names))
        self._names = (
            re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, unique)) + r")(?!\w)")
            if unique
            else None
        )
        self._secrets = [s for s in secrets if s]

    def found(self, text: str) -> set[str]:
        """The raw emails and phones (normalized) that occur in `text`."""
        values = {m.group().lower() for m in self.EMAIL.finditer(text)} & self._emails
        for match in self.PHONE.finditer(text):
            digits = re.sub(r"\D", "", match.group()).lstrip("0")
            if digits in self._phones:
                values.add(digits)
        return values

    def hits(self, text: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for match in self.EMAIL.finditer(text):
            if match.group().lower() in self._emails:
                found["email"] += 1
        for match in self.PHONE.finditer(text):
            digits = re.sub(r"\D", "", match.group()).lstrip("0")
            if digits in self._phones:
                found["phone"] += 1
        if self._names is not None:
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


# Hashed values, and ids that are hex: their digit runs are no phone numbers.
_HEX_RUN = re.compile(r"[0-9a-f]{32,}")


def sent_text(text: str) -> str:
    """What a scan for raw PII reads of something sent: percent-decoded (URLs), hex removed."""
    return _HEX_RUN.sub("", unquote_plus(text))


def scan_sent(record_file: Path, scanner: PiiScanner, expected_leaks: set[str]) -> Check:
    """Every event the sandbox received, every field (the whole JSON line), for raw canaries.
    `expected_leaks` are the canaries transform itself puts in an event it builds (a behaviour
    not landed yet): reported apart, so the check tightens by itself once it lands."""
    leaked: set[str] = set()
    lines = 0
    with record_file.open("rb") as records:
        for line in records:
            lines += 1
            leaked |= scanner.found(sent_text(line.decode(errors="replace")))
    unexplained = leaked - expected_leaks
    kinds = Counter("email" if "@" in value else "phone" for value in unexplained)
    return Check(
        "no_raw_pii_sent_to_pinterest",
        not unexplained,
        f"{lines:,} events received by the sandbox scanned for raw emails and phones; "
        f"raw: {dict(kinds) or 'none'}"
        + (
            f"; {len(leaked & expected_leaks)} raw canaries that transform itself sends "
            "(predicted, not yet scrubbed)"
            if leaked & expected_leaks
            else ""
        ),
    )
