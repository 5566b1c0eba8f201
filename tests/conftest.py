"""Makes the test support modules (cmx_pages, exporter_process, sim_http, tool_policy) importable from every
test folder; fixtures several test modules share."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from cmx_simulator import Simulator
from sim_http import SIM_AUTH


@pytest.fixture(params=[1, 4], ids=["sequential", "concurrent"])
def concurrency(request: pytest.FixtureRequest) -> int:
    """Paging rules must hold whether pages are fetched one by one or several at once."""
    return int(request.param)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A population of 2000, 1400 active, shared by a module's tests, which must not change it."""
    with Simulator(2000, seed=7) as server:
        yield server


@pytest.fixture
def fresh_sim() -> Iterator[Simulator]:
    """A small simulator of the test's own, to change at will."""
    with Simulator(300, seed=3) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A session logged in as the simulators' demo user."""
    with requests.Session() as session:
        session.auth = SIM_AUTH
        yield session
