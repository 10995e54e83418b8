"""`leadwire rules check|backtest|reset|status|enable|disable|approve|reject`: validate rule files, replay stored
insights, close a circuit breaker, and the operator's consent.

`enable`, `disable`, `approve` and `reject` do not write the rules engine's tables: they send it a message
(`RuleConsentChanged`, `RuleDecisionReviewed`) through the outbox, which the running services publish, and wait a
few seconds for the engine to have applied it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg

from contracts.messages import RuleConsentChangedMessage, RuleDecisionReviewedMessage
from contracts.rules import RuleConsentChanged, RuleDecisionReviewed
from services.rules_engine import store
from services.rules_engine.account_rules import load_account_rules
from services.rules_engine.backtest import render_backtest, render_money, replay, unbounded_rules
from services.rules_engine.model import Snapshot
from services.rules_engine.reach_history import reach_windows, read_reach_history
from services.rules_engine.rule_files import check_rules, load_rules
from services.rules_engine.rules import Rule
from services.rules_engine.settings import RulesSettings
from shared.cli import graph_client
from shared.db.pool import create_pool
from shared.outbox import enqueue
from shared.settings import BudgetGuardrailSettings, Settings

T = TypeVar("T")


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

    status = sub.add_parser("status", help="each rule: enabled (acts on Meta) or shadow mode, and recent decisions")
    status.add_argument("--dir", type=Path, default=None, help="rule files (default: RULES_DIR)")
    status.set_defaults(func=_cmd_status)

    for name, enabled, text in (("enable", True, "let a rule act on Meta (new installs run every rule in shadow "
                                                  "mode: decisions recorded and announced, nothing sent)"),
                                ("disable", False, "put a rule back in shadow mode")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("rule")
        cmd.add_argument("--note", default="", help="why, in a few words (kept with the change)")
        cmd.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the rules engine (0: none)")
        cmd.set_defaults(func=_cmd_consent, enabled=enabled)

    for name, verdict in (("approve", "approve"), ("reject", "reject")):
        cmd = sub.add_parser(name, help=f"{name} one decision of a rule in shadow mode (its id: `rules status`, "
                                        "the notification, or the console)")
        cmd.add_argument("decision_id", type=int)
        cmd.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the rules engine (0: none)")
        cmd.set_defaults(func=_cmd_review, verdict=verdict)


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


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


async def _wait_for(
    pool: asyncpg.Pool, read: Callable[[asyncpg.Connection], Awaitable[T | None]], *, wait: float
) -> T | None:
    """The first non-null value ``read`` (a store function) returns within ``wait`` seconds (the engine applied the
    message), else None."""
    deadline = time.monotonic() + wait
    while True:
        async with pool.acquire() as conn:
            value = await read(conn)
        if value is not None or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.2)


async def request_consent(settings: Settings, rule: str, *, enabled: bool, by: str, note: str = "",
                          wait: float = 10.0) -> bool | None:
    """Send the rules engine a RuleConsentChanged (outbox) and wait up to ``wait`` s for it to be applied: the
    state it recorded, or None if it has not (yet) done so."""
    message = RuleConsentChangedMessage.new(RuleConsentChanged(rule=rule, enabled=enabled, by=by, note=note))
    pool = await create_pool(settings.database)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, message)
        return await _wait_for(pool, lambda conn: store.consent_applied(conn, message.message_id), wait=wait)
    finally:
        await pool.close()


async def request_review(settings: Settings, decision_id: int, *, verdict: str, by: str,
                         wait: float = 10.0) -> tuple[str | None, str | None]:
    """Send a RuleDecisionReviewed and wait for the engine's verdict: (the decision's sentence, what came of it);
    (None, None) for an unknown decision, (sentence, None) if the engine has not answered in time."""
    message = RuleDecisionReviewedMessage.new(RuleDecisionReviewed(decision_id=decision_id, verdict=verdict,  # type: ignore[arg-type]
                                                                   by=by))
    pool = await create_pool(settings.database)
    try:
        async with pool.acquire() as conn:
            found = await store.decision(conn, decision_id)
        if found is None:
            return None, None
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, message)
        result = await _wait_for(pool, lambda conn: store.review_result(conn, decision_id), wait=wait)
        return str(found["explanation"]), result
    finally:
        await pool.close()


def _cmd_consent(args: argparse.Namespace) -> int:
    settings = Settings()
    config = settings.block(RulesSettings)
    known = {r.name: r for r in
             load_account_rules(config.dir, settings.meta.rules_dirs(), settings.meta.ad_account_id)[0]}
    if args.rule not in known:
        sys.stderr.write(f"leadwire: no rule named {args.rule!r} in {config.dir} (known: {', '.join(sorted(known))})\n")
        return 2
    if known[args.rule].notify_only:
        sys.stderr.write(f"leadwire: rule {args.rule!r} only notifies you and changes nothing on Meta: it needs no "
                         "consent and is on as long as its file enables it (nothing sent)\n")
        return 2
    applied = asyncio.run(request_consent(settings, args.rule, enabled=args.enabled, by=_operator(), note=args.note,
                                          wait=args.wait))
    state = "enabled: its decisions act on Meta" if args.enabled else "in shadow mode: nothing is sent to Meta"
    if applied is None:
        sys.stdout.write(f"asked the rules engine to set rule {args.rule!r} {state.split(':')[0]}; it applies it "
                         "when it runs (check with `leadwire rules status`)\n")
    else:
        sys.stdout.write(f"rule {args.rule!r} {state}\n")
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    decision, result = asyncio.run(request_review(Settings(), args.decision_id, verdict=args.verdict,
                                                  by=_operator(), wait=args.wait))
    if decision is None:
        sys.stderr.write(f"leadwire: no decision {args.decision_id}\n")
        return 2
    sys.stdout.write(f"decision {args.decision_id}: {decision}\n")
    sys.stdout.write(f"{result}\n" if result is not None else
                     f"{args.verdict} sent; the rules engine applies it when it runs\n")
    return 0


async def status_text(settings: Settings, directory: Path | None) -> str:
    """`leadwire rules status`: each rule's consent, its decisions of the last 7 days and an open breaker (of
    `directory`, or of RULES_DIR and every account's own rule directory)."""
    config = settings.block(RulesSettings)
    if directory is None:
        directory = config.dir
        rules = load_account_rules(directory, settings.meta.rules_dirs(), settings.meta.ad_account_id)[0]
    else:
        rules = load_rules(directory, strict=False)
    pool = await create_pool(settings.database)
    try:
        async with pool.acquire() as conn:
            consent = await store.consent_rows(conn)
            breakers = dict(await store.breakers(conn))
            recent = await store.recent_decision_counts(conn, days=7)
    finally:
        await pool.close()
    lines = [f"rules in {directory}{' (RULES_DRY_RUN: nothing acts)' if config.dry_run else ''}:"]
    for rule in rules:
        row = consent.get(rule.name)
        if not rule.enabled:
            state = "off in its file"
        elif rule.dry_run:
            state = "dry run (its file)"
        elif rule.notify_only:
            state = "on: notifies only, needs no consent"
        elif row is not None and row["enabled"]:
            state = f"ENABLED by {row['changed_by']} {row['changed_at']:%Y-%m-%d %H:%M}"
        else:
            state = "shadow mode"
        seen = recent.get(rule.name)
        counts = (f"7 days: {seen['acted']} acted, {seen['shadow']} would have acted" if seen
                  else "7 days: no decisions")
        breaker = breakers.get(rule.name)
        if breaker is not None and breaker["opened_at"] is not None:
            counts += " · CIRCUIT OPEN (`leadwire rules reset`)"
        lines.append(f"  {rule.name:<28} {state:<40} {counts}")
    for name in sorted(set(consent) - {r.name for r in rules}):
        lines.append(f"  {name:<28} {'consent recorded, no such rule file':<40}")
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    settings = Settings()
    sys.stdout.write(asyncio.run(status_text(settings, args.dir)) + "\n")
    return 0
