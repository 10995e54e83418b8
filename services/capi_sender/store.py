"""All SQL of the capi_sender: its send log (`capi_events`). The stored leads it reads are lead_fetcher's: read
with `shared.leads`, never from the table."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from contracts.messages import ConversionRequestedMessage, ConversionSentMessage
from services.capi_sender.events import PreparedEvent, RequestBatch, conversions_sent
from services.capi_sender.logic import (
    CLAIM_STALE_SECONDS,
    DEDUPE_WINDOW_SECONDS,
    Pending,
    meta_error_fields,
    user_data_hashes,
)
from shared.graph.errors import GraphError
from shared.outbox import enqueue

logger = logging.getLogger(__name__)


async def claim_events(
    conn: asyncpg.Connection, claim_id: uuid.UUID, pixel_id: str, test_event_code: str | None, items: Sequence[Pending]
) -> tuple[set[str], dict[str, str]]:
    """Claim the dedupe keys of a batch before sending it.

    Returns the keys this batch may send, and for the others their current status (`sent` = sent within the
    dedupe window; `sending` = another batch has it in flight).
    """
    claimed = await conn.fetch(
        """
        insert into capi_events as e (dedupe_key, pixel_id, event_name, event_id, event_time, lead_id, status,
                                      batch_id, user_data_hashes, identifiers, dropped_fields, test_event_code)
        select u.k, $2, u.n, u.i, to_timestamp(u.t), u.l, 'sending', $1, u.h,
               string_to_array(u.ids, ','), string_to_array(u.d, ','), $3
        from unnest($4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::jsonb[], $10::text[],
                    $11::text[]) as u(k, n, i, t, l, h, ids, d)
        on conflict (dedupe_key) do update
            set status = 'sending', batch_id = excluded.batch_id, claimed_at = now(), sent_at = null,
                event_time = excluded.event_time, lead_id = excluded.lead_id,
                user_data_hashes = excluded.user_data_hashes, identifiers = excluded.identifiers,
                dropped_fields = excluded.dropped_fields, test_event_code = excluded.test_event_code,
                events_received = null, fbtrace_id = null, error = null
            where e.status in ('rejected', 'failed')
               or (e.status = 'sending' and e.claimed_at < now() - make_interval(secs => $12))
               or (e.status = 'sent' and e.sent_at < now() - make_interval(secs => $13))
        returning dedupe_key
        """,
        claim_id,
        pixel_id,
        test_event_code,
        [p.event.dedupe_key for p in items],
        [p.event.event_name for p in items],
        [p.event.event_id for p in items],
        [p.event.event_time for p in items],
        [p.lead_id for p in items],
        [user_data_hashes(p.event) for p in items],
        [",".join(sorted(p.event.server_event["user_data"])) for p in items],
        [",".join(p.event.dropped) for p in items],
        float(CLAIM_STALE_SECONDS),
        float(DEDUPE_WINDOW_SECONDS),
    )
    mine = {row["dedupe_key"] for row in claimed}
    others = [p.event.dedupe_key for p in items if p.event.dedupe_key not in mine]
    seen: dict[str, str] = {}
    if others:
        rows = await conn.fetch(
            "select dedupe_key, status from capi_events where dedupe_key = any($1::text[])", others
        )
        seen = {row["dedupe_key"]: row["status"] for row in rows}
        for key in others:
            seen.setdefault(key, "sending")  # vanished in between: treat as busy, the retry sorts it out
    return mine, seen


async def record_sent(
    conn: asyncpg.Connection,
    claim_id: uuid.UUID,
    part: RequestBatch,
    part_id: uuid.UUID,
    response: Mapping[str, Any],
    messages: Mapping[str, ConversionRequestedMessage],
) -> None:
    """Mark a part Meta accepted as sent and put its `ConversionSent` in the outbox (one transaction)."""
    received = response.get("events_received")
    trace = response.get("fbtrace_id")
    await conn.execute(
        "update capi_events set status = 'sent', sent_at = now(), batch_id = $2, events_received = $3, "
        "fbtrace_id = $4 where dedupe_key = any($1::text[]) and batch_id = $5",
        [event.dedupe_key for event in part.events],
        part_id,
        int(received) if received is not None else None,
        str(trace) if trace else None,
        claim_id,
    )
    await enqueue(conn, ConversionSentMessage.new(conversions_sent(part, response, messages)))


async def record_rejected(
    conn: asyncpg.Connection, claim_id: uuid.UUID, event: PreparedEvent, error: GraphError
) -> None:
    await conn.execute(
        "update capi_events set status = 'rejected', error = $2 where dedupe_key = $1 and batch_id = $3",
        event.dedupe_key,
        meta_error_fields(error),
        claim_id,
    )


async def record_failed(conn: asyncpg.Connection, claim_id: uuid.UUID, keys: Sequence[str]) -> None:
    """Release keys whose send failed, so the retried message can claim them again at once."""
    await conn.execute(
        "update capi_events set status = 'failed' where dedupe_key = any($1::text[]) and batch_id = $2 "
        "and status = 'sending'",
        list(keys),
        claim_id,
    )


# Rows one pruning statement deletes at most.
PRUNE_CHUNK = 5000

# Sent rows age from `sent_at`; rejected, failed and abandoned claims from `claimed_at`. Both are found through the
# BRIN index on `claimed_at` (a row is sent within minutes of its claim, so `claimed_at` is older than `sent_at`).
_PRUNABLE = (
    "status = 'sent' and claimed_at < now() - make_interval(secs => $1) "
    "and sent_at < now() - make_interval(secs => $1)",
    "status <> 'sent' and claimed_at < now() - make_interval(secs => $1)",
)


async def prune_send_log(
    pool: asyncpg.Pool, *, older_than: float = DEDUPE_WINDOW_SECONDS, chunk: int = PRUNE_CHUNK
) -> int:
    """Delete send-log rows older than the dedupe window, in chunks (no statement holds locks for long).

    A row past the window no longer stops a send (`claim_events` takes its key again), so it only costs space.
    Returns how many rows were deleted.
    """
    deleted = 0
    for condition in _PRUNABLE:
        while True:
            status = await pool.execute(
                f"delete from capi_events where dedupe_key in "  # noqa: S608 - fixed conditions, values are $n
                f"(select dedupe_key from capi_events where {condition} limit $2)",
                float(older_than),
                chunk,
            )
            count = int(status.split()[-1])
            deleted += count
            if count < chunk:
                break
    if deleted:
        logger.info("pruned %s send-log rows older than the dedupe window", deleted)
    return deleted


