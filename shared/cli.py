"""The `leadwire` command: run services, migrate, generate contracts, and the operators' tools.

It knows services only through the `ServiceSpec`s it is given (`services/registry.py`, by `services/__main__.py`):
each names its factory, its ops port offset, and optionally its own subcommands and worker count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from aiormq.exceptions import AMQPConnectionError, AMQPError

from shared.logging import redact, register_secret
from shared.service import PortInUseError, Service, ServiceSpec, ensure_free
from shared.settings import Settings, SettingsError

if TYPE_CHECKING:
    from shared.doctor import Finding
    from shared.graph import GraphClient

logger = logging.getLogger("leadwire")
T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a long-lived service's `main` on uvloop where it is installed (Linux, macOS), else on asyncio's loop.

    uvloop's transports and scheduler cost less Python per request: bench_ingress serves 10-15% more deliveries on
    the same CPUs with it.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def date_arg(value: str) -> datetime:
    """An argparse type: `2026-11-01` as midnight UTC."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date like 2026-11-01") from None


def build_services(specs: Sequence[ServiceSpec], settings: Settings) -> list[Service]:
    """Build the services `leadwire run` starts together, each on its port (OPS_PORT_BASE + its offset).

    Raises:
        SettingsError: OPS_PORT names one fixed port for several services.
    """
    with_offset = [spec.name for spec in specs if spec.ops_port_offset is not None]
    if len(with_offset) > 1 and settings.ops.ops_port:
        raise SettingsError(
            f"OPS_PORT={settings.ops.ops_port} would serve {', '.join(with_offset)} on one port: unset it "
            "(each service then serves on OPS_PORT_BASE + its offset) or run one service per process"
        )
    services = []
    for spec in specs:
        service = spec.create_app(settings)
        if (port := spec.ops_port(settings.ops)) is not None:
            service.port = port
        services.append(service)
    return services


async def run_services(specs: Sequence[ServiceSpec], settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Start the services in this process, wait for SIGTERM/SIGINT (or `stop`), then stop them.

    Every fixed port is checked before anything starts, so a taken one stops the run at once.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    services = build_services(specs, settings)
    for service in services:
        if not service.web_reuse_port:  # workers sharing a port find it taken by each other
            ensure_free(service.web_host, service.port, service.name)
    started: list[Service] = []
    try:
        with _quiet_broker_client():  # a broker refusing us at start is said once, by `_cmd_run`, not logged too
            for service in services:
                await service.start()
                started.append(service)
        for service in started:
            logger.info("%-18s ready   http://%s:%s/readyz", service.name, service.web_host, service.ops_port)
        await stop.wait()
        logger.info("stopping: draining in-flight messages")
    finally:
        for service in reversed(started):
            await service.stop()


@contextlib.contextmanager
def _quiet_broker_client() -> Any:
    """aiormq logs a failed connection attempt at error level before raising it; at start the raised error is
    reported on its own line, so its log line would only repeat it."""
    client_logger = logging.getLogger("aiormq.connection")
    level = client_logger.level
    client_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_logger.setLevel(level)


def _broker_refusal(exc: AMQPError, settings: Settings) -> str:
    """One line for a broker that answered but refused the connection (the vhost is missing, or not the user's)."""
    from urllib.parse import urlsplit

    url = urlsplit(settings.broker.amqp_url.get_secret_value())
    vhost = url.path.lstrip("/") or "/"
    return (f"leadwire: cannot start: the broker at {url.hostname}:{url.port or 5672} refused the connection "
            f"({type(exc).__name__}): does vhost '{vhost}' exist, and may the user use it? Check AMQP_URL\n")


def _cmd_run(services: Sequence[ServiceSpec], command: Sequence[str], args: argparse.Namespace) -> int:
    known = {spec.name: spec for spec in services}
    names = list(known) if args.service == ["all"] else args.service
    unknown = sorted(set(names) - set(known))
    if unknown:
        sys.stderr.write(f"unknown service: {', '.join(unknown)} (choose from {', '.join(known)}, all)\n")
        return 2
    specs = [known[name] for name in names]
    settings = Settings()
    _validate(settings)
    if (workers := _workers(specs, settings)) > 1 and WORKER_ENV not in os.environ:
        return run_workers([*command, "run", *names], workers)
    try:
        run_event_loop(run_services(specs, settings))
    except PortInUseError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 1
    except asyncpg.InvalidCatalogNameError:
        sys.stderr.write("leadwire: the database does not exist yet: run `leadwire migrate` (or `make up`)\n")
        return 1
    except (OSError, asyncpg.PostgresError, AMQPConnectionError) as exc:
        sys.stderr.write(f"leadwire: cannot start: {type(exc).__name__}: {redact(str(exc))}\n")
        return 1
    except AMQPError as exc:  # after AMQPConnectionError, one of its kind: the broker answered and said no
        sys.stderr.write(_broker_refusal(exc, settings))
        return 1
    return 0


WORKER_ENV = "LEADWIRE_WORKER"


def _workers(specs: Sequence[ServiceSpec], settings: Settings) -> int:
    """Processes to run side by side: what a service run alone declares (INGRESS_WORKERS, CAPI_WORKERS), else 1."""
    if len(specs) == 1 and specs[0].workers is not None:
        return specs[0].workers(settings)
    return 1


def run_workers(command: Sequence[str], workers: int) -> int:
    """Run `workers` processes of `command` side by side until SIGTERM/SIGINT or until one of them exits.

    The workers share their port (SO_REUSEPORT: the kernel spreads connections) and one Prometheus multiprocess
    directory, so /metrics from any of them counts all. A worker that dies takes the others down with it, and the
    exit code says so: restarting is the supervisor's job (Docker, systemd), not a half-alive process group's.
    """
    with tempfile.TemporaryDirectory(prefix="leadwire-metrics-") as metrics_dir:
        env = {**os.environ, WORKER_ENV: "1", "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        procs = [
            subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)  # noqa: S603 - our own module
            for _ in range(workers)
        ]
        logger.info("started %d workers: %s", workers, " ".join(str(p.pid) for p in procs))
        stopping = False

        def signal_all(signum: int) -> None:
            for proc in procs:
                if proc.returncode is None and proc.poll() is None:
                    proc.send_signal(signum)

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            signal_all(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        first_exit = None
        while first_exit is None:
            with contextlib.suppress(ChildProcessError, InterruptedError):
                pid, status = os.wait()
                first_exit = next((p for p in procs if p.pid == pid), None)
                if first_exit is not None:
                    first_exit.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if not stopping:
            logger.error("worker %d exited with %s: stopping the others", first_exit.pid, first_exit.returncode)
            signal_all(signal.SIGTERM)
        codes = [p.wait() for p in procs]
    return 0 if stopping and all(c in (0, -signal.SIGTERM, -signal.SIGINT) for c in codes) else 1


def _die_with_parent() -> None:
    """In a worker, before exec: get SIGTERM when the supervisor dies, even by SIGKILL (Linux), never orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _cmd_migrate(_: argparse.Namespace) -> int:
    from shared.db.migrate import ensure_database, migrate

    settings = Settings()
    dsn = settings.database.database_url.get_secret_value()

    async def go() -> None:
        if await ensure_database(dsn):
            logger.info("created database")
        applied = await migrate(dsn)
        logger.info("migrations applied: %s", ", ".join(f"{v:04d}" for v in applied) or "none pending")

    asyncio.run(go())
    return 0


def _cmd_schemas(args: argparse.Namespace) -> int:
    from contracts import schemas

    if args.check:
        stale = [name for name, text in schemas.render().items()
                 if not (schemas.SCHEMA_DIR / name).exists()
                 or (schemas.SCHEMA_DIR / name).read_text(encoding="utf-8") != text]
        if stale:
            sys.stderr.write(f"stale schemas (run `make schemas`): {', '.join(stale)}\n")
            return 1
        return 0
    for path in schemas.write():
        logger.info("wrote %s", path)
    return 0


def _cmd_meta_enums(args: argparse.Namespace) -> int:
    from shared.meta import sdk_enums

    if args.check:
        path = sdk_enums.MODULE_PATH
        if not path.exists() or path.read_text(encoding="utf-8") != sdk_enums.render():
            sys.stderr.write("contracts/meta_enums.py is stale for the installed SDK (run `make contracts`)\n")
            return 1
        return 0
    logger.info("wrote %s", sdk_enums.write())
    return 0


def _cmd_asyncapi(services: Sequence[ServiceSpec], args: argparse.Namespace) -> int:
    from shared.asyncapi import ASYNCAPI_PATH, render

    text = render(Settings(), services)
    if args.check:
        if not ASYNCAPI_PATH.exists() or ASYNCAPI_PATH.read_text(encoding="utf-8") != text:
            sys.stderr.write("contracts/asyncapi.yaml is stale (run `make asyncapi`)\n")
            return 1
        return 0
    ASYNCAPI_PATH.write_text(text, encoding="utf-8")
    logger.info("wrote %s", ASYNCAPI_PATH)
    return 0


@contextlib.asynccontextmanager
async def graph_client(settings: Settings, *, max_wait: float | None = 120) -> AsyncIterator[GraphClient]:
    """A Graph client for a command-line tool (services get theirs from `Service`), the Meta secrets registered
    for redaction first. `max_wait`: how long a call may wait out throttles (None: as long as it takes)."""
    import aiohttp

    from shared.graph import GraphClient

    for secret in (settings.meta.access_token, settings.meta.app_secret, settings.meta.page_access_token):
        register_secret(secret.get_secret_value())
    timeout = aiohttp.ClientTimeout(total=settings.meta.request_timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield GraphClient(session, settings.meta, max_wait=max_wait)


def _cmd_doctor(_: argparse.Namespace) -> int:
    from shared.doctor import run_checks

    settings = Settings()

    async def go() -> int:
        async with graph_client(settings) as graph:
            findings = await run_checks(graph, settings.meta)
        findings += await _gohighlevel_findings(settings)
        for finding in findings:
            sys.stdout.write(finding.render() + "\n")
        failed = [f for f in findings if not f.ok]
        sys.stdout.write(f"{len(findings) - len(failed)} ok, {len(failed)} to fix\n")
        return 1 if failed else 0

    return asyncio.run(go())


async def _gohighlevel_findings(settings: Settings) -> list[Finding]:
    """GoHighLevel's checks when GHL_API_TOKEN is set (none otherwise)."""
    import aiohttp

    from shared.doctor import check_gohighlevel
    from shared.ghl import GhlClient, GhlSettings

    ghl = settings.block(GhlSettings)
    if not ghl.gohighlevel_enabled:
        return []
    register_secret(ghl.ghl_api_token.get_secret_value())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        return await check_gohighlevel(GhlClient.from_settings(session, ghl), ghl.ghl_custom_field_map)


def _cmd_pages_subscribe(_: argparse.Namespace) -> int:
    from shared.doctor import subscribe_pages

    settings = Settings()
    if not settings.meta.page_ids:
        sys.stderr.write("leadwire: set META_PAGE_IDS to the Pages whose leads leadwire should receive\n")
        return 2

    async def go() -> int:
        async with graph_client(settings) as graph:
            findings = await subscribe_pages(graph, settings.meta)
        for finding in findings:
            sys.stdout.write(finding.render() + "\n")
        return 0 if all(f.ok for f in findings) else 1

    return asyncio.run(go())


def _validate(settings: Settings) -> None:
    """Touch every settings block so a bad variable stops start-up now, with its name."""
    for block in ("meta", "broker", "database", "ops"):
        getattr(settings, block)


def build_parser(services: Sequence[ServiceSpec], command: Sequence[str] = ("leadwire",)) -> argparse.ArgumentParser:
    """The parser of every subcommand; `command` is how worker processes run this same command line."""
    parser = argparse.ArgumentParser(prog="leadwire", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run services: one or more names, or `all` in one process")
    run.add_argument("service", nargs="+", help=f"{', '.join(spec.name for spec in services)} or all")
    run.set_defaults(func=functools.partial(_cmd_run, services, command))
    sub.add_parser("migrate", help="create the database if needed and apply migrations").set_defaults(
        func=_cmd_migrate
    )
    for name, func, what in (
        ("meta-enums", _cmd_meta_enums, "Meta enum module (from the facebook-business SDK)"),
        ("schemas", _cmd_schemas, "JSON Schemas"),
        ("asyncapi", functools.partial(_cmd_asyncapi, services), "AsyncAPI"),
    ):
        cmd = sub.add_parser(name, help=f"generate the {what} under contracts/")
        cmd.add_argument("--check", action="store_true", help="fail if the committed files are stale")
        cmd.set_defaults(func=func)
    sub.add_parser("doctor", help="check the Meta token, permissions, Page subscriptions, ad accounts, pixel"
                   ).set_defaults(func=_cmd_doctor)
    pages = sub.add_parser("pages", help="Meta Pages").add_subparsers(dest="pages_command", required=True)
    pages.add_parser("subscribe", help="subscribe the app to leadgen webhooks of every page in META_PAGE_IDS"
                     ).set_defaults(func=_cmd_pages_subscribe)
    from shared import parked

    parked.register(sub, lambda: Settings().broker.amqp_url.get_secret_value())
    for spec in services:
        if spec.register_cli is not None:
            spec.register_cli(sub)
    return parser


def main(
    services: Sequence[ServiceSpec], argv: Sequence[str] | None = None, *, command: Sequence[str] = ("leadwire",)
) -> int:
    """Run one subcommand. `command` starts this same command line again (for worker processes)."""
    args = build_parser(services, command).parse_args(argv)
    settings_ops = None
    with contextlib.suppress(SettingsError):
        settings_ops = Settings().ops
    from shared.logging import configure_logging

    configure_logging(settings_ops.log_level if settings_ops else "INFO",
                      settings_ops.log_format if settings_ops else "auto")
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130

