"""Soak the exporter for as long as you like: fast polls against a simulator with random faults and
churn, concurrent scrapers, and checks on counts, scrapes, memory and threads.

    .venv/bin/python benchmarks/soak.py --minutes 30
    .venv/bin/python benchmarks/soak.py --minutes 120 --sessions 20000 --scrapers 8 --seed 7

It needs the test extra (``pip install -e '.[test]'``): the soak itself lives in tests/soaker.py,
which tests/test_soak.py runs for about a minute in CI. Exits 1 when it found a problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soaker import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="how long to soak (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the population and the faults (default 1)")
    parser.add_argument("--scrapers", type=int, default=4, help="concurrent scrapers (default 4)")
    parser.add_argument("--sessions", type=int, default=3000, help="simulated sessions (default 3000)")
    parser.add_argument("--page-size", type=int, default=100, help="CMX_PAGE_SIZE (default 100)")
    parser.add_argument("--concurrency", type=int, default=2, help="CMX_CONCURRENCY (default 2)")
    args = parser.parse_args(argv)
    report = soak(args.minutes * 60, seed=args.seed, scrapers=args.scrapers, sessions=args.sessions,
                  page_size=args.page_size, concurrency=args.concurrency, progress=print)
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
