"""`leadwire insights refresh`: re-read insights (and objects) for a date window now, outside the schedule."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import date

from services.insights_poller.settings import InsightsSettings
from services.insights_poller.worker import Worker
from shared.cli import graph_client
from shared.db.pool import create_pool
from shared.settings import Settings

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    insights = subparsers.add_parser("insights", help="insights poller tools")
    sub = insights.add_subparsers(dest="insights_command", required=True)
    refresh = sub.add_parser(
        "refresh", help="re-read insights for a window (stored numbers are replaced, not added)"
    )
    refresh.add_argument("--since", required=True, type=date.fromisoformat, help="first day, YYYY-MM-DD")
    refresh.add_argument("--until", type=date.fromisoformat, default=None,
                         help="last day, YYYY-MM-DD (default: today in the account's time zone)")
    refresh.add_argument("--account", action="append", default=None,
                         help="act_<id> (repeatable; default: every account in META_AD_ACCOUNT_ID)")
    refresh.set_defaults(func=_cmd_refresh)


def _cmd_refresh(args: argparse.Namespace) -> int:
    settings = Settings()
    accounts = args.account or settings.meta.ad_account_id
    if not accounts:
        sys.stderr.write("leadwire: no ad account: pass --account act_<id> or set META_AD_ACCOUNT_ID\n")
        return 2
    bad = [a for a in accounts if not a.startswith("act_") or not a[4:].isdigit()]
    if bad:
        sys.stderr.write(f"leadwire: not an ad account id: {', '.join(bad)} (expected act_<digits>)\n")
        return 2
    if args.until is not None and args.until < args.since:
        sys.stderr.write("leadwire: --until is before --since\n")
        return 2
    return asyncio.run(refresh(settings, accounts, args.since, args.until))


async def refresh(settings: Settings, accounts: list[str], since: date, until: date | None) -> int:
    """Run one refresh per account; exit status 1 if any failed. InsightsUpdated goes through the outbox and is
    published by the next running service's relay."""
    pool = await create_pool(settings.database)
    try:
        # An operator waits for the answer: wait out throttles instead of giving up after max_wait.
        async with graph_client(settings, max_wait=None) as graph:
            poller = Worker(pool, graph, settings.block(InsightsSettings), accounts)
            outcomes = await poller.refresh_all(accounts, since=since, until=until)
    finally:
        await pool.close()
    for outcome in outcomes:
        if outcome.ok and outcome.window is not None:
            logger.info("%s: %s..%s %s rows (%s changed), %s Graph calls", outcome.account_id,
                        outcome.window.since, outcome.window.until, outcome.rows, outcome.rows_changed,
                        outcome.graph_calls)
        else:
            logger.error("%s: failed: %s", outcome.account_id, type(outcome.error).__name__)
    return 0 if all(o.ok for o in outcomes) else 1
