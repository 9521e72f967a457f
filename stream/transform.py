"""Turns one Kafka message into a sendable Pinterest event, a dead letter, or a skip."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from stream.decode import dotted
from stream.errors import ConfigurationError, InvalidMessage
from stream.formats import FORMATS, Mapper, MapperFactory
from stream.hashing import Hasher
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
_UNKNOWN_ACCOUNT: Final = "ad_account_id: not one of the configured ad accounts"


def _rule_text(value: Any) -> str | None:
    if value.__class__ is bool:
        return "true" if value else "false"
    if value.__class__ in (str, int, float):
        return str(value).lower()
    return None


@dataclass(frozen=True, slots=True)
class MatchRule:
    """A compiled `OptOutRule`: does the message's field hold one of the values?"""

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


@dataclass(frozen=True, slots=True)
class _Source:
    """Per-source state compiled once: the mapper, the accounts and the privacy rules."""

    source: SourceSettings
    mapper: Mapper
    spec_typed: bool
    ad_account_id: str | None
    # The accounts a message may route itself to (DESIGN §3): the configured ones.
    ad_accounts: frozenset[str]
    ldp: MatchRule | None
    opt_out: MatchRule | None
    urls: UrlScrubber


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
    ) -> None:
        self._settings = settings
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
        ad_account_id = self._settings.ad_account_for(source)
        compiled = _Source(
            source=source,
            mapper=mapper,
            spec_typed=mapper.spec_typed,
            ad_account_id=ad_account_id,
            ad_accounts=self._ad_accounts | {ad_account_id} if ad_account_id else self._ad_accounts,
            ldp=MatchRule.of(source.ldp),
            opt_out=MatchRule.of(source.opt_out),
            urls=UrlScrubber(source.url_parameters_kept),
        )
        self._sources[id(source)] = compiled
        return compiled

    def transform(
        self, source: SourceSettings, value: bytes | None, kafka_timestamp_ms: int | None
    ) -> TransformResult:
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
            return self._transform(compiled, value, kafka_timestamp_ms)
        except InvalidMessage as exc:
            return DeadLetter(exc.reason, exc.message[:MAX_MESSAGE_CHARS])
        except RecursionError:
            return DeadLetter("decode_error", "message is nested too deeply")
        except Exception as exc:  # noqa: BLE001 - one hostile message must not stop the stream
            logger.warning("unexpected %s while transforming a message", type(exc).__name__)
            return DeadLetter("mapping_error", f"unexpected {type(exc).__name__} while mapping")

    def _transform(
        self, compiled: _Source, value: bytes, kafka_timestamp_ms: int | None
    ) -> TransformResult:
        mapped = compiled.mapper.map(value, kafka_timestamp_ms)
        if mapped.__class__ is Skipped:
            return mapped
        event, message, own_account = mapped  # type: ignore[misc]
        if own_account is not None and own_account not in compiled.ad_accounts:
            # An account the token may not serve would hold the partition's commits for ever.
            raise InvalidMessage("invalid_event", _UNKNOWN_ACCOUNT)
        url = event.get("event_source_url")
        if url.__class__ is str:
            event["event_source_url"] = compiled.urls.scrub(url)
        if compiled.opt_out is not None and compiled.opt_out.matches(message):
            event["opt_out"] = True
        if compiled.ldp is not None and compiled.ldp.matches(message):
            self._flag_ldp(event)
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
        # Positional: keyword arguments measurably slow the frozen dataclass on this hot path.
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

    @staticmethod
    def _flag_ldp(event: dict[str, Any]) -> None:
        custom = event.setdefault("custom_data", {})
        if custom.__class__ is not dict:
            return  # a malformed custom_data is the validator's to report
        existing = custom.get("opt_out_type")
        if existing.__class__ is str and existing:
            flags = [flag.strip() for flag in existing.split(",")]
            if "LDP" not in flags:
                custom["opt_out_type"] = ",".join([*flags, "LDP"])
        else:
            custom["opt_out_type"] = "LDP"
