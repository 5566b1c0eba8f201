"""The exporter's own metric names and HELP texts, defined once; the session families are in the catalogue.

The collector, the dashboard builder and the tests read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricName:
    name: str  # a counter's without ``_total``, as prometheus_client takes it
    help: str


# The label naming the CMX a series is about, on every series but the process-wide ones.
TARGET_LABEL = "cmx"

UP = MetricName("cmx_connect_up", "1 if the last poll of CMX completed, else 0.")
LAST_SUCCESS = MetricName("cmx_connect_last_success_timestamp_seconds", "Unix time of the last completed poll.")
POLL_DURATION = MetricName("cmx_connect_poll_duration_seconds", "How long the last completed poll took.")
POLL_REQUESTS = MetricName("cmx_connect_poll_requests", "HTTP requests the last poll made, retries included.")
POLL_ERRORS = MetricName("cmx_connect_poll_errors", "Failed queries of CMX, by query and reason.")
BUILD_INFO = MetricName("cmx_connect_exporter_build_info", "Version of the exporter; always 1.")
# prometheus_client's ProcessCollector serves the exporter's own process_* metrics, and the poll worker's
# under this prefix (cmx_connect_poll_worker_process_resident_memory_bytes, ...).
POLL_WORKER_NAMESPACE = "cmx_connect_poll_worker"
