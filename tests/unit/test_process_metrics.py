"""/metrics carries the process and platform metrics next to capi-stream's own."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.metrics import Metrics


@pytest.mark.skipif(sys.platform != "linux", reason="process metrics come from /proc")
def test_exposition_has_process_cpu_memory_and_file_descriptors() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    text = generate_latest(registry).decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_resident_memory_bytes"] > 0
    assert 0 < samples["process_open_fds"] <= samples["process_max_fds"]
    assert samples["process_start_time_seconds"] > 0
    assert "python_info" in samples
