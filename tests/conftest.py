"""Makes the test support modules (cmx_pages, exporter_process, tool_policy) importable from every test folder."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(params=[1, 4], ids=["sequential", "concurrent"])
def concurrency(request: pytest.FixtureRequest) -> int:
    """Paging rules must hold whether pages are fetched one by one or several at once."""
    return int(request.param)
