"""The client over real HTTP against the simulator's hostile faults: one deadline for a whole answer.

Each fault keeps every single read within the read timeout, a byte at a time, so only a deadline
for the whole answer ends it. The fetch runs in a thread, so a client without one fails the test
instead of hanging it; stopping the simulator then ends the fetch.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from cmx_connect_exporter.cmx.client import CmxClient
from cmx_connect_exporter.outcome import PollError
from cmx_simulator import Simulator

TIMEOUT = 1.0
SLACK = 1.0  # the deadline is checked before each read, which then waits no longer than the time left


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(300, seed=5) as simulator:
        yield simulator


def fetch(sim: Simulator, client: CmxClient | None = None) -> tuple[PollError | bytes, float]:
    """One page, and how long it took; fails the test if it takes far longer than the deadline."""
    client = client or CmxClient(sim.url, username="demo", password="demo", timeout=TIMEOUT)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.fetch_body, 0, 50)
        try:
            body: PollError | bytes = future.result(timeout=TIMEOUT + 3)
        except PollError as error:
            body = error
        except FutureTimeout:
            sim.stop()  # cuts the connection, so the thread ends
            pytest.fail("the request outlived its deadline by far")
        return body, time.monotonic() - started


@pytest.mark.parametrize(("fault", "message"), [
    ("trickle_headers", "no answer from 127.0.0.1 within 1 s"),
    ("continue_forever", "no answer from 127.0.0.1 within 1 s"),
    ("trickle_chunk_size", "127.0.0.1 did not send a page within 1 s"),
    ("gzip_endless_name", "127.0.0.1 did not send a page within 1 s"),
    ("trickle", "127.0.0.1 did not send a page within 1 s"),
])
def test_an_answer_that_trickles_in_ends_at_the_deadline(sim: Simulator, fault: str, message: str) -> None:
    sim.fault = fault
    error, took = fetch(sim)
    assert isinstance(error, PollError) and (error.reason, str(error)) == ("timeout", message)
    assert TIMEOUT <= took < TIMEOUT + SLACK


def test_a_retry_after_of_5000_digits_is_unreadable_not_a_crash(sim: Simulator) -> None:
    """int() refuses 5000 digits; such a header counts as none, so backoff applies."""
    sim.fault = "retry_after_5000_digits"
    client = CmxClient(sim.url, username="demo", password="demo", timeout=TIMEOUT)
    error, _ = fetch(sim, client)
    assert isinstance(error, PollError) and (error.reason, error.retry_after) == ("http", None)
    assert client.requests_made == 4, "retried with backoff, as for any 429 without a usable Retry-After"


def test_a_kept_alive_connection_closed_before_any_answer_is_asked_once_more(sim: Simulator) -> None:
    sim.fault = "closes_kept_alive"
    client = CmxClient(sim.url, username="demo", password="demo", timeout=TIMEOUT)
    first, _ = fetch(sim, client)
    second, _ = fetch(sim, client)
    assert isinstance(first, bytes) and isinstance(second, bytes) and first == second
    assert client.requests_made == 3, "the second page went out twice: on the closed connection, then anew"


def test_a_server_that_always_closes_before_answering_is_asked_only_once_more() -> None:
    """Once more, not more: a CMX that closes every connection unanswered is a connection failure."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        def close_unanswered() -> None:
            for _ in range(3):  # bounded: the client must not come a third time
                connection, _ = server.accept()
                with connection:
                    connection.recv(65536)

        threading.Thread(target=close_unanswered, daemon=True).start()
        client = CmxClient(f"http://127.0.0.1:{server.getsockname()[1]}", username="demo", password="demo",
                           timeout=TIMEOUT)
        with pytest.raises(PollError) as failed:
            client.fetch_body(0, 50)
    assert (failed.value.reason, client.requests_made) == ("connection", 2)
