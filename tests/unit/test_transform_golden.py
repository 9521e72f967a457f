"""Byte-identical output: the Transformer still returns, for a fixed sample of messages, exactly
what it returned before its hot path was optimized.

`tests/data/transform_golden.jsonl.gz` holds ~950 messages (generated Segment traffic of every
mix with poison, messages with values planted or keys dropped/reordered anywhere, Pinterest-format
messages likewise mutated, and hostile fuzz inputs), each with the result for the three sources
below, as produced by the implementation of commit 338ea22. Deliberate changes since, each
re-recorded with `python -m tests.unit.test_transform_golden`:
- a string `traits.address` is reported as "…address: expected an object" (it was an unexpected
  KeyError);
- a float with an integral value is read as the integer's digits (a CRM export's phone
  4155550100.0 is 4155550100, not 41555501000): one message, whose `lastName` is -3.0;
- the `pinterest` format normalizes what CRM exports write (numbers for `custom_data.value`,
  `order_id` and `event_id`, `event_time` as ISO-8601, digits in a string or a float): five
  mutated messages of the `crm` source, still dead letters, now for the next problem they carry;
- dead-letter messages name no key outside the spec (issue 15): an unknown `user_data` key is
  "user_data: unknown key (not a Pinterest user_data field)", any other schema path is cut at
  its first unknown key, shown as `<unknown key>` (19 Pinterest-format messages);
- a message routed to an ad account outside the configured ones is `invalid_event`
  "ad_account_id: not one of the configured ad accounts" (issue 15, DESIGN §3): one
  Pinterest-format message whose planted `ad_account_id` is 19900131; the recorded ones route
  to 123, which `allowed_ad_accounts` lists;
- the `segment` format's single-product events carry `content_name`, `content_category` and
  `content_brand` (DESIGN §3): 285 results (205 messages, Product Viewed / Product Added, web
  and crm-seg sources), whose other fields are unchanged. No recorded message has a page URL
  only in `properties.url`, nor a price times a quantity other than 1 without
  value/revenue/total; those are covered by tests/unit/test_format_segment.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from stream.models import DeadLetter, PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer

GOLDEN = Path(__file__).parent.parent / "data" / "transform_golden.jsonl.gz"
NOW = 1_795_000_000.0
# The Pinterest-format messages route themselves to ad account 123: an allowed one.
PINTEREST: dict[str, Any] = {"ad_account_id": "42", "allowed_ad_accounts": ["123"]}
SOURCES: list[dict[str, Any]] = [
    {"topic": "web"},
    {
        "topic": "crm-seg",
        "action_source": "offline",
        "unknown_events": "skip",
        "ad_account_id": "77",
        "event_names": {"Product Viewed": "skip", "My Thing": "lead", "order completed": "custom"},
        "ldp": {"field": "context.traits.address.state", "values": ["California", "ca", True]},
        "opt_out": {"field": "properties.opt_out", "values": [True, "yes", 1]},
    },
    {
        "topic": "crm",
        "format": "pinterest",
        "ldp": {"field": "custom_data.currency", "values": ["eur"]},
    },
]


def _golden() -> list[dict[str, Any]]:
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _shown(result: Any) -> list[Any]:
    if isinstance(result, PinterestEvent):
        return [
            "event",
            result.event_id,
            result.event_name,
            result.action_source,
            result.event_time,
            result.ad_account_id,
            result.body.decode(),
            int(result.signals),
        ]
    if isinstance(result, DeadLetter):
        return ["dead_letter", result.reason, result.message]
    return ["skipped", result.reason]


@pytest.mark.parametrize("hash_cache_size", [8192, 0])
def test_results_are_byte_identical_to_the_recorded_ones(
    hash_cache_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)  # hostile inputs log unexpected errors by design
    settings = Settings(pinterest=PINTEREST, sources=SOURCES)
    transformer = Transformer(settings, clock=lambda: NOW, hash_cache_size=hash_cache_size)
    golden = _golden()
    assert len(golden) > 900
    differences = []
    for index, line in enumerate(golden):
        if "value" in line:
            value = line["value"].encode()
        else:
            value = base64.b64decode(line["value_base64"])
        for source, expected in zip(settings.sources, line["results"], strict=True):
            got = _shown(transformer.transform(source, value, line["kafka_timestamp_ms"]))
            if got != expected:
                differences.append((index, source.topic, expected, got))
    assert not differences, differences[:3]
    outcomes = {result[0] for line in golden for result in line["results"]}
    assert outcomes == {"event", "dead_letter", "skipped"}


def rerecord() -> None:
    """Records the current results: only after a deliberate change, named in the docstring."""
    settings = Settings(pinterest=PINTEREST, sources=SOURCES)
    transformer = Transformer(settings, clock=lambda: NOW)
    lines = _golden()
    changed = 0
    for line in lines:
        if "value" in line:
            value = line["value"].encode()
        else:
            value = base64.b64decode(line["value_base64"])
        results = [
            _shown(transformer.transform(source, value, line["kafka_timestamp_ms"]))
            for source in settings.sources
        ]
        changed += results != line["results"]
        line["results"] = results
    with gzip.open(GOLDEN, "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    print(f"{changed} of {len(lines)} messages have new results")


if __name__ == "__main__":
    logging.disable(logging.ERROR)
    rerecord()
