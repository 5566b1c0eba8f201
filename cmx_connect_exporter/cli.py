"""The command line: settings and targets in, logging set up, then poll workers, schedule and HTTP server
until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import ExitStack
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from cmx_connect_exporter.config.targets import Target, TargetsError
from cmx_connect_exporter.exposition.processes import process_registry
from cmx_connect_exporter.exposition.snapshot import Store
from cmx_connect_exporter.logs import setup_logging
from cmx_connect_exporter.polling.messages import Hello
from cmx_connect_exporter.polling.pool import WorkerPool
from cmx_connect_exporter.polling.scheduler import Probes, Schedule
from cmx_connect_exporter.settings import Settings, SettingsError, load_settings
from cmx_connect_exporter.web.server import make_app, serve

log = logging.getLogger("cmx_connect_exporter")

DEMO_CREDENTIALS = ("demo", "demo")
# Guests the demo's simulator logs in, and as many out, at each request: a poll is a few requests,
# so the counts move a little between polls, as a real venue's do.
DEMO_CHURN = 5


def exporter_version() -> str:
    try:
        return version("cmx-connect-exporter")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def run(settings: Settings, stop: threading.Event, targets: tuple[Target, ...]) -> None:
    """Serve until ``stop`` is set."""
    with ExitStack() as cleanup:
        if settings.demo and settings.targets_file is None:
            from cmx_simulator import Simulator

            username, password = DEMO_CREDENTIALS
            simulator = Simulator(username=username, password=password, churn=DEMO_CHURN).start()
            cleanup.callback(simulator.stop)
            (demo,) = targets
            targets = (Target(demo.name, simulator.url, demo.options.model_copy(update={"username": username}),
                              password),)
            log.info("demo mode: polling the built-in CMX simulator at %s", simulator.url)
        for target in targets:
            if target.options.insecure_skip_verify:
                log.warning("TLS certificate verification is off for %s (insecure_skip_verify); "
                            "prefer a CA bundle", target.name)
        pool = WorkerPool(Hello(settings.log_level, settings.log_format), min(settings.poll_workers, len(targets)))
        cleanup.callback(pool.close)

        store = Store(exporter_version(), live=process_registry(worker_pids=lambda: pool.pids))
        schedule = Schedule(pool.poll, store, Probes() if settings.poll == "probed" else None)
        cleanup.callback(schedule.shutdown)
        schedule.apply(targets)

        host, port = settings.listen
        web = settings.web_config
        app = web.protect(make_app(store, schedule, healthy=lambda: schedule.running,
                                   probed_mode=settings.poll == "probed"))
        try:
            server = serve(app, host, port, web.ssl_context)
        except OSError as exc:  # the address is taken or not ours
            log.error("cannot listen on %s: %s", settings.listen_address, exc.strerror)
            raise SystemExit(1) from None
        cleanup.callback(server.server_close)
        cleanup.callback(server.shutdown)
        what = (f"{targets[0].url} every {targets[0].options.poll_interval:g} s" if len(targets) == 1
                else f"{len(targets)} CMX servers")
        log.info("listening on %s://%s:%d/metrics%s, polling %s%s", web.scheme, host, server.server_port,
                 " (basic auth; /healthz open)" if web.users else "", what,
                 " as Prometheus probes them (CMX_POLL=probed)" if settings.poll == "probed" else "")
        stop.wait()
        log.info("shutting down")


def _usage_error(message: str) -> NoReturn:
    """One line on stderr and exit status 2, as argparse does for a bad flag."""
    print(f"cmx-connect-exporter: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
        targets = settings.targets()  # a bad file fails now, with exit 2
    except (SettingsError, TargetsError) as exc:
        _usage_error(str(exc))
    setup_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, stop, targets)
