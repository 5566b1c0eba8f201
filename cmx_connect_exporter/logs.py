"""Log set-up, shared by the exporter and its poll worker so both speak the same format.

Both formats stamp each line in UTC, as RFC 3339 with milliseconds (``2026-11-30T14:45:39.722Z``): log
shippers read it without guessing a zone, and lines from hosts in different zones sort together.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(UtcFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if level != "debug":  # APScheduler logs every run at info
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        # urllib3 warns at each retry of a failed connection; the failed poll's own line says it once
        logging.getLogger("urllib3").setLevel(logging.ERROR)
