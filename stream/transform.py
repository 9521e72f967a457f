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
from stream.validate import (
    ConstructedCheck,
    EncodedCheck,
    check_rules,
    constructed_checker,
    encoded_checker,
)

logger = logging.getLogger(__name__)

# Dead-letter messages go into Kafka headers; field names from a hostile message could be long.
MAX_MESSAGE_CHARS: Final = 200
# A tombstone (no value) is no event in any format.
_NO_VALUE: Final = DeadLetter("decode_error", "message has no value")


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
    """Per-source state compiled once: the mapper, the default account and the privacy rules."""

    source: SourceSettings
    mapper: Mapper
    spec_typed: bool
    ad_account_id: str | None
    ldp: MatchRule | None
    opt_out: MatchRule | None


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
    whose message names fields, never values. A source whose `format` is not in `formats`
    raises `ConfigurationError` when it is compiled.
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
        self._check: EncodedCheck = encoded_checker()
        self._check_constructed: ConstructedCheck = constructed_checker()
        # Keyed by identity: settings models are not hashable, and the source object is the one
        # the caller holds. The value keeps the source alive so its id cannot be reused.
        self._sources: dict[int, _Source] = {}
        for source in settings.sources:
            self._compile(source)

    def _compile(self, source: SourceSettings) -> _Source:
        factory = self._formats.get(source.format)
        if factory is None:
            raise ConfigurationError(
                f"sources.{source.source_name}.format",
                f"unknown format {source.format!r} (known: {', '.join(sorted(self._formats))})",
            )
        mapper = factory(source, self._hasher)
        compiled = _Source(
            source=source,
            mapper=mapper,
            spec_typed=mapper.spec_typed,
            ad_account_id=self._settings.ad_account_for(source),
            ldp=MatchRule.of(source.ldp),
            opt_out=MatchRule.of(source.opt_out),
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
        try:
            mapped = compiled.mapper.map(value, kafka_timestamp_ms)
            if mapped.__class__ is Skipped:
                return mapped
            event, message, own_account = mapped  # type: ignore[misc]
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
                raise InvalidMessage("invalid_event", f"{path or 'event'}: {text}")
            verdict = check_rules(event, self._clock())
            if verdict is not None:
                raise InvalidMessage(verdict.reason, verdict.message)
            # Positional: keyword arguments measurably slow the frozen dataclass on this hot
            # path.
            return PinterestEvent(
                event["event_id"],
                event["event_name"],
                event["action_source"],
                event["event_time"],
                own_account or compiled.ad_account_id,
                body,
                signals_of(event["user_data"]),
            )
        except InvalidMessage as exc:
            return DeadLetter(exc.reason, exc.message[:MAX_MESSAGE_CHARS])
        except RecursionError:
            return DeadLetter("decode_error", "message is nested too deeply")
        except Exception as exc:  # noqa: BLE001 - one hostile message must not stop the stream
            logger.warning("unexpected %s while transforming a message", type(exc).__name__)
            return DeadLetter("mapping_error", f"unexpected {type(exc).__name__} while mapping")

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
