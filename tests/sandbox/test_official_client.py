"""The sandbox answers Pinterest's official Python client (pinterest-generated-client, a test
dependency) as Pinterest does: every answer parses into the client's own models, so the emulator
stays honest to a client nobody here wrote."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from openapi_generated.pinterest_client.api.conversion_events_api import ConversionEventsApi
from openapi_generated.pinterest_client.api_client import ApiClient
from openapi_generated.pinterest_client.configuration import Configuration
from openapi_generated.pinterest_client.exceptions import ApiException
from openapi_generated.pinterest_client.model.conversion_api_response import (
    ConversionApiResponse,
)
from openapi_generated.pinterest_client.model.conversion_events import ConversionEvents
from openapi_generated.pinterest_client.model.conversion_events_data import (
    ConversionEventsData,
)
from openapi_generated.pinterest_client.model.conversion_events_user_data import (
    ConversionEventsUserData,
)
from openapi_generated.pinterest_client.model.error import Error

from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess, sha256


@pytest.fixture
def client(sandbox: SandboxProcess) -> Iterator[ConversionEventsApi]:
    sandbox.reset()
    sandbox.set_faults(token_revoked=False, rate_limit=1000)
    configuration = Configuration(host=sandbox.url + "/v5", access_token=sandbox.token)
    with ApiClient(configuration) as api_client:
        yield ConversionEventsApi(api_client)


def parsed(model: type[Any], body: dict[str, Any]) -> Any:
    """`body` as the client itself would deserialize it into `model` (type-checked)."""
    return model._new_from_openapi_data(
        **body, _spec_property_naming=True, _check_type=True, _configuration=Configuration()
    )


def event(event_id: str, em: str | None = None, name: str = "checkout") -> ConversionEventsData:
    return ConversionEventsData(
        event_name=name,
        action_source="web",
        event_time=int(time.time()) - 5,
        event_id=event_id,
        user_data=ConversionEventsUserData(
            em=[em or sha256("jane.doe@example.com")],
            client_ip_address="203.0.113.9",
            client_user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        ),
    )


def test_processed_events_parse_into_the_response_model(client: ConversionEventsApi) -> None:
    answer = client.events_create(
        DEFAULT_AD_ACCOUNT, ConversionEvents(data=[event("o-1"), event("o-2")])
    )
    assert isinstance(answer, ConversionApiResponse)
    assert answer.num_events_received == 2
    assert answer.num_events_processed == 2
    assert [e.status for e in answer.events] == ["processed", "processed"]


def test_test_mode_and_an_unknown_event_name_warning(client: ConversionEventsApi) -> None:
    answer = client.events_create(
        DEFAULT_AD_ACCOUNT,
        ConversionEvents(data=[event("t-1", name="custom")]),
        test=True,
    )
    assert answer.num_events_processed == 1


def test_a_partial_failure_is_200_with_per_event_status(client: ConversionEventsApi) -> None:
    answer = client.events_create(
        DEFAULT_AD_ACCOUNT, ConversionEvents(data=[event("ok"), event("bad", em="A" * 64)])
    )
    assert [e.status for e in answer.events] == ["processed", "failed"]
    assert answer.events[1].error_message


def test_all_failed_is_422_whose_details_parse(client: ConversionEventsApi) -> None:
    with pytest.raises(ApiException) as raised:
        client.events_create(DEFAULT_AD_ACCOUNT, ConversionEvents(data=[event("x", em="A" * 64)]))
    assert raised.value.status == 422
    body = orjson.loads(raised.value.body)
    assert body["code"] == 953
    details = parsed(ConversionApiResponse, body["details"])
    assert details.num_events_processed == 0
    assert details.events[0].status == "failed"


@pytest.mark.parametrize(
    ("fault", "status", "code"), [("token_revoked", 401, 2), ("rate_limit", 429, 8)]
)
def test_error_answers_parse_into_the_error_model(
    client: ConversionEventsApi, sandbox: SandboxProcess, fault: str, status: int, code: int
) -> None:
    if fault == "rate_limit":
        sandbox.set_faults(rate_limit=1)
        client.events_create(DEFAULT_AD_ACCOUNT, ConversionEvents(data=[event("first")]))
    else:
        sandbox.set_faults(token_revoked=True)
    with pytest.raises(ApiException) as raised:
        client.events_create(DEFAULT_AD_ACCOUNT, ConversionEvents(data=[event("refused")]))
    assert raised.value.status == status
    error = parsed(Error, orjson.loads(raised.value.body))
    assert error.code == code
    assert error.message
    if status == 429:
        assert raised.value.headers["x-ratelimit-limit"].startswith("1, 1;w=60")
