"""`leadwire audiences list` and `leadwire audiences sync [NAME ...] [--dry-run] [--wait S]` (and `leadwire forms`:
`forms_cli.py`).

`list` shows each definition of EXECUTOR_AUDIENCES_FILE with what is recorded: Meta's id, the last sync and its
counts. `sync` enqueues a `sync_audience` command per audience (all when no name is given) and relays them to the
broker; the running campaign executor does the work. With `--wait`, it prints each command's result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import asyncpg

from contracts.messages import CampaignCommandMessage
from services.campaign_executor import store
from services.campaign_executor.audience_defs import AudienceConfigError, load
from services.campaign_executor.audience_jobs import enqueue_syncs, ordered, sync_messages
from services.campaign_executor.settings import ExecutorSettings
from shared.db.pool import create_pool
from shared.outbox import relay_pending
from shared.settings import Settings


def register(subparsers: Any) -> None:
    audiences = subparsers.add_parser("audiences", help="custom audiences kept in sync with the CRM").add_subparsers(
        dest="audiences_command", required=True)
    audiences.add_parser("list", help="the audience definitions and what Meta has").set_defaults(func=_cmd_list)
    sync = audiences.add_parser("sync", help="sync audiences now (all, or the ones named)")
    sync.add_argument("name", nargs="*", help="audience definition names (default: all)")
    sync.add_argument("--dry-run", action="store_true", help="only report what would be sent")
    sync.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait up to this long for the executor's results and print them")
    sync.set_defaults(func=_cmd_sync)
    from services.campaign_executor import forms_cli  # it uses send_commands below

    forms_cli.register(subparsers)


def _definitions(settings: Settings) -> dict[str, Any] | None:
    try:
        return load(settings.block(ExecutorSettings).audiences_file or None)
    except AudienceConfigError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return None


def _cmd_list(_: argparse.Namespace) -> int:
    settings = Settings()
    definitions = _definitions(settings)
    if definitions is None:
        return 2

    async def go() -> int:
        pool = await create_pool(settings.database)
        try:
            recorded = {r["name"]: r for r in await store.recorded_audiences(pool)}
        finally:
            await pool.close()
        for name in ordered(definitions):
            d = definitions[name]
            what = (f"lookalike of {d.lookalike.seed} {d.lookalike.spec()}" if d.lookalike else
                    f"leads of the last {d.leads.days} days" if d.leads else
                    f"leads with outcome {', '.join(d.event_names)}" + (f" in {d.days} days" if d.days else ""))
            row = recorded.get(name)
            state = ("not created yet" if row is None else
                     f"{row['audience_id']} synced {row['synced_at'] or 'never'} {json.dumps(row['last_counts'])}")
            sys.stdout.write(f"{name}\t{d.account_id}\t{what}\t{state}\n")
        for name in sorted(set(recorded) - set(definitions)):
            sys.stdout.write(f"{name}\t{recorded[name]['audience_id']}\tno longer defined\n")
        return 0

    return asyncio.run(go())


def _cmd_sync(args: argparse.Namespace) -> int:
    settings = Settings()
    definitions = _definitions(settings)
    if definitions is None:
        return 2
    try:
        names = ordered(definitions, args.name or None)
    except KeyError as exc:
        sys.stderr.write(f"leadwire: no audience {exc.args[0]} in the audiences file\n")
        return 2
    if not names:
        sys.stderr.write("leadwire: no audience defined (EXECUTOR_AUDIENCES_FILE)\n")
        return 2
    return asyncio.run(sync(settings, names, dry_run=args.dry_run, wait=args.wait))


async def sync(settings: Settings, names: list[str], *, dry_run: bool = False, wait: float = 0.0) -> int:
    messages = sync_messages(names, requested_by="cli:audiences sync", dry_run=dry_run)
    ids = {str(m.payload.root.command_id): m.payload.root.audience for m in messages}  # type: ignore[union-attr]
    return await send_commands(settings, messages, ids, wait=wait)


async def send_commands(settings: Settings, messages: list[CampaignCommandMessage], ids: dict[str, str], *,
                        wait: float = 0.0) -> int:
    """Enqueue commands in the outbox and relay them to the broker (the running executor acts on them); with
    `wait`, print each one's result (`ids`: command id -> what to call it)."""
    pool = await create_pool(settings.database)
    try:
        await enqueue_syncs(pool, messages)
        failure = await relay_pending(pool, settings.broker, service="campaign_executor")
        if failure is not None:  # safe in the outbox: any running service's relay publishes them
            sys.stderr.write(f"could not publish now ({type(failure).__name__}): a running service will relay them\n")
        for command_id, name in ids.items():
            sys.stdout.write(f"{name}\tcommand {command_id}\n")
        if wait > 0:
            return await _print_results(pool, ids, wait)
        return 0
    finally:
        await pool.close()


async def _print_results(pool: asyncpg.Pool, ids: dict[str, str], wait: float) -> int:
    deadline = time.monotonic() + wait
    pending = dict(ids)
    failed = False
    while pending and time.monotonic() < deadline:
        rows = await pool.fetch("select command_id::text as id, status, result from campaign_commands "
                                "where command_id = any($1::uuid[]) and status = any($2::text[])",
                                list(pending), sorted(store.FINAL))
        for row in rows:
            detail = (row["result"] or {}).get("detail", "")
            sys.stdout.write(f"{pending.pop(row['id'])}\t{row['status']}\t{detail}\n")
            failed = failed or row["status"] == "failed"
        await asyncio.sleep(0.5)
    for name in pending.values():
        sys.stdout.write(f"{name}\tno result yet (is the campaign executor running?)\n")
    return 1 if failed or pending else 0
