"""The `leadwire` command: run services, migrate, generate contracts, and the operators' tools.

Service packages may add subcommands in `services/<name>/cli.py` with a `register(subparsers)` function.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import logging
import signal
import sys
from collections.abc import Sequence

import asyncpg
from aiormq.exceptions import AMQPConnectionError

from shared.logging import redact
from shared.settings import Settings, SettingsError
from shared.topology import SERVICES

logger = logging.getLogger("leadwire")


def _service_factory(name: str):
    return importlib.import_module(f"services.{name}.app").create_app


async def run_services(names: Sequence[str], settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Start the named services in this process, wait for SIGTERM/SIGINT (or `stop`), then stop them."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started = []
    try:
        for name in names:
            service = _service_factory(name)(settings)
            await service.start()
            started.append(service)
        for service in started:
            logger.info("%-18s ready   http://%s:%s/readyz", service.name, service.web_host, service.ops_port)
        await stop.wait()
        logger.info("stopping: draining in-flight messages")
    finally:
        for service in reversed(started):
            await service.stop()


def _cmd_run(args: argparse.Namespace) -> int:
    names = list(SERVICES) if args.service == ["all"] else args.service
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        sys.stderr.write(f"unknown service: {', '.join(unknown)} (choose from {', '.join(SERVICES)}, all)\n")
        return 2
    settings = Settings()
    _validate(settings)
    try:
        asyncio.run(run_services(names, settings))
    except asyncpg.InvalidCatalogNameError:
        sys.stderr.write("leadwire: the database does not exist yet: run `leadwire migrate` (or `make up`)\n")
        return 1
    except (OSError, asyncpg.PostgresError, AMQPConnectionError) as exc:
        sys.stderr.write(f"leadwire: cannot start: {type(exc).__name__}: {redact(str(exc))}\n")
        return 1
    return 0


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


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    from shared.asyncapi import ASYNCAPI_PATH, render

    text = render(Settings())
    if args.check:
        if not ASYNCAPI_PATH.exists() or ASYNCAPI_PATH.read_text(encoding="utf-8") != text:
            sys.stderr.write("contracts/asyncapi.yaml is stale (run `make asyncapi`)\n")
            return 1
        return 0
    ASYNCAPI_PATH.write_text(text, encoding="utf-8")
    logger.info("wrote %s", ASYNCAPI_PATH)
    return 0


def _validate(settings: Settings) -> None:
    """Touch every settings block so a bad variable stops start-up now, with its name."""
    for block in ("meta", "broker", "database", "ops", "ingress"):
        getattr(settings, block)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadwire", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run services: one or more names, or `all` in one process")
    run.add_argument("service", nargs="+", help=f"{', '.join(SERVICES)} or all")
    run.set_defaults(func=_cmd_run)
    sub.add_parser("migrate", help="create the database if needed and apply migrations").set_defaults(
        func=_cmd_migrate
    )
    for name, func, what in (("schemas", _cmd_schemas, "JSON Schemas"), ("asyncapi", _cmd_asyncapi, "AsyncAPI")):
        cmd = sub.add_parser(name, help=f"generate the {what} under contracts/")
        cmd.add_argument("--check", action="store_true", help="fail if the committed files are stale")
        cmd.set_defaults(func=func)
    for service in (*SERVICES, "graph_sandbox"):
        package = f"services.{service}"
        if importlib.util.find_spec(package) is not None and importlib.util.find_spec(f"{package}.cli") is not None:
            importlib.import_module(f"services.{service}.cli").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
