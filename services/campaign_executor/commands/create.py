"""create_campaign: campaign, ad set, creative and ad in one batch of dependent operations (docs/meta-api.md §3,
§11.4); on failure what was made is deleted (or paused); an interrupted attempt is found, paused and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from contracts.commands import CreateCampaignCommand
from services.campaign_executor import logic, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import CommandFailed, CommandOutcome, refused
from services.campaign_executor.meta_reads import call
from shared.graph import BatchRequest, GraphError
from shared.graph.batch import execute_dependent_batch
from shared.graph.errors import ThrottledError, TransientError, classify_error

logger = logging.getLogger(__name__)


async def apply_create(
    ctx: CommandContext,
    conn: asyncpg.Connection,
    command: CreateCampaignCommand,
    plan: dict[str, Any] | None,
    applying_at: datetime | None,
) -> CommandOutcome:
    account = command.account_id
    currency = await ctx.reads.currency(account)
    common = {"currency": currency, "account_id": account}
    if plan is not None:
        return await _recover(ctx, command, applying_at, common)
    if command.status == "ACTIVE":
        # The account's ceiling is a hard limit: `force` does not pass it.
        total = await ctx.reads.account_daily_total(account)
        first_total = await store.first_seen_daily(conn, key=account, scope="account", account_id=account,
                                                   currency=currency, now_minor=total)
        ceiling, basis = logic.account_ceiling(ctx.limits, currency, first_total, ctx.ceilings.get(account))
        refusal = logic.create_ceiling_refusal(command, total, currency, ceiling, basis)
        if refusal:
            return refused(refusal, **common)
    operations = logic.create_operations(command)
    planned = {name: {k: v for k, v in params.items() if k != "targeting"} for name, _, params in operations}
    if command.dry_run:
        return CommandOutcome("dry_run", f"would create campaign, ad set, creative and ad ({command.status})",
                              after=planned, **common)
    await store.mark_applying(conn, command.command_id, {"create": True})
    created, failure = await _create_batch(ctx, operations)
    if failure is None:
        return CommandOutcome("ok", f"created campaign {created['campaign']} with ad set, creative and ad "
                                    f"({command.status})", created_ids=created, after=planned, **common)
    rolled_back = await _roll_back(ctx, created)
    left = [name for name, fate in rolled_back.items() if fate == "left"]
    if isinstance(failure[1], (TransientError, ThrottledError)) and not left:
        # Nothing of this attempt remains at Meta: the next attempt may create afresh.
        await store.mark_not_applied(conn, command.command_id)
        raise failure[1]
    step, error = failure
    fates = ", ".join(f"{name} {created[name]} {fate}" for name, fate in rolled_back.items())
    detail = f"create failed at the {step} step: {error.message}; {fates or 'nothing was created'}"
    raise CommandFailed(error, detail, created_ids=created, rolled_back=rolled_back, **common)


async def _create_batch(
    ctx: CommandContext, operations: Sequence[tuple[str, str, dict[str, Any]]]
) -> tuple[dict[str, str], tuple[str, GraphError] | None]:
    """Run the four creates as one dependent batch; returns the created ids and the first failure."""
    requests = [BatchRequest("POST", path, params, name=name) for name, path, params in operations]
    results = await execute_dependent_batch(ctx.graph, requests, max_wait=ctx.max_wait)
    created: dict[str, str] = {}
    failure: tuple[str, GraphError] | None = None
    for (name, _path, _params), result in zip(operations, results, strict=True):
        body = result.body
        if result.error is None and isinstance(body, Mapping) and body.get("id"):
            created[name] = str(body["id"])
            continue
        error = result.error or classify_error(body, http_status=result.code)
        if failure is None:
            failure = (name, error)
    return created, failure


async def _roll_back(ctx: CommandContext, created: Mapping[str, str]) -> dict[str, str]:
    """Delete what a failed create left (children first); pause what cannot be deleted."""
    order = [name for name in ("ad", "creative", "adset", "campaign") if name in created]
    if not order:
        return {}
    results = await ctx.graph.batch([BatchRequest.delete(created[name]) for name in order], max_wait=ctx.max_wait)
    fates: dict[str, str] = {}
    for name, result in zip(order, results, strict=True):
        if result.ok:
            fates[name] = "deleted"
            continue
        fates[name] = "left"
        if name != "creative":
            try:
                await ctx.graph.post(created[name], {"status": "PAUSED"}, max_wait=ctx.max_wait, idempotent=True)
                fates[name] = "paused"
            except GraphError:
                logger.exception("could not delete nor pause %s %s after a failed create", name, created[name])
    return fates


async def _recover(
    ctx: CommandContext, command: CreateCampaignCommand, applying_at: datetime | None, common: dict[str, Any]
) -> CommandOutcome:
    """An earlier attempt sent the create batch and did not finish: find what it made, pause it, report.

    Re-creating could duplicate a campaign that is live; pausing what exists and asking a human is safer.
    """
    since = (applying_at or datetime.now(UTC)) - timedelta(minutes=2)
    params = {"fields": "id,name,status,created_time", "limit": 100,
              "filtering": [{"field": "name", "operator": "EQUAL", "value": command.campaign.name}]}
    found: dict[str, str] = {}
    async for item in ctx.graph.paginate(f"{command.account_id}/campaigns", params, max_wait=ctx.max_wait):
        created = _parse_time(item.get("created_time"))
        if item.get("name") == command.campaign.name and (created is None or created >= since):
            found[f"campaign:{item['id']}"] = str(item["id"])
    fates: dict[str, str] = {}
    for key, object_id in found.items():
        await call(ctx.graph.post(object_id, {"status": "PAUSED"}, max_wait=ctx.max_wait, idempotent=True))
        fates[key] = "paused"
    detail = ("an earlier attempt was interrupted after sending the create; "
              + (f"found and paused {', '.join(found.values())} for review" if found
                 else "nothing was found at Meta; re-send the command with a new command_id"))
    return CommandOutcome("failed", detail, created_ids=found, rolled_back=fates, **common)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
