"""A CMX Connect simulator: a real HTTP server over a synthetic guest Wi-Fi population.

Shipped in the same wheel as the exporter, for its ``--demo`` mode; the tests and benchmarks
use it as their CMX. Run it alone with ``python -m cmx_simulator --port 18443``.
"""

from cmx_simulator.server import CLIENTS_PATH, FAULTS, HUGE_LABEL_PAGES, ActiveCounts, Simulator, crafted_mac

__all__ = ["CLIENTS_PATH", "FAULTS", "HUGE_LABEL_PAGES", "ActiveCounts", "Simulator", "crafted_mac"]
