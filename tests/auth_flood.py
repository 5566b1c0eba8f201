"""Wrong-password requests at a steady rate, from many loopback addresses: the auth flood of
test_hostile_clients.py, in a process of its own so that the test's own timing does not share its GIL.

    python tests/auth_flood.py PORT SECONDS RATE SOURCES

Prints one JSON line: answers by status ("error" for a connection that failed).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import re
import sys
import time

CLIENTS = 50
REQUEST = ("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic "
           + base64.b64encode(b"prometheus:a-wrong-guess").decode() + "\r\n\r\n").encode()
LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)


async def client(port: int, source: str, every: float, deadline: float, statuses: collections.Counter[str]) -> None:
    """One keep-alive connection, reopened when the server closes it, sending a request every ``every`` s."""
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    due = time.monotonic()
    while (now := time.monotonic()) < deadline:
        if due > now:
            await asyncio.sleep(due - now)
        due += every
        try:
            if streams is None:
                streams = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            reader, writer = streams
            writer.write(REQUEST)
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                match = LENGTH.search(head)
                await reader.readexactly(int(match.group(1)) if match else 0)
            statuses[head[9:12].decode()] += 1
            if b"connection: close" in head.lower():
                writer.close()
                streams = None
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError):
            statuses["error"] += 1
            if streams is not None:
                streams[1].close()
            streams = None


async def flood(port: int, seconds: float, rate: float, sources: int) -> collections.Counter[str]:
    statuses: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client(port, f"127.0.{1 + i % sources // 250}.{2 + i % sources % 250}",
                                  CLIENTS / rate, deadline, statuses) for i in range(CLIENTS)))
    return statuses


if __name__ == "__main__":
    port, seconds, rate, sources = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    # A real attacker runs on a machine of its own; here it shares the cores, so it yields them first.
    os.nice(5)
    print(json.dumps(asyncio.run(flood(port, seconds, rate, sources))))
