"""The README's sample of /metrics: a real, complete scrape of ``cmx-connect-exporter --demo``.

    .venv/bin/python tools/readme_metrics.py           # scrape the demo, write the sample into README.md
    .venv/bin/python tools/readme_metrics.py --check   # exit 1 if the README's sample has drifted

The sample sits between the ``<!-- metrics-sample -->`` marker and the end of the code block after it.
The demo's simulator is seeded and its first poll is sequential, so every count and every series is the
same at each run; only what measures time or the processes (timestamps, durations, dwell, visit, ``process_*``)
changes, so ``--check`` compares those by name and the rest by value. tests/test_readme_metrics.py
runs the check.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cmx_connect_exporter.counting.dimensions import DWELL, VISIT
from cmx_connect_exporter.exposition.names import LAST_SUCCESS, POLL_DURATION, POLL_WORKER_NAMESPACE, TARGET_LABEL, UP

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- metrics-sample -->"
# Samples whose values differ at each run, whatever the code: the dwell too, measured to the poll's time,
# and new vs returning, which moves with the time of day (the demo's logins are placed relative to now,
# and a visit returns when its first login falls on an earlier local day).
VOLATILE_PREFIXES = ("process_", f"{POLL_WORKER_NAMESPACE}_process_", LAST_SUCCESS.name, POLL_DURATION.name,
                     DWELL.metric, VISIT.metric)
WAIT = 60.0

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_demo() -> str:
    """The first complete scrape of a fresh ``--demo`` exporter, with no CMX_* setting from outside."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith("CMX_")}
    url = f"http://127.0.0.1:{port}/metrics"
    with subprocess.Popen([sys.executable, "-m", "cmx_connect_exporter", "--demo",
                           "--listen-address", f"127.0.0.1:{port}", "--log-level", "warning"], env=env) as exporter:
        try:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and exporter.poll() is None:
                with contextlib.suppress(OSError):
                    text = urllib.request.urlopen(url, timeout=5).read().decode()
                    if f'\n{UP.name}{{{TARGET_LABEL}="demo"}} 1.0\n' in text:
                        return text
                time.sleep(0.1)
            raise SystemExit(f"the demo exporter served no complete poll within {WAIT:g} s")
        finally:
            exporter.terminate()


def readme_sample(readme: str) -> tuple[int, int]:
    """Where the sample's text lies in the README: from after the opening fence to the closing one."""
    start = readme.index("```\n", readme.index(MARKER)) + len("```\n")
    return start, readme.index("```\n", start)


def series(text: str) -> Series:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def differences(old: str, new: str) -> list[str]:
    """What a fresh scrape shows that the README's sample does not, or otherwise."""
    before, after = series(old), series(new)
    problems = [f"only in the README: {key}" for key in before.keys() - after.keys()]
    problems += [f"missing from the README: {key}" for key in after.keys() - before.keys()]
    problems += [f"{key}: {before[key]} in the README, {after[key]} now" for key in before.keys() & after.keys()
                 if before[key] != after[key] and not key[0].startswith(VOLATILE_PREFIXES)]
    helps = [line for line in new.splitlines() if line.startswith("#")]
    if helps != [line for line in old.splitlines() if line.startswith("#")]:
        problems.append("the HELP and TYPE lines differ")
    return sorted(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    args = parser.parse_args()
    readme = README.read_text()
    start, end = readme_sample(readme)
    scraped = scrape_demo()
    if args.check:
        problems = differences(readme[start:end], scraped)
        for problem in problems:
            print(problem)
        if problems:
            raise SystemExit(f"{README.name}'s metrics sample has drifted; run tools/{Path(__file__).name}")
        return
    README.write_text(readme[:start] + scraped + readme[end:])


if __name__ == "__main__":
    main()
