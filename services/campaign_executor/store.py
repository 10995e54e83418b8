"""The audit table `campaign_commands`: one row per command_id, written before and after touching Meta."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from contracts.commands import CommandResult
from contracts.messages import CommandResultMessage
from shared.messaging import RetryLater, claim
from shared.outbox import enqueue

FINAL = frozenset({"ok", "refused", "failed", "dry_run"})
LOCK_WAIT_SECONDS = 10.0


@asynccontextmanager
async def object_lock(conn: asyncpg.Connection, key: str) -> AsyncIterator[None]:
    """Serialize work on one Meta object (or one command) across workers and processes.

    A session advisory lock, so it spans the short transactions around the Meta calls. Waits at most
    LOCK_WAIT_SECONDS, then sends the command back to the queue instead of holding a worker.
    """
    try:
        await conn.execute("select pg_advisory_lock(hashtextextended($1, 7))", key, timeout=LOCK_WAIT_SECONDS)
    except TimeoutError:
        raise RetryLater(f"another worker holds {key}", delay=2) from None
    try:
        yield
    finally:
        await conn.execute("select pg_advisory_unlock(hashtextextended($1, 7))", key)


async def message_taken(conn: asyncpg.Connection, message_id: object, command_id: object) -> Any:
    """The command_id another command already recorded under this message id, or None.

    The envelope's message_id is the idempotency key: the same message id carrying a second command (a producer
    that reused it, a replayed message edited by hand) is not a new message.
    """
    return await conn.fetchval(
        "select command_id from campaign_commands where message_id = $1 and command_id <> $2 limit 1",
        message_id, command_id,
    )


async def begin(
    conn: asyncpg.Connection,
    *,
    command_id: object,
    message_id: object,
    kind: str,
    account_id: str | None,
    object_id: str | None,
    level: str | None,
    dry_run: bool,
    force: bool,
    requested_by: str,
    reason: str,
    payload: dict[str, Any],
) -> asyncpg.Record:
    """Record the command (first delivery) and return its row; counts the attempt."""
    async with conn.transaction():
        await conn.execute(
            "insert into campaign_commands (command_id, message_id, kind, account_id, object_id, level, dry_run, "
            "force, requested_by, reason, payload) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb) "
            "on conflict (command_id) do nothing",
            command_id, message_id, kind, account_id, object_id, level, dry_run, force, requested_by, reason,
            payload,
        )
        return await conn.fetchrow(
            "update campaign_commands set attempts = attempts + 1 where command_id = $1 returning *", command_id
        )


async def budget_changes_last_hour(conn: asyncpg.Connection, object_id: str, command_id: object) -> int:
    """Budget changes applied (or being applied) on this object in the last rolling hour, other commands (a
    rebalance's moves included)."""
    return await conn.fetchval(
        "select (select count(*) from campaign_commands where object_id = $1 and kind = any($2::text[]) "
        "and not dry_run and status in ('applying', 'ok') and applying_at > now() - interval '1 hour' "
        "and command_id <> $3) + (select count(*) from budget_moves where object_id = $1 "
        "and state in ('applying', 'applied') and applying_at > now() - interval '1 hour' and command_id <> $3)",
        object_id, ["set_budget", "change_budget"], command_id,
    )


async def first_seen_daily(
    conn: asyncpg.Connection, *, key: str, scope: str, account_id: str | None, currency: str, now_minor: int
) -> int:
    """The daily budget (object) or active daily total (account) leadwire first saw of ``key``.

    Records ``now_minor`` the first time ``key`` is seen; afterwards returns what was recorded then.
    """
    await conn.execute(
        "insert into first_seen_budgets (key, scope, account_id, currency, daily_minor) values ($1, $2, $3, $4, $5) "
        "on conflict (key) do nothing",
        key, scope, account_id, currency, now_minor,
    )
    return int(await conn.fetchval("select daily_minor from first_seen_budgets where key = $1", key))


async def budget_increases_last_week(conn: asyncpg.Connection, object_id: str, command_id: object) -> int:
    """Budget increases applied (or being applied) on this object in the last rolling 7 days, other commands (a
    rebalance's moves included)."""
    return await conn.fetchval(
        "select (select count(*) from campaign_commands where object_id = $1 and kind = any($2::text[]) "
        "and not dry_run and status in ('applying', 'ok') and applying_at > now() - interval '7 days' "
        "and command_id <> $3 "
        "and coalesce((plan->>'daily_budget')::bigint, (plan->>'lifetime_budget')::bigint) > (plan->>'from')::bigint)"
        " + (select count(*) from budget_moves where object_id = $1 and state in ('applying', 'applied') "
        "and applying_at > now() - interval '7 days' and command_id <> $3 and to_minor > from_minor)",
        object_id, ["set_budget", "change_budget"], command_id,
    )


async def record_meta_budget_block(
    conn: asyncpg.Connection, *, object_id: str, account_id: str | None, command_id: object, seconds: float
) -> None:
    """Meta refused a budget change with 613/1487632: budget changes on the object are blocked for ``seconds``
    from now (a refusal during a block known to us does not extend it, as at Meta)."""
    await conn.execute(
        "insert into meta_budget_blocks (object_id, account_id, command_id, blocked_until) "
        "values ($1, $2, $3, now() + make_interval(secs => $4)) "
        "on conflict (object_id) do update set account_id = excluded.account_id, command_id = excluded.command_id, "
        "blocked_at = now(), blocked_until = excluded.blocked_until where meta_budget_blocks.blocked_until <= now()",
        object_id, account_id, command_id, seconds,
    )


async def meta_budget_block(conn: asyncpg.Connection, object_id: str) -> datetime | None:
    """Until when Meta blocks budget changes on the object (613/1487632 seen), or None when no block is on."""
    until: datetime | None = await conn.fetchval(
        "select blocked_until from meta_budget_blocks where object_id = $1 and blocked_until > now()", object_id
    )
    return until


async def plan_moves(
    conn: asyncpg.Connection, command_id: object, account_id: str, level: str, moves: list[tuple[str, int, int]]
) -> None:
    """Record a rebalance's moves (object id, from, to) before any is applied (once: a retry keeps the rows)."""
    await conn.executemany(
        "insert into budget_moves (command_id, object_id, account_id, level, from_minor, to_minor) "
        "values ($1, $2, $3, $4, $5, $6) on conflict (command_id, object_id) do nothing",
        [(command_id, object_id, account_id, level, before, after) for object_id, before, after in moves],
    )


async def mark_move(conn: asyncpg.Connection, command_id: object, object_id: str, state: str, detail: str = "") -> None:
    """A move's new state; `applying` also stamps when it was sent (the change counts from then)."""
    await conn.execute(
        "update budget_moves set state = $3, detail = $4, "
        "applying_at = case when $3 = 'applying' then coalesce(applying_at, now()) else applying_at end "
        "where command_id = $1 and object_id = $2",
        command_id, object_id, state, detail,
    )


async def mark_applying(conn: asyncpg.Connection, command_id: object, plan: dict[str, Any]) -> None:
    """Commit what this attempt is about to do, before doing it."""
    await conn.execute(
        "update campaign_commands set status = 'applying', plan = $2::jsonb, "
        "applying_at = coalesce(applying_at, now()) where command_id = $1",
        command_id, plan,
    )


async def mark_not_applied(conn: asyncpg.Connection, command_id: object) -> None:
    """Nothing of this attempt is left at Meta (rolled back): the next attempt may start afresh."""
    await conn.execute(
        "update campaign_commands set status = 'received', plan = null, applying_at = null "
        "where command_id = $1 and status = 'applying'",
        command_id,
    )


async def finish(
    conn: asyncpg.Connection,
    *,
    consumer_name: str,
    message: Any,
    result: CommandResult,
) -> bool:
    """Record the outcome, claim the message and queue the CommandResult, in one transaction.

    Returns False (and changes nothing) when the command already has an outcome: a concurrent or earlier
    delivery finished it.
    """
    async with conn.transaction():
        updated = await conn.fetchval(
            "update campaign_commands set status = $2, result = $3::jsonb, finished_at = now() "
            "where command_id = $1 and status in ('received', 'applying') returning true",
            result.command_id, result.status, result.model_dump(mode="json"),
        )
        if not updated:
            return False
        await claim(conn, consumer_name, message.message_id)
        await enqueue(conn, CommandResultMessage.new(result, caused_by=message))
    return True


# Audiences kept in sync with the CRM (migration 0095): `audiences`, `audience_members`, read views of leads and
# CRM outcomes (stored_leads, audience_crm_outcomes).

async def recorded_audience(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from audiences where name = $1", name)


async def recorded_audiences(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await conn.fetch("select * from audiences order by name"))


async def record_audience(
    conn: asyncpg.Connection, *, name: str, account_id: str, audience_id: str, subtype: str,
    origin_audience_id: str | None = None, lookalike_spec: dict[str, Any] | None = None, adopted: bool = False,
) -> None:
    await conn.execute(
        "insert into audiences (name, account_id, audience_id, subtype, origin_audience_id, lookalike_spec, adopted) "
        "values ($1, $2, $3, $4, $5, $6::jsonb, $7) on conflict (name) do nothing",
        name, account_id, audience_id, subtype, origin_audience_id, lookalike_spec, adopted,
    )


async def record_sync(conn: asyncpg.Connection, name: str, counts: dict[str, Any]) -> None:
    await conn.execute("update audiences set synced_at = now(), last_counts = $2::jsonb where name = $1",
                       name, counts)


async def audience_candidates(
    conn: asyncpg.Connection, *, days: int | None, events: list[str] | None, page_ids: list[str] | None
) -> list[asyncpg.Record]:
    """Leads in a definition (leadgen_id, fields): created in the last `days`, or with one of the CRM outcomes
    `events` (lower case; recorded in the last `days` when given); from `page_ids` only, when given."""
    if events is None:
        return list(await conn.fetch(
            "select leadgen_id, fields from stored_leads where created_time >= now() - make_interval(days => $1) "
            "and ($2::text[] is null or page_id = any($2::text[]))",
            days, page_ids))
    return list(await conn.fetch(
        "select l.leadgen_id, l.fields from stored_leads l where exists (select 1 from audience_crm_outcomes o "
        "where o.leadgen_id = l.leadgen_id and o.event_name = any($1::text[]) "
        "and ($2::int is null or o.event_time >= now() - make_interval(days => $2::int))) "
        "and ($3::text[] is null or l.page_id = any($3::text[]))",
        events, days, page_ids))


async def audience_members(conn: asyncpg.Connection, audience_id: str) -> dict[str, list[str]]:
    rows = await conn.fetch("select leadgen_id, row_sent from audience_members where audience_id = $1", audience_id)
    return {r["leadgen_id"]: list(r["row_sent"]) for r in rows}


async def add_members(conn: asyncpg.Connection, audience_id: str, members: list[tuple[str, list[str]]]) -> None:
    await conn.executemany(
        "insert into audience_members (audience_id, leadgen_id, row_sent) values ($1, $2, $3) "
        "on conflict (audience_id, leadgen_id) do update set row_sent = excluded.row_sent, added_at = now()",
        [(audience_id, lead, row) for lead, row in members])


async def remove_members(conn: asyncpg.Connection, audience_id: str, leads: list[str]) -> None:
    await conn.execute("delete from audience_members where audience_id = $1 and leadgen_id = any($2::text[])",
                       audience_id, leads)


async def clear_members(conn: asyncpg.Connection, audience_id: str) -> None:
    await conn.execute("delete from audience_members where audience_id = $1", audience_id)


# Lead forms leadwire created (migration 0120): `lead_forms`, read by lead_fetcher through `created_lead_forms`.

async def recorded_lead_form(conn: asyncpg.Connection, page_id: str, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from lead_forms where page_id = $1 and name = $2", page_id, name)


async def recorded_lead_forms(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await conn.fetch("select * from lead_forms order by page_id, created_at"))


async def record_lead_form(
    conn: asyncpg.Connection, *, page_id: str, name: str, form_id: str, digest: str, adopted: bool,
    command_id: object,
) -> None:
    await conn.execute(
        "insert into lead_forms (page_id, name, form_id, digest, adopted, command_id) values ($1, $2, $3, $4, $5, $6) "
        "on conflict (page_id, name) do nothing",
        page_id, name, form_id, digest, adopted, command_id)
