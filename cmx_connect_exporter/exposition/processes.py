"""The process metrics every exporter serves (CPU, memory, open fds, start time), from prometheus_client's
own ProcessCollector: the serving process's as ``process_*``, the poll worker's under its own prefix,
since the worker does the paging and holds most of the memory. Read from /proc at each scrape; a
worker being replaced has none for that moment, and on systems without /proc there are none at all.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, ProcessCollector

from cmx_connect_exporter.exposition.names import POLL_WORKER_NAMESPACE


def process_registry(worker_pid: Callable[[], int]) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    ProcessCollector(namespace=POLL_WORKER_NAMESPACE, pid=worker_pid, registry=registry)
    return registry
