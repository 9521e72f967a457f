"""Event Quality Score: the bundled schema, parsing answers, metric values, settings; no I/O."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream.errors import ConfigurationError
from stream.metrics import Metrics
from stream.quality import (
    STATUS_VALUES,
    QualityPollError,
    parse_scores,
    quality_poller,
    quality_token,
    series_of,
)
from stream.settings import load_settings
from stream.spec import (
    EQS_SPEC_FILE,
    INGESTION_SOURCES,
    LOOKBACK_PERIODS,
    OVERALL_STATUSES,
    QUALITY_COMPONENTS,
    SOURCE_PLATFORMS,
    schema,
    spec,
)

ACCOUNT = "549764106778"


def answer() -> list[dict[str, Any]]:
    """An answer shaped like the example in Pinterest's EQS guide, plus overlap and issues."""
    return [
        {
            "overall_status": "FAIR",
            "ingestion_source": "CONVERSIONS_API",
            "source_platform": "WEB",
            "lookback_period": "14d",
            "quality_components": {
                "ip_address": {"checkout": {"coverage": 100}, "page_visit": {"coverage": 98.5}},
                "hashed_email": {
                    "checkout": {
                        "coverage": 3,
                        "issues": [
                            {
                                "id": "low_coverage",
                                "name": "Low email coverage",
                                "reason": "Most checkout events lack an email.",
                            }
                        ],
                    }
                },
                "external_event_id": {"checkout": {"coverage": 100, "overlap": 42.5}},
            },
        },
        {
            "overall_status": "GOOD",
            "ingestion_source": "TAG",
            "source_platform": "WEB",
            "lookback_period": "14d",
            "quality_components": {},
        },
    ]


def test_vocabulary_matches_the_bundled_schema() -> None:
    schemas = spec(EQS_SPEC_FILE)["components"]["schemas"]
    assert set(schemas["IngestionSourceOptions"]["enum"]) == INGESTION_SOURCES
    assert set(schemas["SourcePlatformOptions"]["enum"]) == SOURCE_PLATFORMS
    assert tuple(schemas["LookbackPeriodOptions"]["enum"]) == LOOKBACK_PERIODS
    assert tuple(schemas["OverallStatusOptions"]["enum"]) == OVERALL_STATUSES
    assert set(schemas["QualityComponents"]["properties"]) == set(QUALITY_COMPONENTS)
    assert set(STATUS_VALUES) == set(OVERALL_STATUSES)


def test_bundled_subset_is_the_conversion_eqs_operation_with_its_references() -> None:
    bundled = spec(EQS_SPEC_FILE)
    assert bundled["operation"]["operationId"] == "conversion_eqs/list"
    assert bundled["path"] == "/ad_accounts/{ad_account_id}/conversion_eqs"
    assert "MIT licence" in bundled["$comment"]
    # Every $ref resolves inside the subset.
    resolved = schema("EventQualityScore", EQS_SPEC_FILE)
    assert set(resolved["required"]) == {
        "overall_status",
        "quality_components",
        "ingestion_source",
        "source_platform",
        "lookback_period",
    }


def test_parse_scores_keeps_every_component_issue_and_overlap() -> None:
    fair, tag = parse_scores(answer())
    assert (fair.ingestion_source, fair.source_platform, fair.lookback_period) == (
        "CONVERSIONS_API",
        "WEB",
        "14d",
    )
    assert fair.overall_status == "FAIR"
    by_key = {(c.component, c.event_name): c for c in fair.components}
    assert by_key["ip_address", "page_visit"].coverage == 98.5
    assert by_key["ip_address", "page_visit"].overlap is None
    assert by_key["external_event_id", "checkout"].overlap == 42.5
    ((component, issue),) = fair.issues
    assert component.component == "hashed_email"
    assert (issue.id, issue.name) == ("low_coverage", "Low email coverage")
    assert tag.components == ()


def _not_a_list(body: list[dict[str, Any]]) -> Any:
    return {"not": "a list"}


def _no_status(body: list[dict[str, Any]]) -> Any:
    del body[0]["overall_status"]
    return body


def _coverage_as_text(body: list[dict[str, Any]]) -> Any:
    body[0]["quality_components"]["ip_address"]["checkout"]["coverage"] = "100"
    return body


def _issue_without_reason(body: list[dict[str, Any]]) -> Any:
    del body[0]["quality_components"]["hashed_email"]["checkout"]["issues"][0]["reason"]
    return body


def _components_as_list(body: list[dict[str, Any]]) -> Any:
    body[0]["quality_components"] = []
    return body


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (_not_a_list, "$ is not an array"),
        (_no_status, "$[0].overall_status"),
        (_coverage_as_text, "$[0].quality_components.ip_address.checkout.coverage"),
        (_issue_without_reason, "$[0].quality_components.hashed_email.checkout.issues[0]"),
        (_components_as_list, "$[0].quality_components"),
    ],
)
def test_parse_scores_names_the_path_of_a_misfit(
    edit: Callable[[list[dict[str, Any]]], Any], path: str
) -> None:
    with pytest.raises(QualityPollError) as caught:
        parse_scores(edit(answer()))
    assert caught.value.reason == "invalid_response"
    assert path in str(caught.value)


def test_series_are_ratios_with_status_values_for_the_asked_lookback() -> None:
    series = series_of(parse_scores(answer()), "14d")
    assert series.status == {("CONVERSIONS_API", "WEB"): 1.0, ("TAG", "WEB"): 2.0}
    assert series.coverage["CONVERSIONS_API", "WEB", "ip_address", "page_visit"] == 0.985
    assert series.coverage["CONVERSIONS_API", "WEB", "hashed_email", "checkout"] == 0.03
    assert series.overlap == {("CONVERSIONS_API", "WEB", "external_event_id", "checkout"): 0.425}
    assert series.issues["CONVERSIONS_API", "WEB", "hashed_email", "checkout"] == 1
    assert series.issues["CONVERSIONS_API", "WEB", "ip_address", "checkout"] == 0
    assert series_of(parse_scores(answer()), "1d").status == {}


def test_series_labels_stay_in_the_published_vocabulary() -> None:
    body = answer()
    body[0]["source_platform"] = "HOLOGRAM"
    body[0]["overall_status"] = "SUPERB"
    components = body[0]["quality_components"]
    components["telepathy"] = {"checkout": {"coverage": 7}}
    components["hashed_email"]["made_up_event_1"] = {"coverage": 60, "issues": []}
    components["hashed_email"]["made_up_event_2"] = {
        "coverage": 40,
        "issues": [{"id": "x", "name": "y", "reason": "z"}],
    }
    series = series_of(parse_scores(body), "14d")
    assert ("CONVERSIONS_API", "other") not in series.status  # an unknown status has no value
    assert series.coverage["CONVERSIONS_API", "other", "other", "checkout"] == 0.07
    # Two unknown event types share the `other` label: the worse coverage, the issues added.
    assert series.coverage["CONVERSIONS_API", "other", "hashed_email", "other"] == 0.4
    assert series.issues["CONVERSIONS_API", "other", "hashed_email", "other"] == 1
    labels = {part for key in series.coverage for part in key}
    assert "HOLOGRAM" not in labels
    assert "telepathy" not in labels


def samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, frozenset[Any]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(prefix)
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    found = samples(registry, name).get((name, frozenset(labels.items())))
    return found


def test_quality_metrics_replace_an_account_and_lookback_as_a_whole() -> None:
    registry = CollectorRegistry()
    quality = Metrics(registry).quality
    series = series_of(parse_scores(answer()), "14d")
    quality.scored(ACCOUNT, "14d", series.status, series.coverage, series.overlap, {}, 1000.0)
    quality.scored(ACCOUNT, "1d", {("TAG", "WEB"): 0.0}, {}, {}, {}, 1000.0)
    base = {"ad_account": ACCOUNT, "ingestion_source": "CONVERSIONS_API", "platform": "WEB"}
    assert value(registry, "capi_stream_quality_status", **base, lookback="14d") == 1.0
    email = {**base, "lookback": "14d", "component": "hashed_email", "event_name": "checkout"}
    assert value(registry, "capi_stream_quality_coverage_ratio", **email) == 0.03
    assert (
        value(
            registry,
            "capi_stream_quality_last_success_timestamp_seconds",
            ad_account=ACCOUNT,
            lookback="14d",
        )
        == 1000.0
    )
    # The next answer no longer reports the Tag or hashed_email: their series go away.
    body = answer()[:1]
    del body[0]["quality_components"]["hashed_email"]
    series = series_of(parse_scores(body), "14d")
    quality.scored(ACCOUNT, "14d", series.status, series.coverage, {}, series.issues, 2000.0)
    assert value(registry, "capi_stream_quality_coverage_ratio", **email) is None
    tag = {"ad_account": ACCOUNT, "ingestion_source": "TAG", "platform": "WEB"}
    assert value(registry, "capi_stream_quality_status", **tag, lookback="14d") is None
    assert value(registry, "capi_stream_quality_status", **tag, lookback="1d") == 0.0
    overlap = samples(registry, "capi_stream_quality_overlap_ratio")
    assert overlap == {}


def test_poll_failures_are_counted_per_account_and_reason() -> None:
    registry = CollectorRegistry()
    quality = Metrics(registry).quality
    quality.poll_failed(ACCOUNT, "unauthorized")
    quality.poll_failed(ACCOUNT, "unauthorized")
    total = value(
        registry, "capi_stream_quality_poll_errors_total", ad_account=ACCOUNT, reason="unauthorized"
    )
    assert total == 2.0


def test_quality_is_off_by_default_and_enabled_by_one_variable(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    assert not settings.pinterest.quality.enabled
    assert quality_poller(settings, Metrics(CollectorRegistry()).quality) is None
    enabled = load_settings(
        environ={
            "CAPI_STREAM_PINTEREST__QUALITY__ENABLED": "true",
            "CAPI_STREAM_PINTEREST__QUALITY__POLL_INTERVAL_S": "60",
            "CAPI_STREAM_PINTEREST__AD_ACCOUNT_ID": ACCOUNT,
        }
    )
    assert enabled.pinterest.quality.poll_interval_s == 60
    assert quality_poller(enabled, Metrics(CollectorRegistry()).quality) is not None


def test_the_ads_read_token_falls_back_to_the_conversions_token(tmp_path: Path) -> None:
    conversions_only = load_settings(environ={"CAPI_STREAM_PINTEREST__ACCESS_TOKEN": "conv"})
    assert quality_token(conversions_only) == "conv"
    token_file = tmp_path / "ads-read"
    token_file.write_text("read-token\n")
    both = load_settings(
        environ={
            "CAPI_STREAM_PINTEREST__ACCESS_TOKEN": "conv",
            "CAPI_STREAM_PINTEREST__QUALITY__ACCESS_TOKEN_FILE": str(token_file),
        }
    )
    assert quality_token(both) == "read-token"
    assert "read-token" in both.secret_values()
    assert "read-token" not in str(both.masked())


def test_too_short_a_poll_interval_names_the_key() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={"CAPI_STREAM_PINTEREST__QUALITY__POLL_INTERVAL_S": "0.1"})
    assert caught.value.key == "pinterest.quality.poll_interval_s"


async def test_an_unreadable_token_file_is_counted_and_does_not_stop_the_process(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        environ={
            "CAPI_STREAM_PINTEREST__ACCESS_TOKEN": "conv",
            "CAPI_STREAM_PINTEREST__AD_ACCOUNT_ID": ACCOUNT,
            "CAPI_STREAM_PINTEREST__QUALITY__ENABLED": "true",
            "CAPI_STREAM_PINTEREST__QUALITY__ACCESS_TOKEN_FILE": str(tmp_path / "missing"),
        }
    )
    assert settings.secret_values() == ["conv"]
    registry = CollectorRegistry()
    poller = quality_poller(settings, Metrics(registry).quality)
    assert poller is not None
    try:
        # No request goes out: the round ends at the token.
        await poller.poll_once()
    finally:
        await poller.stop()
    errors = value(
        registry, "capi_stream_quality_poll_errors_total", ad_account=ACCOUNT, reason="no_token"
    )
    assert errors == 1.0
