"""An offline CRM export through the real `capi-stream run`: the rows are delivered as offline
events, rows sharing an `event_id` are all sent (Pinterest never deduplicates offline events),
and what was normalized or lacks the LDP state shows on /metrics."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from tests.forwarder.harness import forwarder_config, running_forwarder, wait_until
from tests.forwarder.scenario import all_committed, new_group
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import SandboxProcess


def _rows(now_ms: int) -> list[dict[str, Any]]:
    # Two order lines of one order exported as two rows with the order's id: two conversions.
    line = {
        "event_name": "checkout",
        "event_time": now_ms - 3_600_000,
        "event_id": 100045,
        "user_data": {"em": "alice@example.com", "st": "CA"},
        "custom_data": {"value": 14.99, "currency": "USD"},
    }
    return [
        line,
        {**line, "custom_data": {"value": 42.41, "currency": "USD"}},
        {
            "event_name": "lead",
            "event_time": now_ms - 600_000,
            "event_id": "lead-9",
            "user_data": {"em": "bob@example.com", "opt_out_type": "LDP"},
        },
    ]


def test_crm_rows_are_delivered_offline_each_one_and_counted(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    topic = new_topic()
    dlq = new_topic()
    group = new_group()
    rows = _rows(int(time.time() * 1000))
    kafka.produce(topic, [orjson.dumps(row) for row in rows])
    source = {"topic": topic, "format": "pinterest", "action_source": "offline"}
    config = forwarder_config(
        kafka.bootstrap, sandbox, group_id=group, dead_letter_topic=dlq, sources=[source]
    )
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(lambda: all_committed(kafka, group, topic), 60, "all offsets committed")
        assert forwarder.metric("capi_stream_normalized_total", what="event_id_number") == 2
        assert forwarder.metric("capi_stream_normalized_total", what="value_number") == 2
        assert forwarder.metric("capi_stream_normalized_total", what="event_time_ms") == 3
        assert (
            forwarder.metric("capi_stream_normalized_total", what="opt_out_type_in_user_data") == 1
        )
        assert forwarder.metric("capi_stream_ldp_without_state_total") == 1
        assert "events flagged LDP without user_data.st" in forwarder.log()
    delivered = [record["event"] for record in sandbox.events()]
    assert Counter(e["event_id"] for e in delivered) == {"100045": 2, "lead-9": 1}
    assert {e["action_source"] for e in delivered} == {"offline"}
    assert sorted(e["custom_data"].get("value", "") for e in delivered) == ["", "14.99", "42.41"]
    assert kafka.read_all(dlq) == []
