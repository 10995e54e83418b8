"""rotate_creative: activate a paused reserve ad of the ad set, then pause the fatigued ad (decisions in
`services/campaign_executor/rotation.py`).

One read of the ad set's ads (`GET <adset>/ads`, fields every Ad has) gives both ads as Meta has them now and
whether they are still in the ad set; the reserve is activated, read again, and the ad paused only if the reserve
is then active and able to deliver.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts.commands import RotateCreativeCommand
from services.campaign_executor import rotation, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import CommandFailed, CommandOutcome, Refusal, refused
from services.campaign_executor.meta_reads import call
from services.campaign_executor.rotation import AD_FIELDS, AdState
from shared.graph.errors import AuthError, GraphError, ThrottledError, TransientError


async def apply_rotation(
    ctx: CommandContext, conn: asyncpg.Connection, command: RotateCreativeCommand, plan: dict[str, Any] | None
) -> CommandOutcome:
    ads = await _ads_of(ctx, command.adset_id)
    ad, reserve = ads.get(command.object_id), ads.get(command.reserve_ad_id)
    account = next((a.account_id for a in (ad, reserve) if a is not None and a.account_id), command.account_id)
    common: dict[str, Any] = {"before": rotation.before_of(ad, reserve, ads), "account_id": account}
    step = rotation.next_step(command, ad, reserve, plan)
    if isinstance(step, Refusal):
        return refused(step, **common)
    assert ad is not None
    assert reserve is not None
    after = {"ad": rotation.TARGET["ad"], "reserve": rotation.TARGET["reserve"]}
    if step.done:
        return CommandOutcome("ok", f"already rotated: ad {ad.describe()} PAUSED, reserve {reserve.describe()} "
                                    "ACTIVE; nothing to do", after=after, **common)
    if command.dry_run:
        return CommandOutcome("dry_run", f"would activate reserve {reserve.describe()}, then pause ad "
                                         f"{ad.describe()}", after=after, **common)
    if step.activate:
        await store.mark_applying(conn, command.command_id, rotation.plan_of(ad, reserve))
        await call(ctx.graph.post(reserve.id, {"status": "ACTIVE"}, max_wait=ctx.max_wait, idempotent=True))
        body = await call(ctx.graph.get(reserve.id, {"fields": AD_FIELDS}, max_wait=ctx.max_wait))
        reserve = AdState.from_graph(body)
        held = rotation.reserve_delivers(reserve, ad)
        if held is not None:
            return refused(held, after={"reserve": reserve.status, "ad": ad.status}, **common)
    await call(ctx.graph.post(ad.id, {"status": "PAUSED"}, max_wait=ctx.max_wait, idempotent=True))
    return CommandOutcome("ok", rotation.done_detail(command, ad, reserve), after=after, **common)


async def _ads_of(ctx: CommandContext, adset_id: str) -> dict[str, AdState]:
    """The ad set's ads (not deleted or archived) by id, as Meta has them now."""
    try:
        return {str(item["id"]): AdState.from_graph(item)
                async for item in ctx.graph.paginate(f"{adset_id}/ads", {"fields": AD_FIELDS, "limit": 100},
                                                     max_wait=ctx.max_wait)}
    except (ThrottledError, AuthError, TransientError):
        raise
    except GraphError as exc:
        raise CommandFailed(exc) from None
