"""`leadwire leads backfill [--since YYYY-MM-DD] [--page ID ...] [--account act_ID ...]`: run one backfill now."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.lead_fetcher.backfill import BackfillReport, run_backfill
from services.lead_fetcher.logic import page_token
from services.lead_fetcher.settings import MAX_BACKFILL_DAYS, LeadFetcherSettings
from shared.cli import date_arg, graph_client
from shared.db.pool import create_pool
from shared.page_tokens import configured_forms_token
from shared.settings import MetaSettings, Settings

logger = logging.getLogger("leadwire.leads")


def register(subparsers: Any) -> None:
    leads = subparsers.add_parser("leads", help="lead tools (backfill)")
    sub = leads.add_subparsers(dest="leads_command", required=True)
    backfill = sub.add_parser(
        "backfill",
        help="capture leads whose webhook never came: scan every lead form of the configured Pages now",
    )
    backfill.add_argument("--since", type=date_arg, default=None,
                          help=f"scan leads created after this date (UTC; at most {MAX_BACKFILL_DAYS} days back); "
                               "default: each form's watermark minus the overlap")
    backfill.add_argument("--page", action="append", default=None,
                          help="a Page id (repeatable); default: META_PAGE_IDS")
    backfill.add_argument("--account", action="append", default=None,
                          help="only these ad accounts' Pages (LEADWIRE_ACCOUNTS_FILE); repeatable")
    backfill.set_defaults(func=_cmd_backfill)


async def backfill_once(settings: Settings, *, since: datetime | None = None,
                        page_ids: list[str] | None = None) -> BackfillReport:
    """One backfill with resources of its own (the CLI, tests, benchmarks)."""
    meta = settings.meta
    pool = await create_pool(settings.database)
    try:
        async with graph_client(settings, max_wait=300.0) as graph:
            return await run_backfill(pool, graph, page_ids=page_ids or list(meta.page_ids), token=page_token(meta),
                                      forms_token=configured_forms_token(meta),
                                      settings=settings.block(LeadFetcherSettings), since=since)
    finally:
        await pool.close()


def pages_to_scan(meta: MetaSettings, pages: Sequence[str], accounts: Sequence[str]) -> list[str]:
    """The Pages a backfill scans: `pages` (default every configured Page), only those of `accounts` if given.
    Raises ValueError for an account that is not configured."""
    chosen = list(pages) or list(meta.page_ids)
    if accounts:
        configured = [meta.account(a) for a in accounts]
        unknown = [a for a, found in zip(accounts, configured, strict=True) if found is None]
        if unknown:
            raise ValueError(f"no ad account {unknown[0]} is configured (META_AD_ACCOUNT_ID, LEADWIRE_ACCOUNTS_FILE)")
        theirs = [p for found in configured if found is not None for p in found.page_ids]
        chosen = [p for p in theirs if not pages or p in pages]
    return chosen


def _cmd_backfill(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        pages = pages_to_scan(settings.meta, args.page or [], args.account or [])
    except ValueError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    if not pages:
        sys.stderr.write("leadwire: no Page to scan: set META_PAGE_IDS (or the accounts' page_ids) or pass --page\n")
        return 2
    report = asyncio.run(backfill_once(settings, since=args.since, page_ids=pages))
    if report.skipped:
        sys.stderr.write("leadwire: a backfill is already running (another lead_fetcher); try again later\n")
        return 1
    logger.info("backfill: %s forms scanned, %s leads listed, %s new", report.forms_scanned,
                report.leads_listed, report.leads_new)
    if report.failed_pages or report.failed_forms:
        sys.stderr.write(f"leadwire: backfill incomplete: pages {report.failed_pages or '-'}, "
                         f"forms {report.failed_forms or '-'} failed (see the log); run it again later\n")
        return 1
    return 0
