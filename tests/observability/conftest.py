"""Fixtures of the observability tests: Prometheus and promtool from Debian's package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """Directory holding `prometheus` and `promtool`, installed by scripts/install_prometheus.sh."""
    subprocess.run([str(REPO / "scripts" / "install_prometheus.sh")], check=True, timeout=600)
    found = shutil.which("promtool")
    assert found is not None
    assert shutil.which("prometheus") is not None
    return Path(found).parent
