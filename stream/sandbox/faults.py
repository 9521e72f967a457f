"""The sandbox's fault-injection knobs: their validation, and the draw that picks a request's fate.

Knobs (JSON keys of `GET/PUT /_admin/faults`; the CLI flag is the same name with dashes):

    latency_ms                 fixed delay before answering (ms)
    jitter_ms                  extra uniform random delay in [0, jitter_ms) (ms)
    error_500/502/503          probability of answering 500 / 502 / 503
    throttle_429               probability of answering 429 (code 8), whatever the rate limit
    reset                      probability of resetting the connection without an answer
    hang                       probability of never answering (until the client gives up)
    outage_seconds             503 code 4197 for every request during the next N seconds
    reject_event_ids           regex: events whose event_id matches fail (per event)
    invalid_request_event_ids  regex: a request containing a matching event_id gets a 400
    token_revoked              answer 401 (code 2) to every request, as for a revoked token
    rate_limit                 requests per minute per ad account (x-ratelimit-* headers, 429)
    eqs_error                  HTTP status (400, 401, 403, 404, 429, 500, 502 or 503) that every
                               GET conversion_eqs gets instead of the score; null: none. The
                               knobs above concern the events endpoint only.

The probabilities are exclusive outcomes of one draw per request, so their sum must be ≤ 1.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal

from stream.errors import ConfigurationError

Fate = Literal["ok", "error_500", "error_502", "error_503", "throttle_429", "reset", "hang"]
PROBABILITY_KNOBS: Final[tuple[Fate, ...]] = (
    "error_500",
    "error_502",
    "error_503",
    "throttle_429",
    "reset",
    "hang",
)
DEFAULT_RATE_LIMIT: Final = 5000
EQS_ERRORS: Final = frozenset({400, 401, 403, 404, 429, 500, 502, 503})


@dataclass(frozen=True, slots=True)
class Faults:
    """One consistent set of knobs; replaced as a whole when changed at run time."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_500: float = 0.0
    error_502: float = 0.0
    error_503: float = 0.0
    throttle_429: float = 0.0
    reset: float = 0.0
    hang: float = 0.0
    outage_until: float = 0.0
    reject_event_ids: str | None = None
    invalid_request_event_ids: str | None = None
    token_revoked: bool = False
    rate_limit: int = DEFAULT_RATE_LIMIT
    eqs_error: int | None = None

    def updated(self, changes: dict[str, Any], now: float) -> Faults:
        """A copy with `changes` (knob name → value) applied; ConfigurationError names a bad knob.

        `outage_seconds` starts an outage window of that length at `now` (0 ends it).
        """
        known = {field.name for field in fields(self)} - {"outage_until"}
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "outage_seconds":
                values["outage_until"] = now + _number(key, value, 0.0, None)
            elif key not in known:
                raise ConfigurationError(key, "unknown fault knob")
            elif key in ("latency_ms", "jitter_ms"):
                values[key] = _number(key, value, 0.0, None)
            elif key in PROBABILITY_KNOBS:
                values[key] = _number(key, value, 0.0, 1.0)
            elif key in ("reject_event_ids", "invalid_request_event_ids"):
                values[key] = _pattern(key, value)
            elif key == "token_revoked":
                if not isinstance(value, bool):
                    raise ConfigurationError(key, "must be true or false")
                values[key] = value
            elif key == "eqs_error":
                if value is not None and (isinstance(value, bool) or value not in EQS_ERRORS):
                    raise ConfigurationError(key, f"must be null or one of {sorted(EQS_ERRORS)}")
                values[key] = value
            else:
                values[key] = int(_number(key, value, 1.0, None))
        result = replace(self, **values)
        if sum(getattr(result, name) for name in PROBABILITY_KNOBS) > 1.0:
            raise ConfigurationError(
                "+".join(PROBABILITY_KNOBS), "the fault probabilities must add up to at most 1"
            )
        return result

    def as_json(self, now: float) -> dict[str, Any]:
        """The knobs as `GET /_admin/faults` shows them (`outage_seconds` = time left)."""
        shown: dict[str, Any] = {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name != "outage_until"
        }
        shown["outage_seconds"] = round(max(0.0, self.outage_until - now), 3)
        return shown

    def delay_s(self, rng: random.Random) -> float:
        jitter = rng.random() * self.jitter_ms if self.jitter_ms else 0.0
        return (self.latency_ms + jitter) / 1000.0

    def draw(self, rng: random.Random) -> Fate:
        """Picks one outcome for a request according to the probabilities."""
        roll = rng.random()
        for name in PROBABILITY_KNOBS:
            chance: float = getattr(self, name)
            if roll < chance:
                return name
            roll -= chance
        return "ok"


def _number(key: str, value: Any, low: float, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(key, "must be a number")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and at most {high:g}"
        raise ConfigurationError(key, f"must be at least {low:g}{upper}")
    return float(value)


def _pattern(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(key, "must be a regular expression or null")
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigurationError(key, f"invalid regular expression: {exc}") from exc
    return value
