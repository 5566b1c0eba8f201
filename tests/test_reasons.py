"""Every way a CMX fails, mapped to its reason and its message: one poll, in process, over real HTTP.

The fault matrix (test_faults.py) runs one case per failure class through the console script; here
every fault the simulator can play is checked for the reason and the words it must produce, and for
what the poll may cost CMX, with nothing but a client, the walk and the simulator.
"""

from __future__ import annotations

import pytest

from cmx_connect_exporter.cmx.client import RETRIES, CmxClient
from cmx_connect_exporter.outcome import POLL_TIMEOUT_SETTING, PollError
from cmx_connect_exporter.polling.messages import ClientOptions, PollRequest
from cmx_connect_exporter.polling.poll import run_poll
from cmx_simulator import Simulator

SESSIONS, SEED, PAGE_SIZE = 300, 5, 50  # 210 active: five pages, the last one short
K = 2  # faults "on page k" start at the third page, after two have been counted
TIMEOUT, POLL_TIMEOUT = 1.0, 5.0

# (fault, first faulty page, reason, words of the message)
FAULTS = [
    ("status:401", 0, "auth", "authentication failed (HTTP 401)"),
    ("status:403", 0, "auth", "access denied (HTTP 403)"),
    ("status:429", 0, "http", "rate limited by CMX (HTTP 429)"),
    ("status:500", K, "http", "CMX answered HTTP 500"),
    ("retry_after_5000_digits", 0, "http", "rate limited by CMX (HTTP 429)"),
    ("plain_text", 0, "bad_response", "page at index 0 is not JSON"),
    ("html", 0, "bad_response", "page at index 0 is not JSON"),
    ("truncated", K, "bad_response", "page at index 100 is truncated JSON"),
    ("wrong_shape", 0, "bad_response", "has no 'records' list"),
    ("long_number", K, "bad_response", "page at index 100 holds a number too long to read"),
    ("deep_nesting", 0, "bad_response", "page at index 0 is nested too deeply"),
    ("too_many", K, "bad_response", "holds 101 records, more than the 50 asked for"),
    ("huge", 0, "bad_response", "response larger than 1 MiB"),
    ("next_backwards", K, "pagination", "nextIndex went backwards (50 after index 100)"),
    ("ignore_index", K, "pagination", "seems to ignore 'index'"),
    ("hang", K, "timeout", "no answer from 127.0.0.1 within 1 s"),
    ("trickle", 0, "timeout", "did not send a page within 1 s"),
    ("trickle_headers", 0, "timeout", "no answer from 127.0.0.1 within 1 s"),
    ("continue_forever", 0, "timeout", "no answer from 127.0.0.1 within 1 s"),
    ("trickle_chunk_size", K, "timeout", "did not send a page within 1 s"),
    ("gzip_endless_name", 0, "timeout", "did not send a page within 1 s"),
    ("slow_pages", 0, "timeout", f"the poll did not end within {POLL_TIMEOUT:g} s ({POLL_TIMEOUT_SETTING})"),
]


@pytest.mark.parametrize(("fault", "page", "reason", "words"), FAULTS, ids=[f"{f[0]}-page-{f[1]}" for f in FAULTS])
def test_each_fault_fails_the_poll_with_its_reason(fault: str, page: int, reason: str, words: str,
                                                   concurrency: int) -> None:
    with Simulator(SESSIONS, seed=SEED) as sim:
        sim.fault_from_index = page * PAGE_SIZE
        sim.fault = fault
        options = ClientOptions(url=sim.url, username="demo", password="demo", timeout=TIMEOUT, verify=True,
                                max_retry_wait=1)
        client = CmxClient(sim.url, username="demo", password="demo", timeout=TIMEOUT, max_retry_wait=1)
        request = PollRequest(target="sim", client=options, page_size=PAGE_SIZE, max_pages=100, max_label_values=50,
                              concurrency=concurrency,
                              poll_timeout=POLL_TIMEOUT)
        outcome = run_poll(client, request)
        served = sim.requests_served
    assert isinstance(outcome.result, PollError), "a failing CMX gave counts"
    assert (outcome.result.reason, words in str(outcome.result)) == (reason, True), str(outcome.result)
    pages = SESSIONS // PAGE_SIZE
    assert outcome.requests is not None and served <= outcome.requests <= (pages + concurrency) * (1 + RETRIES)
    assert outcome.duration <= POLL_TIMEOUT + TIMEOUT + 1, "the poll outlived its deadline"
