"""sync_audience: one configured audience in line with the CRM (services/campaign_executor/audience_defs.py).

Customer-file audiences: created when missing (and recorded), then the difference between the leads the definition
selects now and the members leadwire last sent is applied in Meta's sessions: new members in one `POST /users`
session, leavers in one `DELETE /users` session (the exact rows sent before), ≤ 10,000 rows per request
(docs/meta-api.md §12.2). An audience leadwire did not create (found by name at Meta) is first replaced as a whole
(`/usersreplace`), since its members are unknown. Rows are read here from PostgreSQL and never travel on the broker.

Lookalikes: created once from their seed's Meta id, and refused while the seed is smaller than Meta's minimum.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import asyncpg

from contracts.commands import SyncAudienceCommand
from services.campaign_executor import audience_defs, audiences, store
from services.campaign_executor.audience_defs import AudienceConfigError, AudienceDefinition
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import CommandFailed, CommandOutcome, Refusal, refused
from services.campaign_executor.meta_reads import call
from shared.graph.errors import AuthError, GraphError, ThrottledError, TransientError
from shared.leads import flatten_answers

FILE_SOURCE = "USER_PROVIDED_ONLY"  # leads gave us their details themselves
SIZE_FIELDS = "id,name,subtype,approximate_count_lower_bound,approximate_count_upper_bound"
# Whether a row can match someone is decided without EXTERN_ID: the lead id alone matches no one at Meta.
_MATCH_SCHEMA = [k for k in audience_defs.SCHEMA if k != "EXTERN_ID"]


async def apply_sync(
    ctx: CommandContext, conn: asyncpg.Connection, command: SyncAudienceCommand
) -> CommandOutcome:
    try:
        definitions = audience_defs.load(ctx.audiences_file)
    except AudienceConfigError as exc:
        return refused(Refusal("audience_config", f"audiences file: {exc}"))
    definition = definitions.get(command.audience)
    if definition is None:
        known = ", ".join(sorted(definitions)) or "none (EXECUTOR_AUDIENCES_FILE)"
        return refused(Refusal("unknown_audience", f"no audience {command.audience} is defined; defined: {known}"))
    if definition.lookalike is not None:
        return await _lookalike(ctx, conn, command, definition)
    return await _customer_file(ctx, conn, command, definition)


def prepare(candidates: Sequence[asyncpg.Record], default_country: str) -> tuple[dict[str, list[str]], int]:
    """The rows to send by lead (normalized, hashed) and how many leads have no usable identifier."""
    rows: dict[str, list[str]] = {}
    dropped = 0
    for record in candidates:
        raw = audience_defs.lead_row(flatten_answers(record["fields"]), record["leadgen_id"])
        prepared = audiences.prepare_row(audience_defs.SCHEMA, raw, default_country)
        if audiences.has_identifier(_MATCH_SCHEMA, prepared[:-1]):
            rows[record["leadgen_id"]] = prepared
        else:
            dropped += 1
    return rows, dropped


async def _find_or_create(
    ctx: CommandContext, conn: asyncpg.Connection, definition: AudienceDefinition, fields: dict[str, Any]
) -> tuple[str, bool]:
    """Meta's id of the definition's audience: recorded, else found by name in the account (a crash between
    creating and recording), else created. Returns (id, adopted: found at Meta, not created by this call)."""
    try:
        async for item in ctx.graph.paginate(f"{definition.account_id}/customaudiences",
                                             {"fields": "id,name,subtype", "limit": 500}, max_wait=ctx.max_wait):
            if item.get("name") == definition.display_name and item.get("subtype") == fields["subtype"]:
                return str(item["id"]), True
    except (ThrottledError, AuthError, TransientError):
        raise
    except GraphError as exc:
        raise CommandFailed(exc) from None
    created = await call(ctx.graph.post(f"{definition.account_id}/customaudiences",
                                        {"name": definition.display_name, **fields}, max_wait=ctx.max_wait))
    return str(created["id"]), False


async def _customer_file(
    ctx: CommandContext, conn: asyncpg.Connection, command: SyncAudienceCommand, definition: AudienceDefinition
) -> CommandOutcome:
    record = await store.recorded_audience(conn, definition.name)
    adopted = False
    created: dict[str, str] = {}
    if record is None:
        if command.dry_run:
            audience_id, adopted = "", False
        else:
            audience_id, adopted = await _find_or_create(ctx, conn, definition, {
                "subtype": "CUSTOM", "customer_file_source": FILE_SOURCE,
                "description": definition.description or f"leadwire: {definition.name}"})
            await store.record_audience(conn, name=definition.name, account_id=definition.account_id,
                                        audience_id=audience_id, subtype="CUSTOM", adopted=adopted)
            if not adopted:
                created["audience"] = audience_id
    else:
        audience_id = record["audience_id"]
        # Found at Meta and never fully synced since (or the replace was interrupted): its members are unknown.
        adopted = record["adopted"] and record["synced_at"] is None
    candidates = await store.audience_candidates(
        conn, days=definition.leads.days if definition.leads else definition.days,
        events=definition.event_names if definition.outcomes else None, page_ids=definition.page_ids)
    wanted, dropped = prepare(candidates, definition.default_country)
    current = await store.audience_members(conn, audience_id) if audience_id else {}
    replace = adopted
    if replace:
        adds = list(wanted.items())
        removes: list[tuple[str, list[str]]] = []
    else:
        adds = [(lead, row) for lead, row in wanted.items() if current.get(lead) != row]
        # A lead whose details changed: its old row leaves (before the new one is added), else Meta keeps both.
        removes = [(lead, row) for lead, row in current.items() if wanted.get(lead) != row]
    changed = sum(1 for lead, _ in adds if lead in current)
    counts: dict[str, int] = {"leads": len(candidates), "rows_sent": len(adds), "rows_removed": len(removes),
                              "rows_changed": changed, "rows_dropped": dropped, "members": len(wanted)}
    edge = "usersreplace" if replace else "users"
    if command.dry_run:
        return CommandOutcome("dry_run", f"would send {len(adds)} rows to /{edge} and remove {len(removes)}; "
                                         f"{dropped} leads have no usable identifier", counts=counts,
                              created_ids=created)
    if replace and not adds:
        # Replacing with nothing would empty an audience someone else filled: leave it as it is.
        return refused(Refusal("no_usable_rows", f"audience {definition.name} ({audience_id}) exists at Meta but "
                                                 "no lead matches its definition yet: not replaced"),
                       counts=counts, created_ids=created)
    await store.mark_applying(conn, command.command_id, {"audience_id": audience_id, "edge": edge})
    if replace:
        await store.clear_members(conn, audience_id)
    removed = await _session(ctx, conn, audience_id, "users", removes, remove=True)
    sent = await _session(ctx, conn, audience_id, edge, adds, remove=False)
    counts.update({f"add_{k}": v for k, v in sent.items()})
    counts.update({f"remove_{k}": v for k, v in removed.items()})
    size = await call(ctx.graph.get(audience_id, {"fields": SIZE_FIELDS}, max_wait=ctx.max_wait))
    for bound in ("approximate_count_lower_bound", "approximate_count_upper_bound"):
        if isinstance(size.get(bound), int) and size[bound] >= 0:
            counts[bound] = size[bound]
    await store.record_sync(conn, definition.name, counts)
    approx = (f"; Meta's approximate size {counts['approximate_count_lower_bound']}"
              f"-{counts.get('approximate_count_upper_bound', counts['approximate_count_lower_bound'])}"
              if "approximate_count_lower_bound" in counts else "")
    return CommandOutcome(
        "ok",
        f"audience {definition.name} ({audience_id}){' created' if created else ''}: sent {len(adds)} rows to "
        f"/{edge}, removed {len(removes)} ({changed} of them changed details), {dropped} leads left out "
        "(no usable identifier), "
        f"{len(wanted)} members{approx}",
        counts=counts, created_ids=created, account_id=definition.account_id,
        after={"audience_id": audience_id, "name": definition.display_name},
    )


async def _session(
    ctx: CommandContext, conn: asyncpg.Connection, audience_id: str, edge: str,
    members: list[tuple[str, list[str]]], *, remove: bool,
) -> dict[str, int]:
    """One Meta session over `members` in ≤ 10,000-row batches; each batch is recorded once Meta took it."""
    if not members:
        return {}
    session_id = secrets.randbits(62) or 1
    batches = list(audiences.request_chunks([row for _, row in members]))
    leads = [lead for lead, _ in members]
    last: dict[str, Any] = {}
    for seq, batch in enumerate(batches, start=1):
        body: dict[str, Any] = {
            "payload": {"schema": list(audience_defs.SCHEMA), "data": batch},
            "session": {"session_id": session_id, "batch_seq": seq, "last_batch_flag": seq == len(batches),
                        "estimated_num_total": len(members)},
        }
        if remove:
            body["method"] = "DELETE"  # Graph's method override: the rows go in the body, not the URL
        last = await call(ctx.graph.post(f"{audience_id}/{edge}", body, max_wait=ctx.max_wait))
        start = (seq - 1) * audiences.MAX_ROWS_PER_REQUEST
        chunk = leads[start:start + len(batch)]
        if remove:
            await store.remove_members(conn, audience_id, chunk)
        else:
            await store.add_members(conn, audience_id, list(zip(chunk, batch, strict=True)))
    return {"requests": len(batches), "num_received": int(last.get("num_received") or 0),
            "num_invalid_entries": int(last.get("num_invalid_entries") or 0)}


async def _lookalike(
    ctx: CommandContext, conn: asyncpg.Connection, command: SyncAudienceCommand, definition: AudienceDefinition
) -> CommandOutcome:
    assert definition.lookalike is not None
    record = await store.recorded_audience(conn, definition.name)
    if record is not None:
        return CommandOutcome("ok", f"lookalike {definition.name} exists ({record['audience_id']}): nothing to do",
                              after={"audience_id": record["audience_id"]}, account_id=definition.account_id)
    seed_name = definition.lookalike.seed
    seed = await store.recorded_audience(conn, seed_name)
    if seed is None:
        return refused(Refusal("seed_missing", f"lookalike {definition.name}: its seed audience {seed_name} has not "
                                               f"been created yet (run `leadwire audiences sync {seed_name}`)"))
    size = await call(ctx.graph.get(seed["audience_id"], {"fields": SIZE_FIELDS}, max_wait=ctx.max_wait))
    lower = size.get("approximate_count_lower_bound")
    seed_size = lower if isinstance(lower, int) and lower >= 0 else 0
    counts = {"seed_size": seed_size}
    if seed_size < audience_defs.MIN_LOOKALIKE_SEED:
        return refused(Refusal(
            "seed_too_small",
            f"lookalike {definition.name} not created: its seed {seed_name} ({seed['audience_id']}) has about "
            f"{seed_size} matched people and Meta needs at least {audience_defs.MIN_LOOKALIKE_SEED} in one country "
            "(matching takes hours after an upload: sync again later)"), counts=counts)
    spec = definition.lookalike.spec()
    if command.dry_run:
        return CommandOutcome("dry_run", f"would create lookalike {definition.name} from {seed_name} with {spec}",
                              counts=counts)
    await store.mark_applying(conn, command.command_id, {"lookalike_spec": spec, "seed": seed["audience_id"]})
    audience_id, adopted = await _find_or_create(ctx, conn, definition, {
        "subtype": "LOOKALIKE", "origin_audience_id": seed["audience_id"], "lookalike_spec": spec,
        **({"description": definition.description} if definition.description else {})})
    await store.record_audience(conn, name=definition.name, account_id=definition.account_id,
                                audience_id=audience_id, subtype="LOOKALIKE",
                                origin_audience_id=seed["audience_id"], lookalike_spec=spec, adopted=adopted)
    return CommandOutcome(
        "ok", f"lookalike {definition.name} ({audience_id}) {'found at Meta and recorded' if adopted else 'created'} "
              f"from {seed_name} (about {seed_size} people), ratio {spec['ratio']:.0%}",
        counts=counts, created_ids={} if adopted else {"audience": audience_id}, account_id=definition.account_id,
        after={"audience_id": audience_id, "lookalike_spec": spec})
