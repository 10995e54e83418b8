"""Budget rebalancing end to end (issue 20): the rules engine and the campaign executor as services, RabbitMQ,
PostgreSQL and the Graph sandbox over HTTP. The seeded account's campaign "Leads - Prospecting" has four ad sets
with budgets of their own: Broad (CPL ~ $90) and Advantage+ (no lead on $360 a day) give, Lookalike (~ $14) and
Interests (~ $35) receive; "Leads - Retargeting (CBO)" has a campaign budget.

Checked at Meta (the sandbox): nothing changes while the rule is in shadow mode; once enabled, the campaign's total
of daily budgets is the same to the cent, every step is within 20 %, the decreases were sent before the
increases, and a recipient does not pass the executor's hard limit. The executor is also checked with commands sent
to it directly: a stale starting budget or a move past a hard limit applies nothing, a decrease Meta refuses makes
no increase, an increase Meta throttles is retried and refused (the total left lower), and campaign budgets move
between two CBO campaigns.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from contracts.commands import CampaignCommand
from contracts.messages import CampaignCommandMessage
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.meta_reads import MetaReads
from services.campaign_executor.worker import Worker
from shared.graph import GraphClient
from shared.messaging import RetryLater
from shared.settings import BudgetGuardrailSettings, MetaSettings
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_campaign_executor import results, start_executor  # noqa: F401
from tests.integration.test_executor_rechecks import move_clock
from tests.integration.test_rules_engine import (  # noqa: F401
    MAIN,
    CommandWatch,
    FakeSlack,
    _true,
    clean,
    commands,
    consent,
    decisions_of,
    refresh_sandbox,
    run_of,
    slack,
    start_service,
    trigger,
)

pytestmark = pytest.mark.timeout(120)

CAMPAIGN = "Leads - Prospecting"
RULE = "rebalance-test"
RULE_YAML = f"""
name: {RULE}
scope: {{level: adset, status: [ACTIVE]}}
conditions:
  all:
    - {{metric: spend, window: last_7_days, op: ">", value: 0}}
actions:
  - {{type: rebalance, metric: cpl, target: 50, window: last_7_days, min_events: 3, prior_events: 3}}
guardrails: {{cooldown_hours: 72}}
"""


@pytest.fixture
async def moves_forgotten(db: asyncpg.Pool, sandbox: SandboxHandle) -> AsyncIterator[list[str]]:
    """The sandbox's object ids repeat after a reset: drop this test's rebalance commands before and after, so no
    other test counts their budget changes, first-seen budgets or Meta's budget blocks against the same ids (nor the
    rule's consent and history). Request it
    before the services, so that it runs after they stopped."""
    account = sandbox.state["accounts"][MAIN]
    objects = account["campaigns"] + account["adsets"]

    async def forget() -> None:
        await db.execute("delete from budget_moves where object_id = any($1::text[])", objects)
        await db.execute("delete from campaign_commands where kind = 'rebalance_budgets' and account_id = $1", MAIN)
        await db.execute("delete from first_seen_budgets where key = any($1::text[])", [*objects, MAIN])
        await db.execute("delete from meta_budget_blocks where object_id = any($1::text[])", objects)
        for table in ("rule_consent", "rule_actions", "rule_breakers"):
            await db.execute(f"delete from {table} where rule = $1", RULE)  # noqa: S608

    await forget()
    yield objects
    await forget()


async def budgets(sandbox: SandboxHandle, ids: list[str]) -> dict[str, int]:
    out = {}
    for object_id in ids:
        status, _, body = await sandbox.graph("GET", object_id, fields="daily_budget")
        assert status == 200, body
        out[object_id] = int(body["daily_budget"])
    return out


async def writes(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    return [r for r in (await sandbox.calls())["requests"] if r["method"] != "GET"]


async def campaign_adsets(db: asyncpg.Pool) -> dict[str, str]:
    """name -> id of the ad sets with a budget of their own in the rebalanced campaign."""
    rows = await db.fetch("select a.adset_id, a.name from adsets a join campaigns c using (campaign_id) "
                          "where a.account_id = $1 and c.name = $2 and a.daily_budget_minor is not null",
                          MAIN, CAMPAIGN)
    return {r["name"]: r["adset_id"] for r in rows}


async def test_rebalancing_keeps_the_total_at_meta_within_the_limits_and_waits_for_consent(
    db: asyncpg.Pool, sandbox: SandboxHandle, broker: RabbitBroker, moves_forgotten: list[str],
    clean: None, commands: CommandWatch, start_service: Any, start_executor: Any, tmp_path: Path,  # noqa: F811
    slack: FakeSlack,  # noqa: F811
) -> None:
    await sandbox.set_clock("00:30")  # early: today's spend is small, so no spend floor holds a decrease
    await refresh_sandbox(db, sandbox)
    adsets = await campaign_adsets(db)
    assert set(adsets) == {"Prospecting - Broad", "Prospecting - Lookalike", "Prospecting - Interests",
                           "Prospecting - Advantage+"}
    ids = sorted(adsets.values())
    before = await budgets(sandbox, ids)
    await start_executor()
    lookalike = adsets["Prospecting - Lookalike"]
    # The executor first saw Lookalike at $40: its hard limit is 2x = $80, $5 above its $75 budget.
    await db.execute("insert into first_seen_budgets (key, scope, account_id, currency, daily_minor) "
                     "values ($1, 'object', $2, 'USD', 4000)", lookalike, MAIN)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rebalance.yaml").write_text(RULE_YAML)
    await sandbox.reset_calls()

    # Shadow mode: decided and recorded, nothing sent.
    await start_service(rules_dir, slack_url=slack.url, accounts=[MAIN])
    first = await run_of(db, await trigger(broker, MAIN))
    decided = {d["entity_id"]: d for d in await decisions_of(db, first["run_id"])}
    campaign_id = next(iter(await db.fetch("select campaign_id from campaigns where name = $1 and account_id = $2",
                                           CAMPAIGN, MAIN)))["campaign_id"]
    shadow = decided[campaign_id]
    assert (shadow["outcome"], shadow["shadow"]) == ("would_act", True), shadow["explanation"]
    assert shadow["explanation"].startswith("Would move $")
    cbo = next(d for d in decided.values() if d["reason"] == "no_budget")
    assert "campaign budget (CBO)" in cbo["explanation"]
    assert first["acted"] == 0
    assert [c for c in await commands.take() if c["payload"]["kind"] == "rebalance_budgets"] == []
    assert await writes(sandbox) == []
    assert await budgets(sandbox, ids) == before
    await eventually(lambda: _true(any(t.startswith("[info] Would move $") for t in slack.texts)),
                     what="the shadow decision announced")

    # Enabled: one command, applied by the executor.
    await consent(db, RULE)
    second = await run_of(db, await trigger(broker, MAIN))
    assert second["acted"] == 1
    sent = await eventually(lambda: _rebalances(commands), what="the rebalance command")
    assert len(sent) == 1
    command = sent[0]
    assert sum(m["from_minor"] for m in command["moves"]) == sum(m["to_minor"] for m in command["moves"])
    row = await eventually(lambda: db.fetchrow(
        "select status, result from campaign_commands where command_id = $1 and status not in "
        "('received', 'applying')", uuid.UUID(command["command_id"])), timeout=30, what="the executor's result")
    assert row["status"] == "ok", row["result"]
    after = await budgets(sandbox, ids)
    assert after != before
    assert sum(after.values()) == sum(before.values()), "the campaign's total is kept to the cent at Meta"
    for object_id in ids:
        assert abs(after[object_id] - before[object_id]) <= before[object_id] * 0.2, object_id
    assert after[lookalike] <= 8000, "the executor's hard limit (2x first seen)"
    assert after[adsets["Prospecting - Advantage+"]] < before[adsets["Prospecting - Advantage+"]]
    assert after[lookalike] > before[lookalike]
    # Decreases were sent before increases: the total never exceeded it at any moment.
    order = [w["path"].strip("/").split("/")[-1] for w in await writes(sandbox)]
    order = [i for i in order if i in after and after[i] != before[i]]
    downs = [i for i in order if after[i] < before[i]]
    ups = [i for i in order if after[i] > before[i]]
    assert downs, order
    assert ups, order
    assert max(order.index(i) for i in downs) < min(order.index(i) for i in ups), order
    moves = await db.fetch("select object_id, state from budget_moves where command_id = $1",
                           uuid.UUID(command["command_id"]))
    assert {r["state"] for r in moves} == {"applied"}
    # Announced once the executor's result came back, as what was done.
    await eventually(lambda: _true(any(t.startswith("[warning] Moved $") for t in slack.texts)), timeout=20,
                     what="the rebalance announced")


async def _rebalances(watch: CommandWatch) -> list[dict[str, Any]]:
    return [m["payload"] for m in await watch.take() if m["payload"]["kind"] == "rebalance_budgets"]


# ------------------------------------------------------------------------------------------------ the executor alone


@pytest.fixture
async def worker(db: asyncpg.Pool, sandbox: SandboxHandle, moves_forgotten: list[str]) -> AsyncIterator[Worker]:
    await db.execute("delete from first_seen_budgets where key = any($1::text[])", [*moves_forgotten, MAIN])
    await db.execute("delete from campaign_commands where object_id = any($1::text[])", moves_forgotten)
    meta = MetaSettings(access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret),
                        graph_url=sandbox.url, api_version=sandbox.version, request_timeout_seconds=10,
                        ad_account_id=[MAIN])
    async with aiohttp.ClientSession() as http:
        graph = GraphClient(http, meta, registry=CollectorRegistry())
        context = CommandContext(graph, MetaReads(graph, max_wait=2), BudgetGuardrailSettings(_env_file=None))
        yield Worker(db, context, consumer_name=f"test-rebalance-{uuid.uuid4().hex[:8]}")


def rebalance(moves: list[tuple[str, int, int]]) -> CampaignCommandMessage:
    return CampaignCommandMessage.new(CampaignCommand.model_validate({
        "kind": "rebalance_budgets", "command_id": str(uuid.uuid4()), "requested_by": "test", "account_id": MAIN,
        "level": "adset", "moves": [{"object_id": i, "from_minor": a, "to_minor": b} for i, a, b in moves]}))


async def two_adsets(sandbox: SandboxHandle) -> tuple[str, str, dict[str, int]]:
    by_name = sandbox.state["adsets_by_name"]
    donor, taker = by_name["Prospecting - Broad"], by_name["Prospecting - Lookalike"]
    return donor, taker, await budgets(sandbox, [donor, taker])


async def test_a_budget_changed_since_the_decision_applies_nothing(worker: Worker, sandbox: SandboxHandle) -> None:
    await sandbox.set_clock("00:30")
    donor, taker, start = await two_adsets(sandbox)
    message = rebalance([(donor, start[donor], start[donor] - 1000), (taker, start[taker], start[taker] + 1000)])
    await sandbox.edit_object(donor, daily_budget=start[donor] + 100)  # an operator in Ads Manager
    await sandbox.reset_calls()
    result = await worker.execute(message)
    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "changed_elsewhere"), result.detail
    assert "nothing applied" in result.detail
    assert await writes(sandbox) == []


async def test_a_decrease_meta_refuses_makes_no_increase(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """Meta refuses the decrease (below the account's $1.00 minimum daily budget): the increase is not made and
    the total is left as it was (never higher). Two ad sets of the paused campaign: no spend, no spend floor."""
    by_name = sandbox.state["adsets_by_name"]
    donor, taker = by_name["Blog readers - Audience 2"], by_name["Blog readers - Audience 4"]
    await sandbox.edit_object(donor, daily_budget=110)  # set before the decision (in Ads Manager)
    start = await budgets(sandbox, [donor, taker])
    await sandbox.reset_calls()
    message = rebalance([(donor, 110, 90), (taker, start[taker], start[taker] + 20)])
    result = await worker.execute(message)
    assert result is not None
    assert result.status == "failed", result.detail
    assert "no increase was made" in result.detail
    assert "minimum daily budget" in result.detail
    assert await budgets(sandbox, [donor, taker]) == start
    assert [w["path"].strip("/").split("/")[-1] for w in await writes(sandbox)] == [donor], "the taker untouched"
    states = dict(await db.fetch("select object_id, state from budget_moves where command_id = $1",
                                 message.payload.root.command_id))
    assert states == {donor: "failed", taker: "abandoned"}


async def test_a_move_beyond_a_hard_limit_is_refused_before_anything_changes(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    await sandbox.set_clock("00:30")
    donor, taker, start = await two_adsets(sandbox)
    # The taker's budget when leadwire first saw it: half its budget now, so it is at its 2x hard limit already.
    await db.execute("insert into first_seen_budgets (key, scope, account_id, currency, daily_minor) values "
                     "($1, 'object', $2, 'USD', $3)", taker, MAIN, start[taker] // 2)
    await sandbox.reset_calls()
    result = await worker.execute(rebalance([(donor, start[donor], start[donor] - 500),
                                             (taker, start[taker], start[taker] + 500)]))
    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "hard_max_budget"), result.detail
    assert "nothing applied" in result.detail
    assert await writes(sandbox) == []
    assert await budgets(sandbox, [donor, taker]) == start


async def test_an_increase_meta_throttles_is_retried_and_refused_leaving_the_total_lower(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """The decrease is made; Meta refuses the increase with 613/1487632 (an operator's four edits in Ads Manager used
    up the hour): the command is retried later, finds the decrease done and the increase not, re-checks it, and
    Meta's block (recorded) refuses it: reported, the total left lower, never higher."""
    start_at = (await sandbox.set_clock("2026-11-20T05:30:00+00:00", frozen=True))["epoch"]  # 00:30 in New York
    donor, taker, start = await two_adsets(sandbox)
    for cents in (start[taker] + 100, start[taker], start[taker] + 100, start[taker]):
        await sandbox.edit_object(taker, daily_budget=cents)
    message = rebalance([(donor, start[donor], start[donor] - 1000), (taker, start[taker], start[taker] + 1000)])
    with pytest.raises(RetryLater, match="1487632"):
        await worker.execute(message)
    assert await budgets(sandbox, [donor, taker]) == {donor: start[donor] - 1000, taker: start[taker]}

    await move_clock(sandbox, start_at + 61 * 60)
    result = await worker.execute(message)
    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "budget_changes_per_hour"), result.detail
    assert "left lower, never higher" in result.detail
    assert result.counts["total_after_minor"] == result.counts["total_before_minor"] - 1000
    assert await budgets(sandbox, [donor, taker]) == {donor: start[donor] - 1000, taker: start[taker]}
    states = dict(await db.fetch("select object_id, state from budget_moves where command_id = $1",
                                 message.payload.root.command_id))
    assert states == {donor: "applied", taker: "refused"}


async def test_campaign_budgets_are_rebalanced_between_cbo_campaigns(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """Level campaign: the daily budgets of two campaigns with a campaign budget (CBO), the total kept at Meta."""
    await sandbox.set_clock("00:30")
    with_budget = {c: await budgets_or_none(sandbox, c) for c in sandbox.state["accounts"][MAIN]["campaigns"]}
    (cbo,) = [c for c, budget in with_budget.items() if budget is not None]  # "Leads - Retargeting (CBO)"
    status, _, created = await sandbox.graph(
        "POST", f"{MAIN}/campaigns", name="Leads - Second CBO", objective="OUTCOME_LEADS", status="ACTIVE",
        special_ad_categories='["NONE"]', daily_budget="10000", bid_strategy="LOWEST_COST_WITHOUT_CAP")
    assert status == 200, created
    other = created["id"]
    start = await budgets(sandbox, [cbo, other])
    message = CampaignCommandMessage.new(CampaignCommand.model_validate({
        "kind": "rebalance_budgets", "command_id": str(uuid.uuid4()), "requested_by": "test", "account_id": MAIN,
        "level": "campaign", "moves": [{"object_id": cbo, "from_minor": start[cbo], "to_minor": start[cbo] - 1500},
                                       {"object_id": other, "from_minor": 10_000, "to_minor": 11_500}]}))
    try:
        result = await worker.execute(message)
    finally:  # the sandbox hands this id out again after its reset
        await db.execute("delete from first_seen_budgets where key = $1", other)
    assert result is not None
    assert result.status == "ok", result.detail
    after = await budgets(sandbox, [cbo, other])
    assert after == {cbo: start[cbo] - 1500, other: 11_500}
    assert sum(after.values()) == sum(start.values())


async def budgets_or_none(sandbox: SandboxHandle, object_id: str) -> int | None:
    status, _, body = await sandbox.graph("GET", object_id, fields="daily_budget")
    assert status == 200, body
    return int(body["daily_budget"]) if body.get("daily_budget") else None
