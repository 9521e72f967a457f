"""The sandbox's Event Quality Score: scoring rules (pure) and the GET conversion_eqs endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson
import pytest

from stream.sandbox.checks import BodyChecker
from stream.sandbox.quality import TARGETS, score_events
from stream.sandbox.recording import Recorder
from stream.spec import EQS_SPEC_FILE, schema
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess, sha256, valid_event
from tests.unit.spec_cases import as_json_schema

EQS_PATH = f"/v5/ad_accounts/{DEFAULT_AD_ACCOUNT}/conversion_eqs"


def closed(node: Any) -> Any:
    """Refuses keys a schema object does not list, so a typo in the sandbox cannot pass."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed(value) for key, value in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _response_validator() -> Callable[[Any], Any]:
    definitions = schema("EventQualityScore", EQS_SPEC_FILE)["definitions"]
    root = {
        "type": "array",
        "items": {"$ref": "#/definitions/EventQualityScore"},
        "definitions": definitions,
    }
    return fastjsonschema.compile(closed(as_json_schema(root)))  # type: ignore[no-any-return]


VALID_RESPONSE = _response_validator()


def structs(events: list[dict[str, Any]]) -> list[Any]:
    """The events as the sandbox keeps them (decoded by its schema-compiled types)."""
    return BodyChecker().events_of(orjson.dumps({"data": events}))


def rich(event_id: str, **overrides: Any) -> dict[str, Any]:
    """A web checkout carrying every component the sandbox scores."""
    event = valid_event(event_id, event_source_url="https://shop.example.com/checkout")
    event["user_data"]["click_id"] = "dj0yJnU9"
    event["custom_data"]["content_ids"] = ["sku-1"]
    event.update(overrides)
    return event


def coverage(score: dict[str, Any], component: str, event_name: str) -> float:
    result: float = score["quality_components"][component][event_name]["coverage"]
    return result


def test_complete_web_events_are_good_and_validate_against_the_spec() -> None:
    (score,) = score_events(structs([rich(f"e{i}") for i in range(5)]), "14d")
    VALID_RESPONSE([score])
    assert score["overall_status"] == "GOOD"
    assert (score["ingestion_source"], score["source_platform"]) == ("CONVERSIONS_API", "WEB")
    for component, by_event in score["quality_components"].items():
        assert by_event["checkout"] == {"coverage": 100.0}, component
    # MAIDs are scored on MOBILE only.
    assert "hashed_maid" not in score["quality_components"]


def test_a_component_below_its_target_is_an_issue_and_makes_it_fair() -> None:
    events = [rich(f"e{i}") for i in range(10)]
    for event in events[:4]:
        del event["custom_data"]["order_id"]
    (score,) = score_events(structs(events), "1d")
    VALID_RESPONSE([score])
    assert score["overall_status"] == "FAIR"
    order_id = score["quality_components"]["order_id"]["checkout"]
    assert order_id["coverage"] == 60.0
    (issue,) = order_id["issues"]
    assert issue["id"] == "low_order_id_coverage"
    assert "custom_data.order_id" in issue["reason"]
    assert f"{TARGETS['order_id']:g} %" in issue["reason"]


def test_too_few_matching_identifiers_need_improvement() -> None:
    events = [rich(f"e{i}") for i in range(10)]
    for event in events[:6]:
        del event["user_data"]["em"]
    (score,) = score_events(structs(events), "14d")
    assert coverage(score, "hashed_email", "checkout") == 40.0
    assert score["overall_status"] == "NEEDS_IMPROVEMENT"


def test_platforms_follow_action_source_and_components_apply_where_they_mean_something() -> None:
    app = rich("app", action_source="app_ios")
    app["user_data"]["hashed_maids"] = [sha256("maid")]
    page = rich("page", event_name="page_visit")
    offline = rich("crm", action_source="offline")
    for key in ("client_ip_address", "client_user_agent"):
        del offline["user_data"][key]
    scores = score_events(structs([rich("web"), page, app, offline]), "14d")
    VALID_RESPONSE(scores)
    by_platform = {score["source_platform"]: score for score in scores}
    assert list(by_platform) == ["WEB", "MOBILE", "OFFLINE"]
    web = by_platform["WEB"]["quality_components"]
    assert set(web["order_id"]) == {"checkout"}  # not asked of page visits
    assert set(web["source_url"]) == {"checkout", "page_visit"}
    mobile = by_platform["MOBILE"]["quality_components"]
    assert coverage(by_platform["MOBILE"], "hashed_maid", "checkout") == 100.0
    assert "click_id_epik" not in mobile
    offline_components = by_platform["OFFLINE"]["quality_components"]
    assert "ip_address" not in offline_components
    # Without IP and user agent an offline platform still rates on e-mail.
    assert by_platform["OFFLINE"]["overall_status"] == "GOOD"


def test_filters_behave_like_pinterests_query_parameters() -> None:
    events = structs([rich("web"), rich("app", action_source="app_android")])
    assert [s["source_platform"] for s in score_events(events, "1d", "MOBILE")] == ["MOBILE"]
    assert score_events(events, "1d", ingestion_source="TAG") == []
    assert len(score_events(events, "1d", ingestion_source="CONVERSIONS_API")) == 2
    assert score_events([], "1d") == []


def test_recent_events_are_limited_to_the_account_and_lookback() -> None:
    checker = BodyChecker()
    recorder = Recorder(None, 100, checker.events_of)
    body = orjson.dumps({"data": [rich("a"), rich("b")]})
    recorder.record("1", 100.0, checker.events_of(body), body, None)
    recorder.record("1", 200.0, checker.events_of(body)[1:], body, (1,))
    recorder.record("2", 200.0, checker.events_of(body), body, None)
    assert [e.event_id for e in recorder.recent("1", 0.0)] == ["a", "b", "b"]
    assert [e.event_id for e in recorder.recent("1", 150.0)] == ["b"]
    assert len(list(recorder.recent("2", 0.0))) == 2


# --- the endpoint of a running sandbox ------------------------------------------------------


def eqs(sandbox: SandboxProcess, query: str, token: str | None = None, path: str = EQS_PATH) -> Any:
    auth = {"Authorization": f"Bearer {sandbox.token if token is None else token}"}
    return sandbox.request("GET", f"{path}?{query}", headers=auth)


def test_the_endpoint_scores_what_was_received(sandbox: SandboxProcess) -> None:
    assert eqs(sandbox, "lookback_period=1d").body == []
    events = [rich(f"e{i}") for i in range(4)]
    del events[0]["user_data"]["click_id"]
    del events[1]["user_data"]["click_id"]
    assert sandbox.send(events).status == 200
    assert sandbox.send([rich("x")], ad_account="111").status == 200
    answer = eqs(sandbox, "lookback_period=14d&source_platform=WEB")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/json")
    VALID_RESPONSE(answer.body)
    (score,) = answer.body
    assert score["lookback_period"] == "14d"
    assert coverage(score, "click_id_epik", "checkout") == 50.0
    assert eqs(sandbox, "lookback_period=1d&source_platform=MOBILE").body == []
    assert eqs(sandbox, "lookback_period=1d&ingestion_source=TAG").body == []
    # Reading the score is not an events request.
    assert sandbox.stats()["requests"]["total"] == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "lookback_period"),
        ("lookback_period=7d", "lookback_period"),
        ("lookback_period=1d&source_platform=FAX", "source_platform"),
        ("lookback_period=1d&ingestion_source=PIGEON", "ingestion_source"),
    ],
)
def test_bad_query_parameters_are_a_400(sandbox: SandboxProcess, query: str, message: str) -> None:
    answer = eqs(sandbox, query)
    assert answer.status == 400
    assert answer.body["code"] == 4196
    assert message in answer.body["message"]


def test_token_account_and_fault_answers(sandbox_factory: Callable[..., SandboxProcess]) -> None:
    sandbox = sandbox_factory("--ad-account", DEFAULT_AD_ACCOUNT)
    assert eqs(sandbox, "lookback_period=1d", token="wrong").status == 401
    other = "/v5/ad_accounts/111/conversion_eqs"
    assert eqs(sandbox, "lookback_period=1d", path=other).status == 403
    bad_id = "/v5/ad_accounts/not-an-id/conversion_eqs"
    assert eqs(sandbox, "lookback_period=1d", path=bad_id).status == 404
    sandbox.set_faults(eqs_error=429)
    throttled = eqs(sandbox, "lookback_period=1d")
    assert throttled.status == 429
    assert throttled.body["code"] == 8
    assert throttled.headers["x-ratelimit-remaining"] == "0"
    # The knob concerns the score only: events are still accepted.
    assert sandbox.send([valid_event()]).status == 200
    sandbox.set_faults(eqs_error=None)
    assert eqs(sandbox, "lookback_period=1d").status == 200
    refused = sandbox.request("PUT", "/_admin/faults", {"eqs_error": 418})
    assert refused.status == 400
    assert "eqs_error" in refused.body["message"]
