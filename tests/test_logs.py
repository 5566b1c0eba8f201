"""Log lines: RFC 3339 UTC timestamps with milliseconds, in JSON and in text, from the real process too."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

import pytest

from cmx_connect_exporter.logs import JsonFormatter, UtcFormatter, setup_logging
from exporter_process import ExporterProcess, up

RFC3339_UTC_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
# 2026-11-30T14:45:39.722Z; a local-time formatter on a machine east or west of UTC would show another hour.
CREATED = datetime(2026, 11, 30, 14, 45, 39, 722000, tzinfo=UTC).timestamp()


def record(message: str = "poll complete") -> logging.LogRecord:
    entry = logging.LogRecord("cmx_connect_exporter", logging.INFO, __file__, 1, message, None, None)
    entry.created = CREATED
    return entry


def test_json_time_is_rfc3339_utc_with_milliseconds() -> None:
    entry = json.loads(JsonFormatter().format(record()))
    assert entry == {"time": "2026-11-30T14:45:39.722Z", "level": "info", "logger": "cmx_connect_exporter",
                     "message": "poll complete"}


def test_text_lines_say_their_time_zone() -> None:
    line = UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record())
    assert line == "2026-11-30T14:45:39.722Z INFO cmx_connect_exporter: poll complete"


def test_milliseconds_keep_their_leading_zeros() -> None:
    early = record()
    early.created = datetime(2026, 1, 2, 3, 4, 5, 7000, tzinfo=UTC).timestamp()
    assert json.loads(JsonFormatter().format(early))["time"] == "2026-01-02T03:04:05.007Z"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_setup_logging_installs_the_utc_formatter(log_format: str) -> None:
    try:
        setup_logging("info", log_format)
        (handler,) = logging.getLogger().handlers
        assert isinstance(handler.formatter, JsonFormatter if log_format == "json" else UtcFormatter)
    finally:
        logging.basicConfig(force=True)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_line_of_the_running_exporter_is_stamped_in_utc(log_format: str) -> None:
    with ExporterProcess("--demo", "--log-format", log_format) as exporter:
        exporter.wait_for(up)
        log = exporter.stop()
    lines = log.splitlines()
    assert len(lines) >= 3, log
    stamps = [json.loads(line)["time"] if log_format == "json" else line.split(" ", 1)[0] for line in lines]
    assert all(re.fullmatch(RFC3339_UTC_MS, stamp) for stamp in stamps), log
    first = datetime.fromisoformat(stamps[0]).timestamp()
    assert abs(first - datetime.now(UTC).timestamp()) < 60, "the stamp is UTC, not local time read as UTC"
