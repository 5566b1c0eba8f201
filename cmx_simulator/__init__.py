"""A CMX Connect simulator: a real HTTP server over a synthetic guest Wi-Fi population.

Shipped in the same wheel as the exporter, for its ``--demo`` mode; the tests and benchmarks
use it as their CMX. Run it alone with ``python -m cmx_simulator --port 18443``.

One job a module: ``vocabulary`` (the values and their shares), ``population`` (the sessions,
churn and ground truth), ``records`` (sessions rendered as JSON), ``api`` (queries, pages, CSV),
``faults`` (every wrong answer) and ``server`` (HTTP, and the Simulator tying them together).
"""

from cmx_simulator.api import CLIENTS_PATH, EXPORT_PATH
from cmx_simulator.faults import FAULTS, HUGE_LABEL_PAGES, crafted_mac
from cmx_simulator.population import ActiveCounts, SessionTruth, VenueCounts
from cmx_simulator.records import DEFAULT_TIME_FORMAT, TIME_FORMATS
from cmx_simulator.server import Simulator

__all__ = [
    "CLIENTS_PATH",
    "DEFAULT_TIME_FORMAT",
    "EXPORT_PATH",
    "FAULTS",
    "HUGE_LABEL_PAGES",
    "TIME_FORMATS",
    "ActiveCounts",
    "SessionTruth",
    "Simulator",
    "VenueCounts",
    "crafted_mac",
]
