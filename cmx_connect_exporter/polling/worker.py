"""Polls run in a child process, so their CPU work never holds the GIL a scrape needs.

Decoding a page and counting its records is pure-Python CPU work. In the serving
process it delays every scrape by the GIL (measured: a scrape's p50 rose from
0.4 ms to 10 ms beside a busy poll). In its own process a poll costs scrapes nothing.
The worker is a fresh interpreter (``python -m cmx_connect_exporter.polling.worker``), not a fork, so it
starts with no threads and imports only the client and the counting code. Parent and
worker exchange pickles over its stdin and stdout; the password goes that way too,
never through the command line. The parent waits for an answer no longer than the poll's
deadline, so a worker that hangs or is stopped is killed and replaced, never waited on.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import warnings
from typing import BinaryIO

if __name__ == "__main__":
    # Pages are JSON bytes, and nothing here asks requests to guess a text encoding, so the worker goes without
    # the detector requests would load (charset_normalizer: 2.2 MiB of its peak RSS). requests then warns that
    # it is missing, which says nothing here.
    sys.modules.setdefault("chardet", None)  # type: ignore[arg-type]
    sys.modules.setdefault("charset_normalizer", None)  # type: ignore[arg-type]
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")

from cmx_connect_exporter.cmx.client import CmxClient
from cmx_connect_exporter.cmx.paging import PageThreads
from cmx_connect_exporter.counting.dedupe import SessionTable
from cmx_connect_exporter.logs import setup_logging
from cmx_connect_exporter.outcome import Counts
from cmx_connect_exporter.polling.messages import (
    ClientOptions,
    Forget,
    Hello,
    PollRequest,
    VisitorsRequest,
    framed,
)
from cmx_connect_exporter.polling.poll import run_poll, run_visitors

# On a busy machine a scrape, which Prometheus times out, goes before a poll, which can wait.
WORKER_NICENESS = 5
# A page thread needs the GIL only for moments, to send a request or to take in an answer, but the
# counting thread keeps it for CPython's switch interval (5 ms by default) before it must let go: each
# request would leave some 5 ms late, and with pages of some 20 ms, that wait sets the poll's pace.
SWITCH_INTERVAL = 0.0005


class _Kept:
    """What a worker keeps of one target between its polls."""

    def __init__(self, options: ClientOptions, concurrency: int) -> None:
        self.options = options
        self.client = _client(options)
        self.threads = PageThreads(concurrency)
        self.sessions = SessionTable()
        self.sessions_after: int | None = None  # the target's poll whose sessions ``sessions`` holds

    def update(self, options: ClientOptions, concurrency: int) -> None:
        """New options (a rotated password, a renewed CA bundle, another URL) make a new client; the
        sessions stay, as they are the same sessions of the same target."""
        if options != self.options:
            self.threads.settle()  # the last walk's requests past the end go out on the old client
            self.client.close()
            self.client, self.options = _client(options), options
        if self.threads.size != concurrency:
            self.threads.close()
            self.threads = PageThreads(concurrency)

    def close(self) -> None:
        """Without waiting for the last walk's requests past the end: a removed CMX that hangs must not hold
        up the worker's next poll."""
        self.threads.close(wait=False)
        self.client.close()


def serve(requests_in: BinaryIO, replies_out: BinaryIO) -> None:
    """The worker's loop: a Hello first, then one poll per request, until the parent is gone; a request
    with new ClientOptions (a rotated password or CA bundle) replaces the target's client first.

    Any worker polls any target. It keeps, per target it has polled, a client (its connections stay open
    between polls), page threads, so that a poll need not wait for its requests past the end (the target's
    next poll does, before it starts, and no other target's poll ever waits for them), and the sessions of
    the target's last completed poll it made, to count the new logins. Those count only when that poll was the
    target's last completed one (``PollRequest.after``): a poll that lands on another worker than the
    last one counts no logins, as the first poll after a start does, and never counts one twice.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGHUP (reload) are the parent's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.nice(WORKER_NICENESS)
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        hello: Hello = pickle.load(requests_in)
    except EOFError:
        return
    setup_logging(hello.log_level, hello.log_format)
    kept: dict[str, _Kept] = {}
    while True:
        try:
            request: PollRequest | VisitorsRequest | Forget = pickle.load(requests_in)
        except EOFError:  # the parent is gone
            return
        if isinstance(request, Forget):
            for name in request.targets:
                if (gone := kept.pop(name, None)) is not None:
                    gone.close()
            continue
        target = kept.get(request.target)
        if target is None:
            target = kept[request.target] = _Kept(request.client, request.concurrency)
        target.update(request.client, request.concurrency)
        if isinstance(request, VisitorsRequest):
            outcome = run_visitors(target.client, request, target.threads)
        else:
            if target.sessions_after is None or target.sessions_after != request.after:
                # not the target's last completed poll's sessions: count no logins this time
                target.sessions, target.sessions_after = SessionTable(request.expected_sessions), None
            outcome = run_poll(target.client, request, target.threads, target.sessions)
            if isinstance(outcome.result, Counts):
                target.sessions_after = request.poll
        replies_out.write(framed(outcome))
        replies_out.flush()


def _client(options: ClientOptions) -> CmxClient:
    return CmxClient(options.url, username=options.username, password=options.password, timeout=options.timeout,
                     verify=options.verify, max_retry_wait=options.max_retry_wait, configured_in=options.configured_in)


if __name__ == "__main__":
    # Replies go to a private copy of stdout; fd 1 itself now points at stderr, so that a stray
    # write, from Python or from C, cannot corrupt them.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, replies)
