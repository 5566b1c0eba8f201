"""A bounded soak in CI (about 75 s; SOAK_SECONDS changes it): no crash, no unanswered scrape, no growth
of memory or threads, and the right counts after every clean poll. benchmarks/soak.py runs it longer."""

from __future__ import annotations

import os

import pytest

from soaker import FAULTS, soak


@pytest.mark.slow
def test_soak_with_random_faults_churn_and_concurrent_scrapers() -> None:
    seconds = float(os.environ.get("SOAK_SECONDS", "75"))
    report = soak(seconds, seed=int(os.environ.get("SOAK_SEED", "1")))
    print(report.summary())  # shown with pytest -s, or -rP
    assert report.problems == [], report.summary()
    assert report.windows["clean"] >= seconds // 8, "the run alternated too few times to mean much"
    assert report.clean_polls_checked >= report.windows["clean"]
    assert len(set(report.windows) & set(FAULTS)) >= min(len(FAULTS), report.windows["clean"])
    assert sum(report.errors.values()) >= report.windows["clean"], "the faults made polls fail"
    assert report.scrapes >= 20 * seconds
