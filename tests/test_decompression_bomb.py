"""A body that inflates to a GiB fails one poll in bounded memory, with the oldest urllib3 allowed too.

urllib3 before 2.6.0 inflated a whole read, and a whole chain of Content-Encodings, at once
(CVE-2025-66471, CVE-2025-66418): a double-gzip body of 2.5 KiB took the poll worker to 2 GiB
and a MemoryError before the client could count a byte. requests, whatever urllib3, inflated
the whole body of a redirect it was told not to follow, until the client stopped it. pip may
install any urllib3 that pyproject.toml allows, so the floor it names is installed and run in
a child process, and the newest, this virtualenv's, in this process.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import struct
import subprocess
import sys
import threading
import time
import tomllib
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from packaging.requirements import Requirement

from cmx_connect_exporter.cmx.client import CmxClient
from cmx_connect_exporter.outcome import PollError
from tool_policy import require

ROOT = Path(__file__).resolve().parents[1]
BOMB_MIB = 1024  # inflated; as sent, 1 MiB for one layer and 2.5 KiB for two
COUNT = 1000  # records asked for: the client reads at most 16 KiB a record, 15.6 MiB
MAX_SECONDS = 5.0
# The child's peak: 47-101 MiB when cut off, as the chunks happen to arrive (seen in one suite run);
# 150-290 MiB, or a MemoryError, with urllib3 2.5.0.
MAX_RSS_MIB = 128
MAX_TRACED_MIB = 40  # Python's allocations in this process while it fetches one bomb: 16-18 MiB


class Bomb(NamedTuple):
    status: int
    encoding: str
    error: tuple[str, str]  # the PollError's reason and the start of its message


BOMBS = {  # by the name in the URL's path
    "gzip-gzip": Bomb(200, "gzip, gzip", ("bad_response", "response larger than 15 MiB")),
    "gzip": Bomb(200, "gzip", ("bad_response", "response larger than 15 MiB")),
    "deflate": Bomb(200, "deflate", ("bad_response", "response larger than 15 MiB")),
    "redirect": Bomb(302, "gzip, gzip", ("http", "unexpected redirect (HTTP 302)")),
}

# The client as the exporter runs it, with whichever urllib3 comes first on sys.path.
CHILD = """
import json, resource, sys, time
import urllib3
from packaging.version import Version
from cmx_connect_exporter.cmx.client import CmxClient
from cmx_connect_exporter.outcome import PollError

url, version, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert Version(urllib3.__version__) == Version(version), f"urllib3 {urllib3.__version__} was imported, not {version}"
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a bomb that gets through ends in MemoryError
start = time.monotonic()
try:
    CmxClient(url, username=None, password=None, timeout=10).fetch_body(0, count)
    error = None
except PollError as exc:
    error = [exc.reason, str(exc)]
print(json.dumps({"error": error, "seconds": time.monotonic() - start,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@functools.cache
def zeros_compressed(mib: int, wbits: int) -> bytes:
    """``mib`` MiB of zeros as gzip (wbits 31) or zlib (15), in a second rather than in the minutes of deflating them.

    After a full flush the compressor starts afresh, so every MiB compresses to the same bytes:
    one MiB is compressed and repeated, and the trailer's checksum is computed for the whole.
    """
    block = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, wbits)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()
    if wbits > 15:
        crc = 0
        for _ in range(mib):
            crc = zlib.crc32(block, crc)
        trailer = struct.pack("<II", crc, (mib << 20) & 0xFFFF_FFFF)
    else:
        adler = 1
        for _ in range(mib):
            adler = zlib.adler32(block, adler)
        trailer = struct.pack(">I", adler)
    return first + again * (mib - 1) + end[:-len(trailer)] + trailer


def compressed(encoding: str) -> bytes:
    """``BOMB_MIB`` MiB of zeros under ``encoding``: deflate, gzip, or gzip twice."""
    if encoding == "deflate":
        return zeros_compressed(BOMB_MIB, 15)
    once = zeros_compressed(BOMB_MIB, 31)
    return gzip.compress(once, mtime=0) if encoding == "gzip, gzip" else once


class BombServer(ThreadingHTTPServer):
    """Answers /<name>/... with that bomb, whatever the query."""

    daemon_threads = True

    def __init__(self) -> None:
        bodies = {name: compressed(bomb.encoding) for name, bomb in BOMBS.items()}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.split("/")[1]
                self.send_response(BOMBS[name].status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", BOMBS[name].encoding)
                self.send_header("Content-Length", str(len(bodies[name])))
                self.send_header("Location", "/elsewhere")  # read only on a redirect
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the client hangs up once it has enough
                    self.wfile.write(bodies[name])

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture(scope="module")
def server() -> Iterator[BombServer]:
    with BombServer() as bomb_server:
        thread = threading.Thread(target=bomb_server.serve_forever, daemon=True)
        thread.start()
        yield bomb_server
        bomb_server.shutdown()
        thread.join(5)


def urllib3_floor() -> str:
    """The oldest urllib3 that pyproject.toml allows: read there, so that the test moves with the floor."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    urllib3 = next(r for r in map(Requirement, project["dependencies"]) if r.name == "urllib3")
    return next(s.version for s in urllib3.specifier if s.operator == ">=")


@pytest.fixture(scope="module")
def floor_urllib3(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The floor's version, and a folder holding that urllib3 alone, to put first on PYTHONPATH."""
    version = urllib3_floor()
    target = tmp_path_factory.mktemp("urllib3-floor")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--retries", "1",
                          "--timeout", "20", "--target", str(target), f"urllib3=={version}"],
                         capture_output=True, text=True, timeout=120)
    last_line = (pip.stderr.strip().splitlines() or [""])[-1]
    require(pip.returncode == 0, f"urllib3 {version} from the package index ({last_line})")
    return version, target


def fetch_in_child(url: str, version: str, site: Path) -> dict[str, Any]:
    """The child's error, seconds and peak RSS after it fetched ``url`` with the urllib3 ``site`` holds."""
    child = subprocess.run([sys.executable, "-c", CHILD, url, version, str(COUNT)], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout)


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_cut_off_with_the_oldest_urllib3_allowed(name: str, server: BombServer,
                                                             floor_urllib3: tuple[str, Path]) -> None:
    result = fetch_in_child(server.url(name), *floor_urllib3)
    reason, words = BOMBS[name].error
    assert result["error"][0] == reason
    assert result["error"][1].startswith(words)
    assert result["seconds"] < MAX_SECONDS
    assert result["peak_rss_mib"] < MAX_RSS_MIB


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_cut_off_with_the_newest_urllib3(name: str, server: BombServer) -> None:
    client = CmxClient(server.url(name), username=None, password=None, timeout=10)
    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(PollError) as caught:
            client.fetch_body(0, COUNT)
        seconds = time.monotonic() - start
        peak_mib = tracemalloc.get_traced_memory()[1] / (1 << 20)
    finally:
        tracemalloc.stop()
    reason, words = BOMBS[name].error
    assert caught.value.reason == reason
    assert str(caught.value).startswith(words)
    assert seconds < MAX_SECONDS
    assert peak_mib < MAX_TRACED_MIB
