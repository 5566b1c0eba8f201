"""The process metrics every exporter serves (CPU, memory, open fds, start time), from prometheus_client's
own ProcessCollector: the serving process's as ``process_*``, and the poll workers' together under their own
prefix, since the workers do the paging and hold most of the memory. Read from /proc at each scrape; a
worker being replaced has none for that moment, and on systems without /proc there are none at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from cmx_connect_exporter.exposition.names import POLL_WORKER_NAMESPACE

# How the workers' figures add up: the earliest start, the one limit of open files; all else is summed.
_COMBINE: dict[str, Callable[[list[float]], float]] = {"start_time_seconds": min, "max_fds": max}


class WorkersCollector(Collector):
    """The poll workers' process metrics as if they were one process: memory, CPU and open files summed."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, list[float]] = {}
        for pid in self._pids():
            for family in ProcessCollector(namespace=POLL_WORKER_NAMESPACE, pid=lambda pid=pid: pid,
                                           registry=None).collect():
                families.setdefault(family.name, family)
                values.setdefault(family.name, []).extend(sample.value for sample in family.samples)
        for name, family in families.items():
            combine = next((how for suffix, how in _COMBINE.items() if name.endswith(suffix)), sum)
            combined = Metric(family.name, family.documentation, family.type)
            (sample,) = family.samples[:1]
            combined.add_sample(sample.name, {}, combine(values[name]))
            yield combined


def process_registry(worker_pids: Callable[[], list[int]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(WorkersCollector(worker_pids))
    return registry
