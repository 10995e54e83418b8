"""All SQL of crm_sync: its `crm_deliveries` rows, and the leads it delivers read from lead_fetcher's `leads`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from services.crm_sync.logic import NO_ADAPTER
from services.crm_sync.mapping import StoredLead
from shared.outbox import enqueue

if TYPE_CHECKING:
    import asyncpg

    from contracts.messages import AlertRaisedMessage

_LEAD_COLUMNS = (
    "leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform, fields, raw"
)
_LOAD_LEAD = f"select {_LEAD_COLUMNS} from leads where leadgen_id = $1"  # noqa: S608 - constant columns
_LOAD_LEADS = f"select {_LEAD_COLUMNS} from leads where leadgen_id = any($1::text[])"  # noqa: S608 - constant columns
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


async def load_lead(pool: asyncpg.Pool, leadgen_id: str) -> StoredLead | None:
    row = await pool.fetchrow(_LOAD_LEAD, leadgen_id)
    return StoredLead.from_row(row) if row is not None else None


async def load_leads(conn: asyncpg.Connection, leadgen_ids: Sequence[str]) -> dict[str, StoredLead]:
    return {r["leadgen_id"]: StoredLead.from_row(r) for r in await conn.fetch(_LOAD_LEADS, list(leadgen_ids))}


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


async def enqueue_alert(pool: asyncpg.Pool, alert: AlertRaisedMessage) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, alert)
