"""`leadwire rules check|backtest|reset`: validate rule files, replay stored insights, close a circuit breaker."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from services.rules_engine import store
from services.rules_engine.backtest import backtest, render_backtest
from services.rules_engine.rules import check_rules, load_rules
from services.rules_engine.settings import RulesSettings
from shared.db.pool import create_pool
from shared.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    rules = subparsers.add_parser("rules", help="automation rules: check files, backtest, reset a breaker")
    sub = rules.add_subparsers(dest="rules_command", required=True)

    check = sub.add_parser("check", help="validate every *.yaml under DIR; prints file:line: field: message")
    check.add_argument("dir", type=Path)
    check.set_defaults(func=_cmd_check)

    bt = sub.add_parser("backtest", help="replay stored daily insights day by day and show what the rules do")
    bt.add_argument("dir", type=Path)
    bt.add_argument("--days", type=int, default=30, help="days to replay, ending with the newest stored day")
    bt.add_argument("--account", action="append", default=None,
                    help="act_<id> (repeatable; default: META_AD_ACCOUNT_ID, else every stored account)")
    bt.add_argument("--actions-only", action="store_true", help="leave skipped decisions out of the table")
    bt.set_defaults(func=_cmd_backtest)

    reset = sub.add_parser("reset", help="close a rule's circuit breaker after fixing what made its commands fail")
    reset.add_argument("rule")
    reset.set_defaults(func=_cmd_reset)


def _cmd_check(args: argparse.Namespace) -> int:
    problems = check_rules(args.dir)
    for problem in problems:
        sys.stdout.write(f"{problem}\n")
    if problems:
        sys.stdout.write(f"{len(problems)} problem(s)\n")
        return 1
    count = len(load_rules(args.dir))
    sys.stdout.write(f"{count} rule(s) OK\n")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    if args.days < 1:
        sys.stderr.write("leadwire: --days must be at least 1\n")
        return 2
    problems = check_rules(args.dir)
    if problems:
        for problem in problems:
            sys.stderr.write(f"{problem}\n")
        return 1
    settings = Settings()
    accounts = args.account or settings.meta.ad_account_id
    text = asyncio.run(run_backtest(settings, args.dir, args.days, accounts, include_skipped=not args.actions_only))
    sys.stdout.write(text + "\n")
    return 0


async def run_backtest(
    settings: Settings, directory: Path, days: int, accounts: list[str], *, include_skipped: bool = True
) -> str:
    """Load the stored insights of ``accounts`` and return the rendered backtest of the rules in ``directory``."""
    config = settings.block(RulesSettings)
    rules = [r for r in load_rules(directory) if r.enabled]
    now = datetime.now(UTC)
    pool = await create_pool(settings.database)
    try:
        async with pool.acquire() as conn:
            targets = await store.known_accounts(conn, accounts)
            if not targets:
                return "no stored ad account matches (run the insights poller first)"
            history = await store.load_snapshot(
                conn, rules, targets, now, lookback_cap=config.lookback_days, extra_days=days, per_day=True,
                qualified_events=config.qualified_events, signed_events=config.signed_events,
            )
    finally:
        await pool.close()
    decisions = backtest(rules, history, days)
    return render_backtest(decisions, include_skipped=include_skipped)


def _cmd_reset(args: argparse.Namespace) -> int:
    settings = Settings()

    async def go() -> bool:
        pool = await create_pool(settings.database)
        try:
            async with pool.acquire() as conn:
                return await store.reset_breaker(conn, args.rule)
        finally:
            await pool.close()

    if asyncio.run(go()):
        sys.stdout.write(f"circuit breaker of rule {args.rule!r} closed\n")
        return 0
    sys.stdout.write(f"rule {args.rule!r} has no circuit breaker record\n")
    return 1
