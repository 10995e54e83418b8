"""`leadwire crm redeliver`: deliver again leads whose CRM delivery failed for good, or named leads."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import datetime
from typing import Any

from services.crm_sync.redeliver import RedeliveryReport, redeliver
from services.crm_sync.store import failed_leads
from shared.cli import date_arg
from shared.db.pool import create_pool
from shared.outbox import relay_pending
from shared.settings import Settings

logger = logging.getLogger("leadwire.crm")


def register(subparsers: Any) -> None:
    crm = subparsers.add_parser("crm", help="CRM delivery tools (redeliver)")
    sub = crm.add_subparsers(dest="crm_command", required=True)
    cmd = sub.add_parser(
        "redeliver",
        help="enqueue leads for CRM delivery again (adapters that already have a lead are not sent it twice)",
    )
    cmd.add_argument("leadgen_id", nargs="*", help="lead ids to deliver again")
    cmd.add_argument("--failed", action="store_true",
                     help="every lead with a delivery that ended `failed` (attempts ran out, or refused)")
    cmd.add_argument("--since", type=date_arg, default=None,
                     help="with --failed: only deliveries that failed on or after this date (UTC)")
    cmd.add_argument("--adapter", default=None, help="with --failed: only failures of this adapter")
    cmd.set_defaults(func=_cmd_redeliver)


async def redeliver_once(settings: Settings, *, leadgen_ids: list[str], failed: bool = False,
                         since: datetime | None = None, adapter: str | None = None) -> tuple[RedeliveryReport, bool]:
    """Enqueue, then relay the outbox once so the messages leave now; returns the report and whether the relay
    reached the broker (if not, a running service's relay publishes them)."""
    pool = await create_pool(settings.database)
    try:
        ids = list(leadgen_ids) + (await failed_leads(pool, since=since, adapter=adapter) if failed else [])
        report = await redeliver(pool, ids)
        relayed = await _relay(pool, settings) if report.enqueued else True
    finally:
        await pool.close()
    return report, relayed


async def _relay(pool: Any, settings: Settings) -> bool:
    failure = await relay_pending(pool, settings.broker, service="crm_sync")
    if failure is not None:  # the messages are safe in the outbox; any service's relay publishes them
        logger.warning("could not publish now (%s): a running service will relay them", type(failure).__name__)
    return failure is None


def _cmd_redeliver(args: argparse.Namespace) -> int:
    if not args.failed and not args.leadgen_id:
        sys.stderr.write("leadwire: name lead ids, or pass --failed\n")
        return 2
    if (args.since or args.adapter) and not args.failed:
        sys.stderr.write("leadwire: --since and --adapter go with --failed\n")
        return 2
    report, relayed = asyncio.run(redeliver_once(Settings(), leadgen_ids=args.leadgen_id, failed=args.failed,
                                                 since=args.since, adapter=args.adapter))
    logger.info("redeliver: %s leads enqueued%s", len(report.enqueued),
                "" if relayed else " (in the outbox; published by the next running service)")
    if report.not_stored:
        sys.stderr.write(f"leadwire: not in the leads table, skipped: {' '.join(report.not_stored)}\n")
        return 1
    return 0
