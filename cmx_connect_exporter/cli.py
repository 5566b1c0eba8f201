"""The command line: settings and targets in, logging set up, then poll workers, schedule and HTTP server
until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import ExitStack
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from cmx_connect_exporter.config.targets import Target, TargetsError
from cmx_connect_exporter.exposition.processes import process_registry
from cmx_connect_exporter.exposition.snapshot import Store
from cmx_connect_exporter.logs import setup_logging
from cmx_connect_exporter.polling.messages import Hello
from cmx_connect_exporter.polling.pool import WorkerPool
from cmx_connect_exporter.polling.scheduler import Probes, Schedule
from cmx_connect_exporter.reload import Reloader, ReloadError
from cmx_connect_exporter.settings import Settings, SettingsError, load_settings
from cmx_connect_exporter.web.server import HttpServer, make_app

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


def run(settings: Settings, stop: threading.Event, targets: tuple[Target, ...], reloader: Reloader) -> None:
    """Serve until ``stop`` is set; ``reloader`` re-reads the files it watches."""
    with ExitStack() as cleanup:
        pool = WorkerPool(Hello(settings.log_level, settings.log_format), min(settings.poll_workers, len(targets)))
        cleanup.callback(pool.close)  # a pool starts its workers at the first poll
        store = Store(exporter_version(), live=process_registry(worker_pids=lambda: pool.pids))
        schedule = Schedule(pool.poll, store, Probes() if settings.poll == "probed" else None)
        cleanup.callback(schedule.shutdown)  # its jobs start with apply, below
        server = HttpServer(make_app(store, schedule, healthy=lambda: schedule.running,
                                     probed_mode=settings.poll == "probed"), settings.web_config)
        host, port = settings.listen
        try:  # first, so that an address in use stops the start before anything else is begun
            server.bind(host, port)
        except OSError as exc:  # taken, not ours, or a name that does not resolve
            _usage_error(f"invalid setting CMX_LISTEN_ADDRESS (--listen-address): cannot listen on "
                         f"{settings.listen_address} ({exc.strerror})")
        demo = settings.demo and settings.targets_file is None
        if demo:
            from cmx_simulator import Simulator

            username, password = DEMO_CREDENTIALS
            simulator = Simulator(username=username, password=password, churn=DEMO_CHURN).start()
            cleanup.callback(simulator.stop)
            (demo_target,) = targets
            targets = (Target(demo_target.name, simulator.url,
                              demo_target.options.model_copy(update={"username": username}), password),)
            log.info("demo mode: polling the built-in CMX simulator at %s", simulator.url)
        for target in targets:
            if target.options.insecure_skip_verify:
                log.warning("TLS certificate verification is off for %s (insecure_skip_verify); "
                            "prefer a CA bundle", target.name)
        schedule.apply(targets)
        if not demo:
            _watch_files(reloader, settings, server, schedule, pool)
        server.start()
        cleanup.callback(server.stop)
        reloader.start()
        cleanup.callback(reloader.stop)
        web = settings.web_config
        what = (f"{targets[0].url} every {targets[0].options.poll_interval:g} s" if len(targets) == 1
                else f"{len(targets)} CMX servers")
        log.info("listening on %s://%s:%d/metrics%s, polling %s%s", web.scheme, host, server.port,
                 " (basic auth; /healthz open)" if web.users else "", what,
                 " as Prometheus probes them (CMX_POLL=probed)" if settings.poll == "probed" else "")
        stop.wait()
        log.info("shutting down")


def _watch_files(reloader: Reloader, settings: Settings, server: HttpServer, schedule: Schedule,
                 pool: WorkerPool) -> None:
    """What SIGHUP and a changed file reload: the web config with its certificate, and the targets with their
    password files and CA bundles (the targets file, or the CMX_* settings' password file and CA bundle)."""
    if (web_config_file := settings.web_config_file) is not None:
        reloader.watch("CMX_WEB_CONFIG_FILE", lambda: server.web.files, lambda: server.reload(web_config_file))

    def reload_targets() -> bool:
        try:
            targets = settings.targets()
        except SettingsError as exc:  # "invalid setting CMX_PASSWORD_FILE (...): why": the watch names it
            raise ReloadError(str(exc).partition(": ")[2]) from None
        except TargetsError as exc:
            raise ReloadError(str(exc)) from None
        pool.resize(min(settings.poll_workers, len(targets)))
        changed = schedule.apply(targets)
        pool.keep(target.name for target in targets)  # after apply: a removed target's job is gone by then
        return changed

    if (targets_file := settings.targets_file) is not None:
        def files() -> list[Path]:  # the file, and those its targets name now
            named = [p for t in schedule.targets() for p in (t.options.password_file, t.options.ca_bundle) if p]
            return [targets_file, *dict.fromkeys(named)]

        reloader.watch("CMX_TARGETS_FILE", files, reload_targets)
        return
    if (password_file := settings.password_file) is not None:
        reloader.watch("CMX_PASSWORD_FILE", lambda: [password_file], reload_targets)
    if (ca_bundle := settings.ca_bundle) is not None:
        reloader.watch("CMX_CA_BUNDLE", lambda: [ca_bundle], reload_targets)


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
    reloader = Reloader()
    signal.signal(signal.SIGHUP, lambda *_: reloader.request())  # reload, as Prometheus does; never an exit
    run(settings, stop, targets, reloader)
