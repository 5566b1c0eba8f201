"""Building and running the project's image with podman, as ../shared/reference/containers-here.md does it.

Docker Hub cannot be reached from the test machines, so ``python:3.11-slim-bookworm`` cannot be pulled:
a Debian bookworm root with Debian's Python 3.11 stands in for it (the same release, the same Python
minor version), made with debootstrap from the mirror apt already uses. It is kept in podman's image
store under a tag keyed by its recipe, so it is made once per machine (about a minute) and whenever
the recipe changes. The project's Dockerfile is built unchanged but for ``PYTHON_IMAGE``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tool_policy import require, require_tool

from .support import ROOT

# Two quirks of the sandbox: crun fails ("cgroups in hybrid mode not supported"), and the host's own
# rlimits may not be set ("setrlimit RLIMIT_NOFILE: Operation not permitted"); lower ones may.
RUNTIME = ("--runtime", "runc")
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip")
# What the official slim image has and Debian's root has not, or the other way round: pip may install
# into the system Python (no PEP 668 marker), `python` exists, and there are no apt lists or .debs.
MENDS = ("rm -f usr/lib/python3.11/EXTERNALLY-MANAGED", "ln -sf python3 usr/bin/python",
         "rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/*")
BASE_REPOSITORY = "localhost/cmx-test-python"
IMAGE = "localhost/cmx-connect-exporter:test"
HOST_CAS = "/etc/ssl/certs/ca-certificates.crt"
LOCK = Path(tempfile.gettempdir()) / "cmx-connect-exporter-podman.lock"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One podman command with the runtime this machine needs; fails the test with its output if asked."""
    result = subprocess.run([require_tool("podman"), *RUNTIME, *args], capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result


def require_podman() -> None:
    """podman, buildah and debootstrap, and root, which debootstrap and the tests' chown need."""
    for tool in ("podman", "buildah", "runc", "debootstrap"):
        require_tool(tool)
    require(os.geteuid() == 0, "root (for debootstrap and for files owned by uid 10001)")


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One build at a time on this machine: parallel test workers share podman's store."""
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_mirror() -> str:
    """The Debian mirror apt uses here (not the security one)."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        if line.startswith("deb ") and "security" not in line:
            return line.split()[1]
    raise AssertionError("no Debian mirror in apt's sources")


def base_image() -> tuple[str, float | None]:
    """The stand-in for python:3.11-slim-bookworm, and the seconds it took to make it; None if it was kept."""
    key = hashlib.sha256(repr((SUITE, PACKAGES, MENDS)).encode()).hexdigest()[:12]
    tag = f"{BASE_REPOSITORY}:3.11-slim-{SUITE}-{key}"
    with _exclusive():
        if podman("image", "exists", tag, check=False).returncode == 0:
            return tag, None
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="cmx-base-") as root:
            subprocess.run([require_tool("debootstrap"), "--variant=minbase", f"--include={','.join(PACKAGES)}",
                            SUITE, root, debian_mirror()], check=True, capture_output=True, timeout=900)
            subprocess.run(["sh", "-ec", "; ".join(MENDS)], cwd=root, check=True, timeout=60)
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            subprocess.run([require_tool("podman"), "import", "-", tag], stdin=tar.stdout, check=True,
                           capture_output=True, timeout=300)
            assert tar.wait() == 0
    return tag, time.monotonic() - started


@dataclass(frozen=True)
class Built:
    image: str
    seconds: float
    size_bytes: int
    base_seconds: float | None  # None: the base was kept from an earlier run


def build_image() -> Built:
    """The root Dockerfile, unchanged but for PYTHON_IMAGE; docker format, since OCI drops HEALTHCHECK.

    pip in the build reaches the package index as the host does: through the host's network, trusting
    the host's CAs (this machine's egress proxy has its own), mounted for the build only, so the image
    holds Debian's own bundle. Debian's pip reads the system bundle, not certifi's. Layers are never
    reused (--no-cache): buildah's cache key for the last stage's RUN does not cover the wheels it
    bind-mounts from the build stage, so a kept layer would hold an older checkout's code."""
    base, base_seconds = base_image()
    with _exclusive():
        started = time.monotonic()
        podman("build", "--no-cache", "--format", "docker", "--network", "host", *ULIMITS,
               "--volume", f"{HOST_CAS}:{HOST_CAS}:ro",
               "--build-arg", f"PYTHON_IMAGE={base}", "--file", str(ROOT / "Dockerfile"), "--tag", IMAGE, str(ROOT),
               timeout=900)
        seconds = time.monotonic() - started
    size = int(json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Size"])
    return Built(IMAGE, seconds, size, base_seconds)


def inspect(container: str) -> dict:
    return json.loads(podman("container", "inspect", container).stdout)[0]
