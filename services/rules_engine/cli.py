"""`leadwire rules check|backtest|reset`: validate rule files, replay stored insights, close a circuit breaker."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from services.rules_engine import store
from services.rules_engine.backtest import render_backtest, render_money, replay, unbounded_rules
from services.rules_engine.model import Snapshot
from services.rules_engine.reach_history import reach_windows, read_reach_history
from services.rules_engine.rules import Rule, check_rules, load_rules
from services.rules_engine.settings import RulesSettings
from shared.cli import graph_client
from shared.db.pool import create_pool
from shared.settings import BudgetGuardrailSettings, Settings


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
    bt.add_argument("--no-meta-reach", action="store_true",
                    help="do not ask Meta for each day's window reach (frequency then uses summed daily reach)")
    bt.add_argument("--strict", action="store_true",
                    help="exit 1 when a rule's budgets can grow without bound (no guardrails.max_budget)")
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
    text = asyncio.run(run_backtest(settings, args.dir, args.days, accounts, include_skipped=not args.actions_only,
                                    meta_reach=not args.no_meta_reach))
    sys.stdout.write(text + "\n")
    if args.strict and unbounded_rules([r for r in load_rules(args.dir) if r.enabled]):
        sys.stderr.write("leadwire: refused (--strict): budgets of these rules can grow without bound\n")
        return 1
    return 0


async def run_backtest(
    settings: Settings, directory: Path, days: int, accounts: list[str], *, include_skipped: bool = True,
    meta_reach: bool = True,
) -> str:
    """Load the stored insights of ``accounts`` and return the rendered backtest of the rules in ``directory``:
    the decisions, then the money per rule and in total, flagged loudly when budgets can grow without bound.

    Rules over reach or frequency get each replayed day's window reach from Meta (``meta_reach``, when a token
    is configured); the executor's hard limits (BUDGET_*) apply to the simulated raises.
    """
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
    reach, note = await _window_reach(settings, rules, history, targets, days, meta_reach=meta_reach)
    limits = settings.block(BudgetGuardrailSettings)
    report = replay(rules, history, days, limits=limits, window_reach_by_day=reach)
    warnings = unbounded_rules(rules)
    unlimited = replay(rules, history, days, limits=limits, window_reach_by_day=reach, hard_limits=False) \
        if warnings else None
    parts = [render_backtest(report.decisions, include_skipped=include_skipped), "",
             render_money(report, warnings=warnings, unlimited=unlimited)]
    if note:
        parts.append(note)
    return "\n".join(parts)


async def _window_reach(
    settings: Settings, rules: list[Rule], history: Snapshot, accounts: list[str], days: int, *, meta_reach: bool
) -> tuple[dict[date, dict[tuple[str, str], int]] | None, str]:
    """Each replayed day's window reach from Meta, and a line saying where frequency came from."""
    if not reach_windows(rules) or not history.rows:
        return None, ""
    if not meta_reach or not settings.meta.access_token.get_secret_value():
        return None, ("window reach: not asked from Meta (no META_ACCESS_TOKEN or --no-meta-reach); frequency "
                      "over windows from summed daily reach, which overstates reach and understates frequency")
    last_day = max(row.date for row in history.rows)
    replay_days = [last_day - timedelta(days=n) for n in range(days)]
    async with graph_client(settings) as graph:
        levels = {r.scope.level for r in rules if reach_windows([r])}
        found = await read_reach_history(graph, accounts, rules, levels, replay_days)
    note = f"window reach: {found.calls} ranges asked from Meta"
    if found.failed:
        note += f", {found.failed} unavailable (those days use summed daily reach)"
    return found.by_day, note


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
