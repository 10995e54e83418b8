"""All SQL of crm_sync: its `crm_deliveries` rows. The leads it delivers are lead_fetcher's: read with
`shared.leads` (`load_lead`, `load_leads`), never from the table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from services.crm_sync.logic import NO_ADAPTER

if TYPE_CHECKING:
    import asyncpg

# Creates the missing (lead, adapter) rows and locks the group's rows in one statement: rows that existed come back
# locked unless another worker holds them (`skip locked`: that lead is BUSY); new rows come back from the insert,
# locked by it. A row another worker inserted and has not committed yet makes the insert wait, then conflict: BUSY.
_CLAIM = """
with wanted as (select * from unnest($1::text[], $2::text[]) as u(leadgen_id, adapter)),
     locked as (select leadgen_id, adapter, status from crm_deliveries
                where (leadgen_id, adapter) in (select leadgen_id, adapter from wanted)
                for update skip locked),
     added as (insert into crm_deliveries (leadgen_id, adapter) select leadgen_id, adapter from wanted
               on conflict do nothing returning leadgen_id, adapter, status)
select leadgen_id, adapter, status from locked
union all
select leadgen_id, adapter, status from added
"""
_RECORD = """
update crm_deliveries d
set status = u.status, attempts = d.attempts + 1, last_error = u.last_error, updated_at = now(),
    crm_reference = case when u.status = 'delivered' then u.reference else d.crm_reference end,
    delivered_at = case when u.status = 'delivered' then now() else d.delivered_at end
from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
     as u(leadgen_id, adapter, status, last_error, reference)
where d.leadgen_id = u.leadgen_id and d.adapter = u.adapter
"""

Record = tuple[str, str, str, str | None, str | None]  # leadgen_id, adapter, status, last_error, crm_reference


async def claim(conn: asyncpg.Connection, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Create and lock the (lead, adapter) rows; their status, for the rows no other worker holds."""
    keys = ([p[0] for p in pairs], [p[1] for p in pairs])
    return {(r["leadgen_id"], r["adapter"]): r["status"] for r in await conn.fetch(_CLAIM, *keys)}


async def record(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    """Write the outcomes of one group's requests onto their rows."""
    if records:
        await conn.execute(_RECORD, *(list(column) for column in zip(*records, strict=True)))


async def mark_skipped(pool: asyncpg.Pool, leadgen_id: str) -> None:
    await pool.execute(
        "insert into crm_deliveries (leadgen_id, adapter, status) values ($1, $2, 'skipped') on conflict do nothing",
        leadgen_id, NO_ADAPTER,
    )


async def failed_leads(pool: asyncpg.Pool, *, since: datetime | None = None, adapter: str | None = None) -> list[str]:
    """Leads with a delivery that ended `failed` (last changed at or after `since`, for `adapter` if given)."""
    rows = await pool.fetch(
        "select distinct leadgen_id from crm_deliveries where status = 'failed' "
        "and ($1::timestamptz is null or updated_at >= $1) and ($2::text is null or adapter = $2) "
        "order by leadgen_id",
        since, adapter,
    )
    return [r["leadgen_id"] for r in rows]


async def reopen_failed(conn: asyncpg.Connection, leadgen_ids: Sequence[str]) -> None:
    """Set the leads' failed deliveries back to `pending` (they are redriven)."""
    await conn.execute(
        "update crm_deliveries set status = 'pending', updated_at = now() "
        "where leadgen_id = any($1::text[]) and status = 'failed'",
        list(leadgen_ids),
    )


# -- GoHighLevel contacts (migration 0080): recorded as soon as GoHighLevel answers, outside the delivery's transaction


async def ghl_contact(db: asyncpg.Pool | asyncpg.Connection, leadgen_id: str) -> tuple[str, bool] | None:
    """(contact id, note added) recorded for the lead in GoHighLevel, or None."""
    row = await db.fetchrow("select contact_id, note_added from ghl_contacts where leadgen_id = $1", leadgen_id)
    return (row["contact_id"], row["note_added"]) if row is not None else None


async def record_ghl_contact(db: asyncpg.Pool | asyncpg.Connection, leadgen_id: str, location_id: str,
                             contact_id: str) -> None:
    await db.execute(
        "insert into ghl_contacts (leadgen_id, location_id, contact_id) values ($1, $2, $3) "
        "on conflict (leadgen_id) do update set contact_id = excluded.contact_id, location_id = excluded.location_id, "
        "note_added = false, recorded_at = now() where ghl_contacts.contact_id <> excluded.contact_id",
        leadgen_id, location_id, contact_id,
    )


async def mark_ghl_note(db: asyncpg.Pool | asyncpg.Connection, leadgen_id: str) -> None:
    await db.execute("update ghl_contacts set note_added = true where leadgen_id = $1", leadgen_id)
