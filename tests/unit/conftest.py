"""Unit tests are pure logic without I/O: each has 30 s at most, not the suite's default."""

from __future__ import annotations

import pytest

UNIT_TIMEOUT_S = 30


def pytest_itemcollected(item: pytest.Item) -> None:
    # Appended, so a test's own @pytest.mark.timeout stays the closest one.
    item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
