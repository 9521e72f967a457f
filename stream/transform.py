"""Turns one Kafka message into a sendable Pinterest event, a dead letter, or a skip."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson

from stream.decode import dotted, exact_text
from stream.errors import ConfigurationError, InvalidMessage
from stream.formats import FORMATS, Mapper, MapperFactory
from stream.formats.base import Identified, Normalizing
from stream.hashing import Hasher
from stream.identity.profile import LDP, OPT_OUT, IdentityProfiles
from stream.identity.store import Store
from stream.models import DeadLetter, PinterestEvent, Signal, Skipped, TransformResult
from stream.settings import OptOutRule, Settings, SourceSettings
from stream.urls import UrlScrubber
from stream.validate import (
    ConstructedCheck,
    EncodedCheck,
    check_rules,
    constructed_checker,
    encoded_checker,
    safe_path,
)

logger = logging.getLogger(__name__)

# Dead-letter messages go into Kafka headers; field names from a hostile message could be long.
MAX_MESSAGE_CHARS: Final = 200
# A tombstone (no value) is no event in any format.
_NO_VALUE: Final = DeadLetter("decode_error", "message has no value")
_IDENTIFY: Final = Skipped("segment identify message")
_UNKNOWN_ACCOUNT: Final = "ad_account_id: not one of the configured ad accounts"


def _rule_text(value: Any) -> str | None:
    if value.__class__ is bool:
        return "true" if value else "false"
    if value.__class__ in (str, int, float):
        return str(value).lower()
    return None


@dataclass(frozen=True, slots=True)
class MatchRule:
    """A compiled opt-out rule: does the message's field hold one of the values?"""

    path: tuple[str, ...]
    values: frozenset[str]

    @classmethod
    def of(cls, rule: OptOutRule | None) -> MatchRule | None:
        if rule is None:
            return None
        values = frozenset(filter(None, (_rule_text(v) for v in rule.values)))
        return cls(tuple(rule.field.split(".")), values)

    def matches(self, message: Mapping[str, Any]) -> bool:
        found = dotted(message, self.path)
        candidates = found if found.__class__ is list else (found,)
        return any(_rule_text(item) in self.values for item in candidates)


AddedUserData: TypeAlias = tuple[tuple[str, tuple[str, ...]], ...]
"""The user_data fields an LDP rule adds (`st`, `country`), with their hashes."""


@dataclass(frozen=True, slots=True)
class LdpRules:
    """A source's compiled `LdpRule`s: per message field, each value that flags LDP and the
    user_data its rule adds. Rules on one field (one per state) cost one lookup per message."""

    fields: tuple[tuple[tuple[str, ...], Mapping[str, AddedUserData]], ...]

    def match(self, message: Mapping[str, Any]) -> AddedUserData | None:
        """What to add if a rule matches (possibly nothing), None if none does."""
        for path, values in self.fields:
            found = dotted(message, path)
            for item in found if found.__class__ is list else (found,):
                added = values.get(_rule_text(item) or "")
                if added is not None:
                    return added
        return None


IdPaths: TypeAlias = tuple[tuple[tuple[str, ...], str], ...]
"""A source's `event_id_path`: each path split, and as written (for errors)."""


@dataclass(frozen=True, slots=True)
class _Source:
    """Per-source state compiled once: the mapper, the accounts a message may route to, where
    the event_id comes from and the privacy rules (with the hashed user_data the LDP rule adds)."""

    source: SourceSettings
    mapper: Mapper
    spec_typed: bool
    ad_account_id: str | None
    # The accounts a message may route itself to (DESIGN §3): the configured ones.
    ad_accounts: frozenset[str]
    ldp: LdpRules | None
    opt_out: MatchRule | None
    event_id_paths: IdPaths
    urls: UrlScrubber
    enrich: bool


_IP_AND_USER_AGENT: Final = int(Signal.IP_AND_USER_AGENT)
_EMAIL: Final = int(Signal.EMAIL)
_HASHED_MAIDS: Final = int(Signal.HASHED_MAIDS)
_EXTERNAL_ID: Final = int(Signal.EXTERNAL_ID)
_CLICK_ID: Final = int(Signal.CLICK_ID)
_SIGNALS: Final = tuple(Signal(bits) for bits in range(2 * max(Signal)))


def signals_of(user_data: Mapping[str, Any]) -> Signal:
    """The matching signals present in an event's `user_data`."""
    # Plain int arithmetic, then one tuple lookup: IntFlag's `|` is slow on the hot path.
    bits = 0
    if "client_ip_address" in user_data and "client_user_agent" in user_data:
        bits = _IP_AND_USER_AGENT
    if "em" in user_data:
        bits |= _EMAIL
    if "hashed_maids" in user_data:
        bits |= _HASHED_MAIDS
    if "external_id" in user_data:
        bits |= _EXTERNAL_ID
    if "click_id" in user_data:
        bits |= _CLICK_ID
    return _SIGNALS[bits]


class Transformer:
    """decode and map (by the source's format) → hash → validate → encode, for one message.

    Never raises on bad input: anything that cannot become a valid event is a `DeadLetter`
    whose message names fields, never values nor keys outside the spec. What every format
    shares is applied here, after the mapper: the size limit (before decoding), the ad-account
    allowlist and the scrubbing of `event_source_url`. A source whose `format` is not in
    `formats` raises `ConfigurationError` when it is compiled.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        hash_cache_size: int = 8192,
        formats: Mapping[str, MapperFactory] = FORMATS,
        profiles: IdentityProfiles | None = None,
    ) -> None:
        """`profiles` is the identity stage of the sources with `enrich: identity` (built from
        `settings.identity` if not given)."""
        self._settings = settings
        self.profiles = profiles or IdentityProfiles(settings.identity.ttl_days * 86_400, clock)
        self._clock = clock
        self._hasher = Hasher(hash_cache_size)
        self._formats = formats
        self._max_bytes = settings.kafka.max_message_bytes
        self._ad_accounts = settings.configured_ad_accounts()
        self._check: EncodedCheck = encoded_checker()
        self._check_constructed: ConstructedCheck = constructed_checker()
        # Keyed by identity: settings models are not hashable, and the source object is the one
        # the caller holds. The value keeps the source alive so its id cannot be reused.
        self._sources: dict[int, _Source] = {}
        self._normalized: list[Mapping[str, int]] = []
        self._ldp_without_state = 0
        self._warned_ldp_without_state: set[str] = set()
        for source in settings.sources:
            self._compile(source)

    @property
    def truncated(self) -> Mapping[str, int]:
        """Values the per-message caps dropped so far, per field (a live view, read at scrape
        time): the hashed fields' beyond 50 distinct ones, `contents` beyond 1,000."""
        return self._hasher.truncated

    def _compile(self, source: SourceSettings) -> _Source:
        factory = self._formats.get(source.format)
        if factory is None:
            raise ConfigurationError(
                f"sources.{source.source_name}.format",
                f"unknown format {source.format!r} (known: {', '.join(sorted(self._formats))})",
            )
        mapper = factory(source, self._hasher)
        if isinstance(mapper, Normalizing):
            self._normalized.append(mapper.normalized)
        ad_account_id = self._settings.ad_account_for(source)
        compiled = _Source(
            source=source,
            mapper=mapper,
            spec_typed=mapper.spec_typed,
            ad_account_id=ad_account_id,
            ad_accounts=self._ad_accounts | {ad_account_id} if ad_account_id else self._ad_accounts,
            ldp=self._ldp_rules(source),
            opt_out=MatchRule.of(source.opt_out),
            event_id_paths=tuple((tuple(path.split(".")), path) for path in source.event_id_path),
            urls=UrlScrubber(source.url_parameters_kept),
            enrich=source.enrich == "identity",
        )
        self._sources[id(source)] = compiled
        return compiled

    def _ldp_rules(self, source: SourceSettings) -> LdpRules | None:
        """The source's LDP rules with their `state` / `country` hashed once; on one value the
        first rule listed wins."""
        if source.ldp is None:
            return None
        rules = source.ldp if isinstance(source.ldp, list) else [source.ldp]
        fields: dict[tuple[str, ...], dict[str, AddedUserData]] = {}
        for index, rule in enumerate(rules):
            added = []
            for field, key, value in (
                ("st", "state", rule.state),
                ("country", "country", rule.country),
            ):
                if value is None:
                    continue
                hashed = self._hasher.hash_values(field, [value])
                if not hashed:
                    where = f"[{index}]" if isinstance(source.ldp, list) else ""
                    raise ConfigurationError(
                        f"sources.{source.source_name}.ldp{where}.{key}",
                        "normalizes to nothing (DESIGN §2)",
                    )
                added.append((field, tuple(hashed)))
            values = fields.setdefault(tuple(rule.field.split(".")), {})
            for text_value in filter(None, map(_rule_text, rule.values)):
                values.setdefault(text_value, tuple(added))
        return LdpRules(tuple(fields.items()))

    def normalized(self) -> dict[str, int]:
        """Messages whose shape a format normalized instead of dead-lettering, per kind, over
        every source so far (read at scrape time)."""
        totals: dict[str, int] = {}
        for counts in self._normalized:
            for what, count in counts.items():
                totals[what] = totals.get(what, 0) + count
        return totals

    def ldp_without_state(self) -> int:
        """Events sent flagged LDP without `user_data.st` (Pinterest asks for the state)."""
        return self._ldp_without_state

    def transform(
        self,
        source: SourceSettings,
        value: bytes | None,
        kafka_timestamp_ms: int | None,
        identities: Store | None = None,
        partition: int = 0,
    ) -> TransformResult:
        """`identities` is the store of the message's partition (`partition`) for a source with
        `enrich: identity`; without it the message is mapped on its own."""
        compiled = self._sources.get(id(source))
        if compiled is None or compiled.source is not source:
            compiled = self._compile(source)
        if value is None:
            return _NO_VALUE
        if len(value) > self._max_bytes:
            # Unparsed: decoding, hashing and validating scale with the size (DESIGN §4).
            return DeadLetter(
                "invalid_event",
                f"message of {len(value)} bytes over kafka.max_message_bytes ({self._max_bytes})",
            )
        try:
            return self._transform(compiled, value, kafka_timestamp_ms, identities, partition)
        except InvalidMessage as exc:
            return DeadLetter(exc.reason, exc.message[:MAX_MESSAGE_CHARS])
        except RecursionError:
            return DeadLetter("decode_error", "message is nested too deeply")
        except Exception as exc:  # noqa: BLE001 - one hostile message must not stop the stream
            logger.warning("unexpected %s while transforming a message", type(exc).__name__)
            return DeadLetter("mapping_error", f"unexpected {type(exc).__name__} while mapping")

    def _transform(
        self,
        compiled: _Source,
        value: bytes,
        kafka_timestamp_ms: int | None,
        identities: Store | None,
        partition: int,
    ) -> TransformResult:
        mapped = compiled.mapper.map(value, kafka_timestamp_ms)
        if mapped.__class__ is Skipped:
            return mapped
        if mapped.__class__ is Identified:
            self._learn(compiled, mapped, identities, partition)
            return _IDENTIFY
        event, message, own_account = mapped  # type: ignore[misc]
        if own_account is not None and own_account not in compiled.ad_accounts:
            # An account the token may not serve would hold the partition's commits for ever.
            raise InvalidMessage("invalid_event", _UNKNOWN_ACCOUNT)
        if compiled.event_id_paths:
            _take_event_id(event, message, value, compiled.event_id_paths)
        url = event.get("event_source_url")
        if url.__class__ is str:
            event["event_source_url"] = compiled.urls.scrub(url)
        if compiled.opt_out is not None and compiled.opt_out.matches(message):
            event["opt_out"] = True
        added = None if compiled.ldp is None else compiled.ldp.match(message)
        if added is not None:
            _flag_ldp(event, added)
            ldp = True
        else:
            # Only messages passed through can carry the flag themselves.
            ldp = not compiled.spec_typed and _carries_ldp(event)
        if compiled.enrich and identities is not None:
            flags = (OPT_OUT if event.get("opt_out") is True else 0) | (LDP if ldp else 0)
            known = self.profiles.enrich(identities, partition, message, event, flags)
            if known & OPT_OUT:
                event["opt_out"] = True
            if known & LDP and not ldp:
                _flag_ldp(event, ())
                ldp = True
        body = orjson.dumps(event)
        if compiled.spec_typed:
            # The mapper (and the flags above) only build spec keys with spec types.
            problem = self._check_constructed(event)
        else:
            # Passed-through shapes: the schema is checked on exactly the bytes to be sent.
            problem = self._check(body, event)
        if problem is not None:
            path, text = problem
            raise InvalidMessage("invalid_event", f"{safe_path(path) or 'event'}: {text}")
        verdict = check_rules(event, self._clock())
        if verdict is not None:
            raise InvalidMessage(verdict.reason, verdict.message)
        if ldp and "st" not in event["user_data"]:
            self._count_ldp_without_state(compiled.source)
        # Positional: keyword arguments measurably slow the construction on this hot path.
        # The body is copied: orjson hands back its whole output buffer (~8 KB of RSS for a 1 KB
        # event, benchmarks/bench_buffer_memory.py), and the event is held until it settles. A
        # join of two parts always builds a new object, at a third of a memoryview's cost.
        return PinterestEvent(
            event["event_id"],
            event["event_name"],
            event["action_source"],
            event["event_time"],
            own_account or compiled.ad_account_id,
            b"".join((body, b"")),
            signals_of(event["user_data"]),
        )

    def _learn(
        self,
        compiled: _Source,
        identified: Identified,
        identities: Store | None,
        partition: int,
    ) -> None:
        """Remembers who an identify call names, with the privacy the source's rules give it."""
        if identities is None:
            return
        message = identified.message
        opt_out = identified.opt_out or (
            compiled.opt_out is not None and compiled.opt_out.matches(message)
        )
        added = None if compiled.ldp is None else compiled.ldp.match(message)
        user_data = identified.user_data
        if added:
            # What the LDP rule adds to an event (the state) is learned with the flag.
            user_data = {**{field: list(hashes) for field, hashes in added}, **user_data}
        ldp = added is not None
        self.profiles.learn(
            identities,
            partition,
            message,
            user_data,
            identified.event_time,
            (OPT_OUT if opt_out else 0) | (LDP if ldp else 0),
        )

    def _count_ldp_without_state(self, source: SourceSettings) -> None:
        self._ldp_without_state += 1
        name = source.source_name
        if name not in self._warned_ldp_without_state:
            self._warned_ldp_without_state.add(name)
            logger.warning(
                "source %s sends events flagged LDP without user_data.st: Pinterest asks for the "
                "state of residence with LDP (set sources[].ldp.state, or send it); counted in "
                "capi_stream_ldp_without_state_total, logged once",
                name,
            )


def _take_event_id(
    event: dict[str, Any],
    message: Mapping[str, Any],
    raw: bytes,
    paths: IdPaths,
) -> None:
    """The first id found at the source's `event_id_path` replaces the format's choice."""
    for path, name in paths:
        found = dotted(message, path)
        if found.__class__ is str:
            if found:
                event["event_id"] = found
                return
        elif found is not None:
            event["event_id"] = exact_text(found, raw, path, name)
            return


def _flag_ldp(event: dict[str, Any], user_data: AddedUserData) -> None:
    """Flags LDP in `opt_out_type`; adds the rule's hashed `st` / `country` the event lacks."""
    custom = event.setdefault("custom_data", {})
    if custom.__class__ is dict:  # a malformed custom_data is the validator's to report
        existing = custom.get("opt_out_type")
        if existing.__class__ is str and existing:
            flags = [flag.strip() for flag in existing.split(",")]
            if "LDP" not in flags:
                custom["opt_out_type"] = ",".join([*flags, "LDP"])
        else:
            custom["opt_out_type"] = "LDP"
    person = event.get("user_data")
    if user_data and person.__class__ is dict:
        for field, hashes in user_data:
            if field not in person:
                person[field] = list(hashes)


def _carries_ldp(event: Mapping[str, Any]) -> bool:
    custom = event.get("custom_data")
    if custom.__class__ is not dict:
        return False
    flags = custom.get("opt_out_type")
    return flags.__class__ is str and any(flag.strip() == "LDP" for flag in flags.split(","))
