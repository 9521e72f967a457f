"""Logging: plain and JSON lines, secrets and PII masked, storms rate-limited."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from stream.logs import RateLimitedLogger, configure_logging, log_config_summary
from stream.settings import LoggingSettings, load_settings

TOKEN = "pina_SECRETtoken123456789"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def configured(fmt: str, level: str = "INFO") -> io.StringIO:
    out = io.StringIO()
    settings = LoggingSettings(format=fmt, level=level)  # type: ignore[arg-type]
    configure_logging(settings, secrets=[TOKEN], stream=out)
    return out


@pytest.mark.usefixtures("restore_root")
def test_plain_format() -> None:
    out = configured("plain")
    logging.getLogger("stream.test").info("assigned %d partitions", 3)
    line = out.getvalue().strip()
    assert line.endswith("INFO stream.test: assigned 3 partitions")


@pytest.mark.usefixtures("restore_root")
def test_json_format_carries_extra_fields_and_exceptions() -> None:
    out = configured("json")
    log = logging.getLogger("stream.test")
    log.warning("paused %s", "web-0", extra={"partition": 0})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "WARNING"
    assert first["logger"] == "stream.test"
    assert first["message"] == "paused web-0"
    assert first["partition"] == 0
    assert first["time"].endswith("+00:00")
    assert "RuntimeError: boom" in second["exception"]


@pytest.mark.usefixtures("restore_root")
def test_level_filters() -> None:
    out = configured("plain", level="WARNING")
    logging.getLogger("stream.test").info("hidden")
    assert out.getvalue() == ""


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_secrets_and_emails_are_masked(fmt: str) -> None:
    out = configured(fmt)
    log = logging.getLogger("stream.test")
    log.error("token %s rejected", TOKEN)
    log.error("header was Authorization: Bearer abc.def-ghi")
    log.error("payload mentioned %s", "Jane.Doe+capi@example.co.uk")
    log.error("query access_token=zzz123&x=1", extra={"detail": f"raw {TOKEN}"})
    try:
        raise ValueError(f"cannot send for jane@example.com with {TOKEN}")
    except ValueError:
        log.exception("send failed")
    text = out.getvalue()
    for leaked in (TOKEN, "abc.def-ghi", "Jane.Doe", "example.co.uk", "zzz123", "jane@"):
        assert leaked not in text
    assert text.count("***") >= 6


@pytest.mark.usefixtures("restore_root")
def test_configure_twice_keeps_one_handler() -> None:
    configured("plain")
    out = configured("json")
    logging.getLogger("stream.test").info("once")
    assert len(logging.getLogger().handlers) == 1
    assert len(out.getvalue().splitlines()) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_logger_holds_back_a_storm(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = RateLimitedLogger(logging.getLogger("stream.storm"), interval_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="stream.storm"):
        for _ in range(1000):
            limited.warning("retry:429", "throttled by Pinterest (status %d)", 429)
        limited.warning("retry:503", "Pinterest unavailable (status %d)", 503)
        clock.now = 10.0
        limited.warning("retry:429", "throttled by Pinterest (status %d)", 429)
        limited.error("retry:429", "throttled by Pinterest (status %d)", 429)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "throttled by Pinterest (status 429)",
        "Pinterest unavailable (status 503)",
        "throttled by Pinterest (status 429) (999 similar messages suppressed)",
    ]


def test_a_count_of_occurrences_logs_like_as_many_calls(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = RateLimitedLogger(logging.getLogger("stream.storm"), interval_s=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="stream.storm"):
        limited.info("warning:1:em_missing", "warned %s", "a", count=500)
        limited.info("warning:1:em_missing", "warned %s", "a", count=499)
        clock.now = 10.0
        limited.info("warning:1:em_missing", "warned %s", "a", count=3)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["warned a", "warned a (998 similar messages suppressed)"]


def test_config_summary_masks_the_token(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        environ={
            "CAPI_STREAM_PINTEREST__ACCESS_TOKEN": TOKEN,
            "CAPI_STREAM_PINTEREST__AD_ACCOUNT_ID": "549755885175",
            "CAPI_STREAM_KAFKA__TOPICS": "web,app",
        }
    )
    with caplog.at_level(logging.INFO, logger="stream.summary"):
        log_config_summary(logging.getLogger("stream.summary"), settings)
    (message,) = [r.getMessage() for r in caplog.records]
    assert TOKEN not in message
    assert "token=***" in message
    assert "web(segment→549755885175)" in message
    assert "app(segment→549755885175)" in message


def test_config_summary_masks_a_url_password_and_warns_about_weak_transport(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(
        environ={
            "CAPI_STREAM_PINTEREST__API_BASE_URL": f"https://proxy:{TOKEN}@api.example.com",
            "CAPI_STREAM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        }
    )
    with caplog.at_level(logging.INFO):
        log_config_summary(logging.getLogger("stream.summary"), settings)
    summary, warning = caplog.records
    assert TOKEN not in summary.getMessage()
    assert "api=https://proxy:***@api.example.com" in summary.getMessage()
    assert warning.levelno == logging.WARNING
    assert "SASL_PLAINTEXT" in warning.getMessage()
