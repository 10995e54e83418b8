"""upload_audience: normalized, hashed rows to a custom audience's /users or /usersreplace in one session."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from contracts.commands import UploadAudienceCommand
from services.campaign_executor import audiences, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import CommandOutcome, Refusal, refused
from services.campaign_executor.meta_reads import call


async def apply_upload(
    ctx: CommandContext, conn: asyncpg.Connection, command: UploadAudienceCommand
) -> CommandOutcome:
    audience = await call(ctx.graph.get(
        command.audience_id, {"fields": "id,name,subtype,account_id,approximate_count_lower_bound"},
        max_wait=ctx.max_wait))
    prepared = audiences.prepare_rows(command.schema_, command.rows, command.default_country)
    chunks = list(audiences.request_chunks(prepared.rows))
    counts = {"rows": len(command.rows), "rows_sent": len(prepared.rows), "rows_dropped": prepared.rows_dropped,
              "requests": len(chunks), "values_hashed": prepared.values_hashed,
              "values_passed_through": prepared.values_passed_through,
              "values_dropped": prepared.values_dropped}
    await store.record_upload_digest(
        conn, command.command_id, {"rows_digest": prepared.digest, **{k: v for k, v in counts.items() if k != "rows"}}
    )
    edge = "usersreplace" if command.mode == "replace" else "users"
    before = {"approximate_count": audience.get("approximate_count_lower_bound"), "name": audience.get("name")}
    dropped = (f"; {prepared.rows_dropped} of {len(command.rows)} rows left out (no usable identifier)"
               if prepared.rows_dropped else "")
    if not prepared.rows:
        # Nothing identifies anyone: sending would match no one (and a replace would empty the audience).
        return refused(Refusal("no_usable_rows", f"none of the {len(command.rows)} rows has a usable identifier "
                                                 "(email, phone, MADID, external id, or a name with zip, city, "
                                                 "state or year of birth): nothing sent"),
                       counts=counts, before=before)
    if command.dry_run:
        return CommandOutcome("dry_run", f"would send {len(prepared.rows)} rows in {len(chunks)} requests to "
                                         f"/{edge}{dropped}", counts=counts, before=before)
    await store.mark_applying(conn, command.command_id, {"edge": edge})
    # A new session per attempt: a retried replace starts over at batch_seq 1 (docs/meta-api.md §12.2).
    session_id = secrets.randbits(62) or 1
    last: dict[str, Any] = {}
    for seq, chunk in enumerate(chunks, start=1):
        last = await call(ctx.graph.post(
            f"{command.audience_id}/{edge}",
            {
                "payload": {"schema": list(command.schema_), "data": chunk},
                "session": {"session_id": session_id, "batch_seq": seq, "last_batch_flag": seq == len(chunks),
                            "estimated_num_total": len(prepared.rows)},
            },
            max_wait=ctx.max_wait,
        ))
    # Meta's answer counts the whole session: rows received and those it could not use.
    counts["num_received"] = int(last.get("num_received") or 0)
    counts["num_invalid_entries"] = int(last.get("num_invalid_entries") or 0)
    counts["rows_accepted"] = max(0, counts["num_received"] - counts["num_invalid_entries"])
    counts["session_id"] = session_id
    return CommandOutcome(
        "ok",
        f"sent {len(prepared.rows)} rows in {len(chunks)} requests to /{edge} (session {session_id}){dropped}; "
        f"Meta received {counts['num_received']}, {counts['num_invalid_entries']} invalid, "
        f"{counts['rows_accepted']} accepted for matching (the audience's size shows the matches hours later)",
        counts=counts, before=before,
    )
