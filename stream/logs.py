"""Logging setup (plain or JSON lines), secret redaction and rate limiting for storms."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from stream.settings import LoggingSettings, Settings, mask_url_password

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "***"
# Safety net only: code must not log PII in the first place. These catch what slips through
# (an exception text echoing a header or a payload) before it reaches a log store.
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s'\",]+"),
    re.compile(r"(?i)(access_token[\"']?\s*[:=]\s*[\"']?)[^\s'\",&]+"),
    re.compile(r"()[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
)
# Attributes every LogRecord has; anything else came in through `extra=` and goes to JSON.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def configure_logging(
    settings: LoggingSettings, *, secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> None:
    """Installs one root handler; `secrets` (e.g. the access token) are masked wherever they
    appear. Calling it again replaces the previous setup."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter() if settings.format == "json" else logging.Formatter(PLAIN_FORMAT)
    )
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    # Per-request access lines would dwarf everything else and say nothing an operator needs.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, `extra=` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            # exc_text is the copy the redacting filter already cleaned.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RedactingFilter(logging.Filter):
    """Masks known secrets, bearer tokens and e-mail addresses in the final message text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text


class RateLimitedLogger:
    """Logs the first occurrence of each key, then at most one line per `interval_s` per key,
    saying how many similar lines it held back; for storms such as a broker outage."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._next_at: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object, count: int = 1) -> None:
        """`key` groups similar lines (e.g. "retry:429"); keep it bounded, like a metric label.

        `count` > 1 stands for that many occurrences at once (the first may be logged, the
        others are held back as if each had been passed on its own).
        """
        now = self._clock()
        if now < self._next_at.get(key, -float("inf")):
            self._suppressed[key] = self._suppressed.get(key, 0) + count
            return
        self._next_at[key] = now + self._interval_s
        held_back = self._suppressed.pop(key, 0)
        if count > 1:
            self._suppressed[key] = count - 1
        if held_back:
            msg += " (%d similar messages suppressed)"
            args = (*args, held_back)
        self._logger.log(level, msg, *args)

    def info(self, key: str, msg: str, *args: object, count: int = 1) -> None:
        self.log(logging.INFO, key, msg, *args, count=count)

    def warning(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.ERROR, key, msg, *args)


def log_config_summary(logger: logging.Logger, settings: Settings) -> None:
    """The startup line: what this process will read, where it sends, its limits. No secrets."""
    sources = ", ".join(
        f"{s.topic}({s.format}→{settings.ad_account_for(s) or '?'})" for s in settings.sources
    )
    logger.info(
        "starting: brokers=%s group=%s sources=[%s] dlq=%s api=%s test_mode=%s "
        "batch=%d events/%d bytes/%d ms concurrency=%d..%d buffer=%d events/%d bytes "
        "metrics=%s:%d token=%s",
        settings.kafka.bootstrap_servers,
        settings.kafka.group_id,
        sources,
        settings.kafka.dead_letter_topic,
        mask_url_password(settings.pinterest.api_base_url),
        settings.pinterest.test_mode,
        settings.batching.max_events,
        settings.batching.max_bytes,
        settings.batching.linger_ms,
        settings.sending.initial_concurrency,
        settings.sending.max_concurrency,
        settings.buffer.max_events,
        settings.buffer.max_bytes,
        settings.metrics.host,
        settings.metrics.port,
        "file" if settings.pinterest.access_token_file else REDACTED,
    )
    for warning in settings.security_warnings():
        logger.warning("insecure configuration: %s", warning)
