"""What the running forwarder must make of one message, as `stream.transform` decides it and the
dispatcher's check of the configured ad accounts completes it: the fuzz and soak oracles' rule."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from stream.models import DeadLetter, PinterestEvent, Skipped
from stream.settings import Settings, SourceSettings
from stream.transform import Transformer

Fate = Literal["deliver", "dead_letter", "skip"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """`event` is what transform built (also for an event refused for its ad account)."""

    fate: Fate
    reason: str | None
    event: PinterestEvent | None = None


class Predictor:
    """Runs the forwarder's own `Transformer` on a message. An event for an ad account outside
    `Settings.configured_ad_accounts()` is an `invalid_event` dead letter whichever stage refuses
    it (today the dispatcher, the mapper once the allow-list moves there), so the prediction
    holds as that behaviour moves; everything else is what transform returned."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._transformer = Transformer(settings, clock)
        self._accounts = settings.configured_ad_accounts()

    def source(self, topic: str) -> SourceSettings:
        return next(source for source in self.settings.sources if source.topic == topic)

    def outcome(
        self, source: SourceSettings, value: bytes | None, kafka_timestamp_ms: int | None
    ) -> Outcome:
        result = self._transformer.transform(source, value, kafka_timestamp_ms)
        if isinstance(result, DeadLetter):
            return Outcome("dead_letter", result.reason)
        if isinstance(result, Skipped):
            return Outcome("skip", None)
        if result.ad_account_id not in self._accounts:
            return Outcome("dead_letter", "invalid_event", result)
        return Outcome("deliver", None, result)
