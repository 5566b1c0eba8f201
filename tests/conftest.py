"""Makes tests/helpers.py importable from every test folder; the simulator fixtures the simulator's tests share."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from cmx_simulator import Simulator
from helpers import SIM_AUTH


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
