"""Files re-read while the exporter runs: on SIGHUP, and when one changes on its own.

A rotated Kubernetes Secret changes without a signal: the kubelet swaps the ``..data`` symlink in
the mounted folder, so each watched path is checked every few seconds by where it leads and what
that file is (its real path, inode, size and modification time). Each watch reloads through its
own function, which raises ``ReloadError`` (or a ``ValueError``) with a one-line reason when the new
file is not usable: that is logged once, and what was in force stays in force.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_EVERY = 2.0  # seconds between looks at the watched files

Fingerprint = tuple[object, ...]


class ReloadError(ValueError):
    """The new file cannot be used; the message says why and quotes nothing secret."""


def fingerprint(path: Path) -> Fingerprint:
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError as exc:
        return ("unreadable", exc.errno)
    return (real, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass
class _Watch:
    setting: str  # as the user knows it: CMX_PASSWORD_FILE
    paths: Callable[[], Iterable[Path]]  # asked again after each reload: a new web config may name new files
    reload: Callable[[], bool]  # True when something changed
    seen: list[Fingerprint] = field(default_factory=list)

    def look(self) -> list[Fingerprint]:
        return [fingerprint(path) for path in self.paths()]


class Reloader:
    """Watches files in one thread; ``request`` (safe in a signal handler) reloads them all at once."""

    def __init__(self, every: float = CHECK_EVERY) -> None:
        self._every = every
        self._watches: list[_Watch] = []
        self._asked = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="reload", daemon=True)

    def watch(self, setting: str, paths: Callable[[], Iterable[Path]], reload: Callable[[], bool]) -> None:
        """Call ``reload`` when one of ``paths`` changes, and at each request; before ``start``."""
        watch = _Watch(setting, paths, reload)
        watch.seen = watch.look()
        self._watches.append(watch)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        self._asked.set()

    def stop(self) -> None:
        self._stopped = True
        self._asked.set()

    def _run(self) -> None:
        while True:
            asked = self._asked.wait(self._every)
            self._asked.clear()
            if self._stopped:
                return
            for watch in self._watches:
                now = watch.look()
                if asked or now != watch.seen:
                    watch.seen = now  # a file named anew by the reloaded one is noticed at the next look
                    self._reload(watch)

    @staticmethod
    def _reload(watch: _Watch) -> None:
        try:
            if watch.reload():
                log.info("reloaded %s", watch.setting)
        except ValueError as exc:  # ReloadError, and the settings' and web config's own errors
            log.warning("%s not reloaded, the old one stays in force: %s", watch.setting, exc)
        except Exception as exc:  # a bug here must not end the watching
            log.error("%s not reloaded: unexpected %s; please report it", watch.setting, type(exc).__name__)
