"""PostgreSQL side of the rules engine (migration 0008): engine state, audit, CRM outcomes, breakers, deliveries."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from services.rules_engine.model import ActionRecord, Decision, EngineState
from shared.budget_guardrails import daily_ceiling_minor

# History kept in the engine state: longer than any sensible cooldown, and the backtest's default.
HISTORY = timedelta(days=8)


async def lock_evaluation(conn: asyncpg.Connection) -> None:
    """One evaluation at a time (all processes): two runs must not both see "no cooldown" and both act."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('rules_engine:evaluate'))")


async def known_accounts(conn: asyncpg.Connection, only: Sequence[str] = ()) -> list[str]:
    rows = await conn.fetch(
        "select account_id from ad_accounts where cardinality($1::text[]) = 0 or account_id = any($1::text[]) "
        "order by account_id",
        list(only),
    )
    return [r["account_id"] for r in rows]


async def load_state(
    conn: asyncpg.Connection, accounts: Sequence[str], now: datetime, *, ceiling_major: float | None,
    history: timedelta = HISTORY,
) -> EngineState:
    """Action history (every account: per-rule daily caps span accounts), breakers, freshness and ceilings."""
    actions = [
        ActionRecord(rule=r["rule"], entity_id=r["entity_id"], kind=r["kind"], at=r["acted_at"],
                     resume_at=r["resume_at"])
        for r in await conn.fetch(
            "select rule, entity_id, kind, acted_at, resume_at from rule_actions where acted_at > $1 "
            "order by acted_at",
            now - history,
        )
    ]
    failures = {r["rule"]: r["failures"] for r in await conn.fetch("select rule, failures from rule_breakers")}
    data_as_of: dict[str, datetime] = {}
    ceilings: dict[str, int] = {}
    for r in await conn.fetch(
        "select account_id, currency, last_refresh_at from ad_accounts where account_id = any($1::text[])",
        list(accounts),
    ):
        if r["last_refresh_at"] is not None:
            data_as_of[r["account_id"]] = r["last_refresh_at"]
        ceiling = daily_ceiling_minor(ceiling_major, r["currency"])
        if ceiling is not None:
            ceilings[r["account_id"]] = ceiling
    return EngineState(actions=tuple(actions), consecutive_failures=failures,
                       account_daily_budget_ceiling=ceilings, data_as_of=data_as_of)


async def pending_resume_levels(conn: asyncpg.Connection, now: datetime) -> set[str]:
    rows = await conn.fetch(
        "select distinct entity_level from rule_actions where kind = 'pause_for_today' and resume_at > $1",
        now - HISTORY,
    )
    return {r["entity_level"] for r in rows}


async def next_resume_at(conn: asyncpg.Connection, now: datetime) -> datetime | None:
    """The soonest pause-for-today end still ahead (the scheduler wakes up for it)."""
    value: datetime | None = await conn.fetchval(
        "select min(resume_at) from rule_actions where kind = 'pause_for_today' and resume_at > $1", now
    )
    return value


async def record_run(
    conn: asyncpg.Connection, *, run_id: uuid.UUID, trigger: str, trigger_message_id: uuid.UUID | None,
    accounts: Sequence[str], started_at: datetime, rules: Sequence[str], rule_problems: int, entities: int,
    decisions: Sequence[Decision],
) -> None:
    counts = Counter(d.outcome if d.reason is None else f"{d.outcome}:{d.reason}" for d in decisions)
    await conn.execute(
        """
        insert into rule_runs (run_id, trigger, trigger_message_id, accounts, started_at, rules, rule_problems,
                               entities, decisions, acted, counts)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        """,
        run_id, trigger, trigger_message_id, list(accounts), started_at, list(rules), rule_problems, entities,
        len(decisions), sum(1 for d in decisions if d.outcome == "acted"), dict(counts),
    )


async def record_decisions(conn: asyncpg.Connection, run_id: uuid.UUID, decisions: Sequence[Decision]) -> None:
    if not decisions:
        return
    await conn.executemany(
        """
        insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id,
                                    currency, outcome, reason, capped, metrics, actions, explanation)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        """,
        [
            (run_id, d.evaluated_at, d.rule, d.entity_id, d.entity_level, d.entity_name, d.account_id, d.currency,
             d.outcome, d.reason, d.capped, d.metrics, [a.model_dump(mode="json") for a in d.actions],
             d.explanation)
            for d in decisions
        ],
    )


async def record_action(
    conn: asyncpg.Connection, run_id: uuid.UUID, decision: Decision, *, index: int, message_id: uuid.UUID
) -> bool:
    """Store one acted action; False if this command id was already recorded (same decision twice)."""
    a = decision.actions[index]
    inserted = await conn.fetchval(
        """
        insert into rule_actions (command_id, run_id, rule, entity_id, entity_level, account_id, kind, budget_field,
                                  budget_minor, previous_budget_minor, currency, resume_at, acted_at, message_id)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        on conflict (command_id) do nothing
        returning true
        """,
        a.command_id, run_id, a.rule, a.entity_id, a.entity_level, a.account_id, a.kind, a.budget_field, a.budget,
        a.previous_budget, a.currency, a.resume_at, decision.evaluated_at, message_id,
    )
    return bool(inserted)


async def record_notification(
    conn: asyncpg.Connection, message_id: uuid.UUID, channels: Sequence[str], email_to: Sequence[str]
) -> None:
    await conn.execute(
        "insert into rule_notifications (message_id, channels, email_to) values ($1, $2, $3) "
        "on conflict do nothing",
        message_id, list(channels), list(email_to),
    )


async def notification_route(conn: asyncpg.Connection, message_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select channels, email_to from rule_notifications where message_id = $1", message_id
    )


async def delivered_channels(conn: asyncpg.Connection, message_id: uuid.UUID) -> set[str]:
    rows = await conn.fetch("select channel from notification_deliveries where message_id = $1", message_id)
    return {r["channel"] for r in rows}


async def mark_delivered(conn: asyncpg.Connection, message_id: uuid.UUID, channel: str) -> None:
    await conn.execute(
        "insert into notification_deliveries (message_id, channel) values ($1, $2) on conflict do nothing",
        message_id, channel,
    )


async def record_crm_outcome(
    conn: asyncpg.Connection, *, lead_id: str, event_name: str, event_time: datetime, value: float | None,
    currency: str | None, message_id: uuid.UUID,
) -> bool:
    """One outcome per lead and event name (case-insensitive); the first one received is kept."""
    inserted = await conn.fetchval(
        """
        insert into rule_crm_outcomes (lead_id, event_name, event_time, value, currency, message_id)
        values ($1, $2, $3, $4, $5, $6)
        on conflict (lead_id, lower(event_name)) do nothing
        returning true
        """,
        lead_id, event_name, event_time, Decimal(str(value)) if value is not None else None, currency, message_id,
    )
    return bool(inserted)


async def action_for_command(conn: asyncpg.Connection, command_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select rule, entity_id, account_id, kind from rule_actions where command_id = $1 for update", command_id
    )


async def record_result(
    conn: asyncpg.Connection, command_id: uuid.UUID, status: str, detail: str, at: datetime
) -> None:
    await conn.execute(
        "update rule_actions set result_status = $2, result_detail = $3, result_at = $4 where command_id = $1",
        command_id, status, detail[:2000], at,
    )


async def update_breaker(
    conn: asyncpg.Connection, rule: str, *, ok: bool, detail: str, threshold: int
) -> tuple[int, bool]:
    """Count a command result of ``rule``; returns (consecutive failures, whether the breaker just opened)."""
    row = await conn.fetchrow(
        """
        insert into rule_breakers as b (rule, failures, last_detail, opened_at, updated_at)
        values ($1, case when $2 then 0 else 1 end, $3, case when not $2 and $4 <= 1 then now() end, now())
        on conflict (rule) do update set
            failures = case when $2 then 0 else b.failures + 1 end,
            last_detail = case when $2 then b.last_detail else excluded.last_detail end,
            opened_at = case when $2 then null
                             when b.failures + 1 >= $4 then coalesce(b.opened_at, now())
                             else b.opened_at end,
            updated_at = now()
        returning failures, (opened_at is not null and failures = $4) as just_opened
        """,
        rule, ok, detail[:2000], threshold,
    )
    assert row is not None
    return row["failures"], bool(row["just_opened"])


async def reset_breaker(conn: asyncpg.Connection, rule: str) -> bool:
    status = await conn.execute(
        "update rule_breakers set failures = 0, opened_at = null, updated_at = now() where rule = $1", rule
    )
    return status.endswith(" 1")


async def breakers(conn: asyncpg.Connection) -> Mapping[str, asyncpg.Record]:
    return {r["rule"]: r for r in await conn.fetch("select * from rule_breakers order by rule")}
