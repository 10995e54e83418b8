"""Creative rotation end to end (issue 20): the insights poller reads the sandbox's ads, the rules engine decides on
each ad's frequency over its 7-day window reach, the campaign executor re-checks and rotates at the sandbox over
HTTP, and the sandbox's delivery follows (the paused ad gets no impressions, the activated reserve does).

Ad set "Prospecting - Interests": ad A fatigued (the rule's target), ad R renamed "[reserve] 1 ..." and paused in
Ads Manager, ad P paused without the tag. Ad set "Prospecting - Broad": ad B fatigued, no reserve.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from contracts.commands import CampaignCommand, RotateCreativeCommand
from contracts.messages import CampaignCommandMessage
from services.rules_engine.rule_files import load_rules
from services.rules_engine.store import load_snapshot
from shared.messaging import publish
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_campaign_executor import results, start_executor  # noqa: F401
from tests.integration.test_rules_engine import (  # noqa: F401
    MAIN,
    CommandWatch,
    clean,
    commands,
    consent,
    decisions_of,
    refresh_sandbox,
    run_of,
    start_service,
    trigger,
    write_rules,
)

pytestmark = pytest.mark.timeout(120)

RULE = "rotate-fatigued-test"
RULE_YAML = """
name: {name}
scope: {{level: ad, status: [ACTIVE], entity_ids: [{targets}]}}
min_data: [{{metric: impressions, window: last_7_days, op: ">", value: 1000}}]
conditions: {{any: [{{metric: frequency, window: last_7_days, op: ">", value: 1.0}}]}}
actions: [rotate_creative, {{type: notify, channels: [log]}}]
guardrails: {{cooldown_hours: 72}}
"""


async def ads_of(sandbox: SandboxHandle, adset_id: str) -> dict[str, dict[str, Any]]:
    status, _, body = await sandbox.graph("GET", f"{adset_id}/ads", fields="id,name,status,effective_status",
                                          limit=100)
    assert status == 200, body
    return {a["id"]: a for a in body["data"]}


async def impressions_today(sandbox: SandboxHandle, ad_id: str) -> int:
    status, _, body = await sandbox.graph("GET", f"{ad_id}/insights", fields="impressions", date_preset="today")
    assert status == 200, body
    return sum(int(row["impressions"]) for row in body["data"])


async def writes(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    return [r for r in (await sandbox.calls())["requests"] if r["method"] != "GET"]


async def test_a_fatigued_ad_is_rotated_for_its_reserve_and_never_leaves_an_ad_set_without_an_active_ad(
    db: asyncpg.Pool, sandbox: SandboxHandle, broker: RabbitBroker, clean: None, commands: CommandWatch,  # noqa: F811
    start_service: Any, start_executor: Any, tmp_path: Path,  # noqa: F811
) -> None:
    await db.execute("delete from rule_consent where rule = $1", RULE)
    by_name = sandbox.state["adsets_by_name"]
    interests, broad = by_name["Prospecting - Interests"], by_name["Prospecting - Broad"]
    a, r, p = sorted(await ads_of(sandbox, interests), key=int)
    b = sorted(await ads_of(sandbox, broad), key=int)[0]
    # In Ads Manager at 08:00: R becomes a reserve (tagged, paused), P is paused; both stop delivering at 09:00.
    await sandbox.set_clock("08:00")
    await sandbox.edit_object(r, name="[reserve] 1 Interests - video B", status="PAUSED")
    await sandbox.edit_object(p, status="PAUSED")
    await sandbox.set_clock("12:30")
    reserve_idle = await impressions_today(sandbox, r)
    await sandbox.set_clock("12:40")
    assert await impressions_today(sandbox, r) == reserve_idle, "a paused ad gets no impressions"
    await refresh_sandbox(db, sandbox)
    reach = dict(await db.fetch("select object_id, reach from insights_window_reach where level = 'ad' "
                                "and window_label = 'last_7_days' and object_id = any($1::text[])", [a, b]))
    assert set(reach) == {a, b}, "the poller stores each ad's deduplicated 7-day reach"

    await start_executor()
    await sandbox.reset_calls()
    rules_dir = write_rules(tmp_path, RULE_YAML.format(name=RULE, targets=f"'{a}', '{b}'"))
    await start_service(rules_dir, accounts=[MAIN])

    # Shadow mode (the rule is not enabled yet): decided and explained, nothing sent, nothing changed at Meta.
    shadow = await run_of(db, await trigger(broker, MAIN))
    decided = {d["entity_id"]: d for d in await decisions_of(db, shadow["run_id"])}
    assert decided[a]["outcome"] == "would_act"
    assert decided[a]["shadow"]
    assert decided[a]["explanation"].startswith(
        "Would rotate ad 'Prospecting - Interests - Ad 1' out for reserve ad '[reserve] 1 Interests - video B' of "
        "the same ad set because frequency over the last 7 days was ")
    today = datetime.now(ZoneInfo("America/New_York")).date()
    impressions = await db.fetchval("select sum(impressions) from insights_daily where ad_id = $1 and date >= $2",
                                    a, today - timedelta(days=6))
    frequency = decided[a]["metrics"]["last_7_days"]["frequency"]
    assert frequency == pytest.approx(int(impressions) / reach[a], abs=1e-3)
    assert (decided[b]["outcome"], decided[b]["reason"]) == ("skipped", "no_reserve")
    assert "no paused reserve creative" in decided[b]["explanation"]
    assert "was not paused: an ad set is never left without an active ad" in decided[b]["explanation"]
    assert await commands.for_objects([a, b]) == []
    assert await writes(sandbox) == []

    # Enabled: one rotation for A; B (no reserve) is not paused.
    await consent(db, RULE)
    acted = await run_of(db, await trigger(broker, MAIN))
    decided = {d["entity_id"]: d for d in await decisions_of(db, acted["run_id"])}
    assert decided[a]["outcome"] == "acted"
    assert decided[b]["reason"] == "no_reserve"
    [sent] = await eventually(lambda: commands.for_objects([a, b]), what="the rotation command")
    assert (sent["kind"], sent["object_id"], sent["reserve_ad_id"], sent["adset_id"]) == (
        "rotate_creative", a, r, interests)
    row = await eventually(lambda: db.fetchrow("select * from campaign_commands where command_id = $1 "
                                               "and status = 'ok'", uuid.UUID(sent["command_id"])),
                           timeout=30, what="the executor's rotation")
    assert row["result"]["detail"].endswith("then ad 'Prospecting - Interests - Ad 1' "
                                                        f"({a}) ACTIVE -> PAUSED")
    after = await ads_of(sandbox, interests)
    assert {i: x["status"] for i, x in after.items()} == {a: "PAUSED", r: "ACTIVE", p: "PAUSED"}
    assert [i for i, x in after.items() if x["effective_status"] == "ACTIVE"] == [r], "exactly one active ad"
    assert {x["status"] for x in (await ads_of(sandbox, broad)).values()} == {"ACTIVE"}, "no reserve: no pause"
    # What reached Meta: the reserve activated before the ad was paused; nothing in the other ad set.
    posted = [w["path"].rsplit("/", 1)[-1] for w in await writes(sandbox)]
    assert posted == [r, a], posted
    # The engine's next run sees the rotation before the poller re-reads the ads: A is PAUSED (out of the rule's
    # scope, not even held by the cooldown) and R ACTIVE (no reserve any more).
    again = await run_of(db, await trigger(broker, MAIN))
    assert a not in {d["entity_id"] for d in await decisions_of(db, again["run_id"])}
    async with db.acquire() as conn:
        snap = await load_snapshot(conn, load_rules(rules_dir), [MAIN], datetime.now(UTC), lookback_cap=30,
                                   qualified_events=[], signed_events=[])
    assert {e.id: e.status for e in snap.entities if e.id in (a, r)} == {a: "PAUSED", r: "ACTIVE"}
    assert await db.fetchval("select status from ads where ad_id = $1", r) == "PAUSED", "not re-read yet"

    # Delivery follows: from the next hour the paused ad gets no impressions and the reserve does.
    await sandbox.set_clock("13:00")
    paused_at, reserve_at = await impressions_today(sandbox, a), await impressions_today(sandbox, r)
    await sandbox.set_clock("16:00")
    assert await impressions_today(sandbox, a) == paused_at
    assert await impressions_today(sandbox, r) > reserve_at

    # A stale rotation (the same decision sent again under a new id) is re-checked at execution and refused.
    stale = RotateCreativeCommand(command_id=uuid.uuid4(), requested_by="test", object_id=a, reserve_ad_id=r,
                                  adset_id=interests, account_id=MAIN)
    await sandbox.reset_calls()
    await publish(broker, CampaignCommandMessage.new(CampaignCommand(stale)))
    refused = await eventually(lambda: db.fetchrow("select status, result from campaign_commands where command_id = $1 "
                                                   "and status = 'refused'", stale.command_id),
                               timeout=30, what="the stale rotation's refusal")
    assert refused is not None
    assert await writes(sandbox) == []
