"""The campaign executor end to end: real RabbitMQ and PostgreSQL, the Graph sandbox over HTTP.

Each test publishes CampaignCommand messages on `campaign.command`, waits for the CommandResult on a private
queue bound to the result routing key, and checks what a user would notice: the object at "Meta" (sandbox
state and call log) and the audit row.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from pydantic import SecretStr

from contracts.commands import CampaignCommand
from contracts.messages import CampaignCommandMessage, CommandResultMessage, RoutingKey
from services.campaign_executor.app import create_app
from services.campaign_executor.handlers import CONSUMER
from services.campaign_executor.settings import ExecutorSettings
from shared.accounts import AccountsFile
from shared.messaging import declare_topology, publish
from shared.service import Service
from shared.settings import BudgetGuardrailSettings, MetaSettings, Settings
from shared.topology import EXCHANGE, H_REASON
from tests.fixtures.infra import AMQP_URL, drain, eventually
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.timeout(60)
RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "contracts"

Results = dict[str, CommandResultMessage]


@pytest.fixture
async def results(amqp: aio_pika.abc.AbstractChannel) -> AsyncIterator[Results]:
    """Every CommandResult published while the test runs, by command_id."""
    seen: Results = {}
    exchange = await amqp.declare_exchange(EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await amqp.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key=RoutingKey.COMMAND_RESULT)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            result = CommandResultMessage.model_validate_json(message.body)
            seen[str(result.payload.command_id)] = result

    await queue.consume(on_message)
    return seen


def executor_settings(
    settings: Settings, sandbox: SandboxHandle, budget: BudgetGuardrailSettings | None = None,
    accounts: AccountsFile | None = None, **guards: Any,
) -> Settings:
    meta = MetaSettings(
        access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret), graph_url=sandbox.url,
        api_version=sandbox.version, request_timeout_seconds=10, ad_account_id=[sandbox.account_id],
        accounts_file=accounts,
    )
    return settings.replace(meta, ExecutorSettings(**guards), budget or BudgetGuardrailSettings(_env_file=None))


@pytest.fixture
async def start_executor(
    settings: Settings, sandbox: SandboxHandle, amqp: aio_pika.abc.AbstractChannel, db: asyncpg.Pool
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Service] = []

    async def start(budget: BudgetGuardrailSettings | None = None, accounts: AccountsFile | None = None,
                    **guards: Any) -> Service:
        # The executor's queue is shared by every test: commands left over by an earlier test must not act on
        # this test's freshly reset sandbox. (Declared first: in a fresh vhost this may be the first test to run.)
        await declare_topology(AMQP_URL, [CONSUMER])
        queue = await amqp.get_queue(CONSUMER.queue_name, ensure=False)
        await queue.purge()
        # The sandbox hands out the same object ids after every reset; its audit history goes with the reset.
        objects = [o for account in sandbox.state["accounts"].values()
                   for o in account["campaigns"] + account["adsets"] + account["ads"]]
        await db.execute("delete from campaign_commands where object_id = any($1::text[])", objects)
        await db.execute("delete from first_seen_budgets where key = any($1::text[])",
                         objects + list(sandbox.state["accounts"]))
        await db.execute("delete from meta_budget_blocks where object_id = any($1::text[])", objects)
        service = create_app(executor_settings(settings, sandbox, budget, accounts, **guards))
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


def command(kind: str, **fields: Any) -> CampaignCommandMessage:
    body = {"kind": kind, "command_id": str(uuid.uuid4()), "requested_by": "test", "reason": "integration test",
            **fields}
    return CampaignCommandMessage.new(CampaignCommand.model_validate(body))


async def send(broker: RabbitBroker, message: CampaignCommandMessage) -> str:
    await publish(broker, message)
    return str(message.payload.root.command_id)


async def result_of(results: Results, command_id: str, timeout: float = 15) -> Any:
    async def probe() -> Any:
        return results.get(command_id)

    return (await eventually(probe, timeout=timeout, what=f"CommandResult of {command_id}")).payload


async def node(sandbox: SandboxHandle, object_id: str, fields: str = "status,daily_budget") -> dict[str, Any]:
    status, _, body = await sandbox.graph("GET", object_id, fields=fields)
    assert status == 200, body
    return body


def writes(calls: dict[str, Any], object_id: str | None = None) -> list[dict[str, Any]]:
    return [r for r in calls["requests"] if r["method"] != "GET" and (object_id is None or object_id in r["path"])]


async def audit(db: asyncpg.Pool, command_id: str) -> asyncpg.Record:
    return await db.fetchrow("select * from campaign_commands where command_id = $1", uuid.UUID(command_id))


# -------------------------------------------------------------------------------------------------------------------


async def test_pause_and_unpause_an_ad_set(start_executor, sandbox, broker, results, db) -> None:
    await start_executor()
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]

    paused = await result_of(results, await send(broker, command("pause", object_id=adset, level="adset")))
    assert paused.status == "ok", paused.detail
    assert (await node(sandbox, adset))["status"] == "PAUSED"
    assert paused.before["status"] == "ACTIVE"
    assert paused.after == {"status": "PAUSED"}
    assert paused.currency == "USD"

    cid = await send(broker, command("unpause", object_id=adset, level="adset", account_id=sandbox.account_id))
    unpaused = await result_of(results, cid)
    assert unpaused.status == "ok", unpaused.detail
    assert (await node(sandbox, adset))["status"] == "ACTIVE"
    row = await audit(db, cid)
    assert (row["status"], row["kind"], row["object_id"], row["requested_by"]) == ("ok", "unpause", adset, "test")
    assert row["finished_at"] is not None


async def test_dry_run_records_the_plan_and_writes_nothing(start_executor, sandbox, broker, results, db) -> None:
    await start_executor()
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    before = int((await node(sandbox, adset))["daily_budget"])
    await sandbox.reset_calls()

    cid = await send(broker, command("change_budget", object_id=adset, level="adset", percent=10, dry_run=True))
    result = await result_of(results, cid)
    pause_cid = await send(broker, command("pause", object_id=adset, level="adset", dry_run=True))
    pause = await result_of(results, pause_cid)

    assert (result.status, pause.status) == ("dry_run", "dry_run")
    assert result.after == {"daily_budget": round(before * 1.1)}
    assert writes(await sandbox.calls()) == [], "a dry run must not write to Meta"
    assert int((await node(sandbox, adset))["daily_budget"]) == before
    assert (await node(sandbox, adset))["status"] == "ACTIVE"
    assert (await audit(db, cid))["status"] == "dry_run"


async def test_big_budget_jump_is_refused_unless_forced(start_executor, sandbox, broker, results, db) -> None:
    await start_executor()
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    before = int((await node(sandbox, adset))["daily_budget"])

    cid = await send(broker, command("change_budget", object_id=adset, level="adset", percent=50))
    refused = await result_of(results, cid)
    assert refused.status == "refused"
    assert refused.guardrail == "budget_step"
    assert "50.0%" in refused.detail
    assert int((await node(sandbox, adset))["daily_budget"]) == before
    row = await audit(db, cid)
    assert row["status"] == "refused"
    assert row["result"]["guardrail"] == "budget_step"

    forced = await result_of(results, await send(
        broker, command("change_budget", object_id=adset, level="adset", percent=50, force=True)))
    assert forced.status == "ok", forced.detail
    assert forced.forced
    assert forced.detail.startswith("FORCED (integration test): ")
    assert int((await node(sandbox, adset))["daily_budget"]) == round(before * 1.5)


async def test_fifth_budget_change_within_an_hour_is_refused(start_executor, sandbox, broker, results) -> None:
    await start_executor(BudgetGuardrailSettings(_env_file=None, max_increases_per_week=10))
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    budget = int((await node(sandbox, adset))["daily_budget"])
    for step in range(4):
        budget += 300
        done = await result_of(results, await send(
            broker, command("set_budget", object_id=adset, level="adset", amount_minor=budget)))
        assert done.status == "ok", f"change {step + 1}: {done.detail}"

    fifth = await result_of(results, await send(
        broker, command("set_budget", object_id=adset, level="adset", amount_minor=budget + 300)))
    assert fifth.status == "refused"
    assert fifth.guardrail == "budget_changes_per_hour"
    assert int((await node(sandbox, adset))["daily_budget"]) == budget


async def test_force_skips_the_soft_guards_never_the_hard_limits(start_executor, sandbox, broker, results, db) -> None:
    """The issue's reproduction: `set_budget 10000000, force` on an ad set at $52.80 is refused, nothing written."""
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    await sandbox.set_clock("00:30", frozen=True)  # little spent today: the spend floor stays out of the way
    status, _, _ = await sandbox.graph("POST", adset, daily_budget=5280)  # what leadwire will first see
    assert status == 200
    await start_executor()
    await sandbox.reset_calls()

    def set_to(amount: int, **fields: Any) -> CampaignCommandMessage:
        return command("set_budget", object_id=adset, level="adset", amount_minor=amount, **fields)

    cid = await send(broker, set_to(10_000_000, force=True))
    runaway = await result_of(results, cid)
    assert (runaway.status, runaway.guardrail) == ("refused", "hard_max_budget")
    assert runaway.detail == "$100,000.00 is above this ad set's limit of $105.60 (2× the $52.80 leadwire first saw)"
    assert int((await node(sandbox, adset))["daily_budget"]) == 5280
    assert writes(await sandbox.calls()) == [], "a refused command writes nothing to Meta"
    assert (await audit(db, cid))["force"] is True

    raised = await result_of(results, await send(
        broker, command("change_budget", object_id=adset, level="adset", percent=20)))
    assert (raised.status, raised.forced) == ("ok", False), raised.detail
    assert int((await node(sandbox, adset))["daily_budget"]) == 6336

    step = await result_of(results, await send(
        broker, command("change_budget", object_id=adset, level="adset", percent=50)))
    assert (step.status, step.guardrail) == ("refused", "budget_step")
    forced = await result_of(results, await send(
        broker, command("change_budget", object_id=adset, level="adset", percent=50, force=True,
                        reason="partner approved a push before the holiday")))
    assert (forced.status, forced.forced) == ("ok", True), forced.detail
    assert forced.detail == "FORCED (partner approved a push before the holiday): daily_budget $63.36 -> $95.04"
    assert int((await node(sandbox, adset))["daily_budget"]) == 9504

    over = await result_of(results, await send(broker, set_to(10_561, force=True)))
    assert (over.status, over.guardrail) == ("refused", "hard_max_budget")
    third = await result_of(results, await send(broker, set_to(10_000, force=True)))
    assert third.status == "ok", third.detail
    # (Meta counts the seeding edit above too: 4 changes this hour, its limit; the 4th increase is refused first.)
    fourth = await result_of(results, await send(broker, set_to(10_400, force=True)))
    assert (fourth.status, fourth.guardrail) == ("refused", "budget_increases_per_week")
    assert "3 budget increases on this ad set in the last 7 days" in fourth.detail
    assert int((await node(sandbox, adset))["daily_budget"]) == 10_000


async def test_the_account_ceiling_is_on_by_default(start_executor, sandbox, broker, results, db) -> None:
    await sandbox.set_clock("00:30", frozen=True)  # little spent today: the spend floor stays out of the way
    await start_executor()
    lookalike = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    burner = sandbox.state["adsets_by_name"]["Prospecting - Advantage+"]
    first = await result_of(results, await send(
        broker, command("change_budget", object_id=lookalike, level="adset", percent=10)))
    assert first.status == "ok", first.detail
    seen = await db.fetchval("select daily_minor from first_seen_budgets where key = $1", sandbox.account_id)
    assert seen > 0, "the account's active daily total was recorded when first seen"

    # Someone doubles the account in Ads Manager; leadwire's next raise would take it past 2x what it first saw.
    burner_budget = int((await node(sandbox, burner))["daily_budget"])
    status, _, _ = await sandbox.graph("POST", burner, daily_budget=burner_budget + seen)
    assert status == 200
    before = int((await node(sandbox, lookalike))["daily_budget"])
    ceiling = await result_of(results, await send(
        broker, command("change_budget", object_id=lookalike, level="adset", percent=10, force=True)))
    assert (ceiling.status, ceiling.guardrail) == ("refused", "daily_ceiling")
    assert f"ceiling of ${seen * 2 / 100:,.2f} (2× the ${seen / 100:,.2f} leadwire first saw" in ceiling.detail
    assert int((await node(sandbox, lookalike))["daily_budget"]) == before

    lowered = await result_of(results, await send(
        broker, command("change_budget", object_id=lookalike, level="adset", percent=-5)))
    assert lowered.status == "ok", "lowering is never held back by the ceiling"


async def test_a_forced_unpause_cannot_cross_the_account_ceiling(start_executor, sandbox, broker, results) -> None:
    burner = sandbox.state["adsets_by_name"]["Prospecting - Advantage+"]
    status, _, _ = await sandbox.graph("POST", burner, status="PAUSED")
    assert status == 200
    active = 0
    for edge in ("campaigns", "adsets"):
        status, _, listed = await sandbox.graph("GET", f"{sandbox.account_id}/{edge}", limit=500,
                                                fields="daily_budget,effective_status")
        assert status == 200
        active += sum(int(x.get("daily_budget") or 0) for x in listed["data"] if x["effective_status"] == "ACTIVE")
    burner_budget = int((await node(sandbox, burner))["daily_budget"])
    await start_executor(BudgetGuardrailSettings(_env_file=None, daily_ceiling=(active + burner_budget - 1) / 100))

    unpause = await result_of(results, await send(
        broker, command("unpause", object_id=burner, level="adset", force=True)))
    assert (unpause.status, unpause.guardrail) == ("refused", "daily_ceiling"), unpause.detail
    assert "(BUDGET_DAILY_CEILING)" in unpause.detail
    assert (await node(sandbox, burner))["status"] == "PAUSED"


async def test_lowering_below_spend_floor_and_deleted_objects_are_refused(
    start_executor, sandbox, broker, results
) -> None:
    await start_executor()
    # Meta refuses a daily budget below 110% of what the ad set already spent today, and today's spend grows
    # through the day: so the same lowering is fine just after midnight and refused in the evening. The sandbox's
    # clock is pinned for each half, so the test means the same at any hour it runs.
    burner = sandbox.state["adsets_by_name"]["Prospecting - Advantage+"]
    current = int((await node(sandbox, burner))["daily_budget"])
    lowered = current - current // 10  # -10%: inside the 20% step limit

    async def spent_today() -> int:
        status, _, insights = await sandbox.graph("GET", f"{burner}/insights", fields="spend", date_preset="today")
        assert status == 200
        return round(float(insights["data"][0]["spend"]) * 100) if insights["data"] else 0

    await sandbox.set_clock("20:00", frozen=True)
    assert (await spent_today()) * 1.1 > lowered, "the seeded burner has spent most of its budget by 20:00"
    refused = await result_of(results, await send(
        broker, command("set_budget", object_id=burner, level="adset", amount_minor=lowered,
                        expected_current_minor=current)))
    assert (refused.status, refused.guardrail) == ("refused", "spend_floor")
    assert int((await node(sandbox, burner))["daily_budget"]) == current

    await sandbox.set_clock("00:30", frozen=True)
    assert (await spent_today()) * 1.1 < lowered
    applied = await result_of(results, await send(
        broker, command("set_budget", object_id=burner, level="adset", amount_minor=lowered,
                        expected_current_minor=current)))
    assert applied.status == "ok", applied.detail
    assert int((await node(sandbox, burner))["daily_budget"]) == lowered
    current = lowered

    stale = await result_of(results, await send(
        broker, command("set_budget", object_id=burner, level="adset", amount_minor=current + 100,
                        expected_current_minor=current - 1)))
    assert stale.guardrail == "stale_decision"

    ad = sandbox.state["accounts"][sandbox.account_id]["ads"][0]
    deleted = await result_of(results, await send(broker, command("delete", object_id=ad, level="ad")))
    assert deleted.status == "ok"
    again = await result_of(results, await send(broker, command("unpause", object_id=ad, level="ad")))
    assert (again.status, again.guardrail) == ("refused", "object_status")


async def test_create_campaign_builds_all_four_objects_paused(start_executor, sandbox, broker, results) -> None:
    await start_executor()
    cid = await send(broker, create_command(sandbox))
    created = await result_of(results, cid)
    assert created.status == "ok", created.detail
    assert set(created.created_ids) == {"campaign", "adset", "creative", "ad"}
    for name in ("campaign", "adset", "ad"):
        assert (await node(sandbox, created.created_ids[name], "status"))["status"] == "PAUSED"
    ad = await node(sandbox, created.created_ids["ad"], "adset,creative,campaign")
    assert ad["adset"]["id"] == created.created_ids["adset"]
    assert ad["creative"]["id"] == created.created_ids["creative"]
    creates = [r for r in (await sandbox.calls())["requests"] if r["method"] == "POST"]
    assert len(creates) == 4
    assert all(r["batch"] for r in creates), "the four creates travel in one batch"


async def test_create_campaign_failing_at_the_ad_step_leaves_nothing_active(
    start_executor, sandbox, broker, results
) -> None:
    await start_executor()
    await sandbox.faults(error_rate=1.0, path_regex=r"/ads$", error_status=400, error={
        "message": "(#100) Invalid parameter", "code": 100, "error_subcode": 1487390, "is_transient": False,
        "type": "OAuthException", "error_user_msg": "The creative is not valid for this ad set.",
    })
    created = await result_of(results, await send(broker, create_command(sandbox, status="ACTIVE")))

    assert created.status == "failed"
    assert created.meta_error is not None
    assert created.meta_error.code == 100
    assert created.meta_error.fbtrace_id
    assert "ad step" in created.detail
    assert set(created.created_ids) == {"campaign", "adset", "creative"}
    assert created.rolled_back == {"creative": "deleted", "adset": "deleted", "campaign": "deleted"}
    for name in ("campaign", "adset"):
        state = await node(sandbox, created.created_ids[name], "status,effective_status")
        assert state["status"] == "DELETED"
    status, _, listed = await sandbox.graph("GET", f"{sandbox.account_id}/campaigns", fields="name,effective_status")
    assert status == 200
    assert all(c["name"] != "Injury leads - test" for c in listed["data"]), "nothing of it is live"


async def test_the_same_command_delivered_twice_acts_once(start_executor, sandbox, broker, results, db) -> None:
    await start_executor()
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    before = int((await node(sandbox, adset))["daily_budget"])
    await sandbox.reset_calls()
    message = command("change_budget", object_id=adset, level="adset", percent=10)
    resent = CampaignCommandMessage.new(message.payload)  # same command_id, new message_id (a re-send)
    cid = await send(broker, message)
    await send(broker, message)  # redelivery of the very same message
    await send(broker, resent)

    result = await result_of(results, cid)
    assert result.status == "ok"

    async def all_seen() -> bool:
        row = await audit(db, cid)
        return row is not None and row["attempts"] >= 3

    await eventually(all_seen, what="all three deliveries handled")
    assert int((await node(sandbox, adset))["daily_budget"]) == round(before * 1.1)
    assert len(writes(await sandbox.calls(), adset)) == 1


async def test_an_interrupted_relative_change_is_finished_not_repeated(
    start_executor, sandbox, broker, results, db
) -> None:
    await start_executor()
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    before = int((await node(sandbox, adset))["daily_budget"])
    target = round(before * 1.1)
    message = command("change_budget", object_id=adset, level="adset", percent=10)
    cmd = message.payload.root
    # A first attempt decided +10 %, applied it at Meta, then crashed before recording the outcome.
    status, _, _ = await sandbox.graph("POST", adset, daily_budget=target)
    assert status == 200
    await db.execute(
        "insert into campaign_commands (command_id, message_id, kind, object_id, level, requested_by, payload, "
        "status, plan, applying_at) values ($1, $2, 'change_budget', $3, 'adset', 'test', '{}'::jsonb, "
        "'applying', $4::jsonb, now())",
        cmd.command_id, message.message_id, adset, {"daily_budget": target, "from": before},
    )
    await sandbox.reset_calls()

    result = await result_of(results, await send(broker, message))
    assert result.status == "ok"
    assert "interrupted" in result.detail
    assert int((await node(sandbox, adset))["daily_budget"]) == target, "+10 % applied once, not twice"
    assert writes(await sandbox.calls(), adset) == []


async def test_invalid_commands_are_parked_with_a_clear_reason(start_executor, broker, amqp) -> None:
    await start_executor()
    base = command("pause", object_id="123", level="adset").model_dump(mode="json")
    unknown_kind = {**base, "message_id": str(uuid.uuid4()), "payload": {**base["payload"], "kind": "explode"}}
    negative = {**base, "message_id": str(uuid.uuid4()), "payload": {
        **base["payload"], "kind": "set_budget", "amount_minor": -500}}
    for body in (unknown_kind, negative):
        await broker.publish(body, exchange=EXCHANGE, routing_key=RoutingKey.CAMPAIGN_COMMAND, persist=True,
                             message_id=body["message_id"])
    wanted = {unknown_kind["message_id"]: "kind", negative["message_id"]: "amount_minor"}
    parked: dict[str, str] = {}

    async def probe() -> bool:
        for message in await drain(amqp, CONSUMER.parking_queue_name):
            if message.message_id in wanted:
                parked[message.message_id] = message.headers[H_REASON]
        return len(parked) == len(wanted)

    await eventually(probe, what="both invalid commands parked")
    assert "payload" in parked[unknown_kind["message_id"]]
    assert "explode" in parked[unknown_kind["message_id"]] or "tag" in parked[unknown_kind["message_id"]]
    assert "payload.set_budget.amount_minor" in parked[negative["message_id"]]
    assert "greater than 0" in parked[negative["message_id"]]


async def test_a_retired_upload_audience_is_parked_with_its_reason_and_its_rows_never_logged(
    start_executor, sandbox, broker, amqp, db, caplog
) -> None:
    """An old sender still publishes `upload_audience` (customer e-mails and phones in the message): the executor
    parks it with the reason and what to send instead, acts on nothing, and no log line carries a row's value."""
    caplog.set_level(logging.DEBUG)
    await start_executor()
    body = json.loads((RESOURCES / "retired_campaign_command_upload_audience_v1.json").read_text(encoding="utf-8"))
    body["message_id"] = str(uuid.uuid4())
    body["payload"]["command_id"] = str(uuid.uuid4())
    await sandbox.reset_calls()
    await broker.publish(body, exchange=EXCHANGE, routing_key=RoutingKey.CAMPAIGN_COMMAND, persist=True,
                         message_id=body["message_id"])
    parked: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def probe() -> bool:
        parked.extend(m for m in await drain(amqp, CONSUMER.parking_queue_name) if m.message_id == body["message_id"])
        return bool(parked)

    await eventually(probe, what="the retired command parked")
    reason = str(parked[0].headers[H_REASON])
    assert "command kind 'upload_audience' is retired" in reason
    assert "sync_audience" in reason
    assert json.loads(parked[0].body) == body, "parked as it came: nothing lost (`leadwire parked show --body`)"
    assert await audit(db, body["payload"]["command_id"]) is None, "nothing acted on"
    assert not writes(await sandbox.calls()), "nothing sent to Meta"
    # The AMQP client's own DEBUG lines dump whole frames, bodies included, at any LOG_LEVEL=DEBUG: not ours.
    ours = [r for r in caplog.records if not r.name.startswith(("aiormq", "aio_pika", "pamqp"))]
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in ours).lower()
    assert "parked" in logged
    assert "retired" in logged
    for value in ("mary", "555 987", "smith", "f1904cf1a9d73a55"):
        assert value not in logged, f"a row's value {value!r} reached the log"


def create_command(sandbox: SandboxHandle, status: str = "PAUSED") -> CampaignCommandMessage:
    page = sandbox.state["page_id"]
    return command(
        "create_campaign", account_id=sandbox.account_id, status=status,
        campaign={"name": "Injury leads - test", "objective": "OUTCOME_LEADS", "special_ad_categories": []},
        ad_set={"name": "Texas 25-65", "targeting": {"geo_locations": {"regions": [{"key": "4063"}]},
                                                       "age_min": 25, "age_max": 65},
                "page_id": page, "budget": {"kind": "daily", "amount_minor": 5000}},
        creative={"name": "Were you injured?", "page_id": page, "lead_form_id": sandbox.state["form_ids"][0],
                  "image_url": "https://example.com/crash.jpg", "message": "Injured in a crash? Free case review.",
                  "link": "https://example.com/review", "headline": "No fee unless we win"},
        ad={"name": "Ad A"},
    )


async def test_one_message_id_carrying_two_commands_is_processed_once(
    start_executor, sandbox, broker, results, db, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="services.campaign_executor.worker")
    await start_executor()
    first = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    second = next(a for name, a in sandbox.state["adsets_by_name"].items() if a != first)
    message = command("pause", object_id=first, level="adset")
    # The same envelope id, a different command (a producer reusing ids, a hand-edited replay).
    other = CampaignCommandMessage.new(
        CampaignCommand.model_validate({"kind": "pause", "command_id": str(uuid.uuid4()), "object_id": second,
                                        "level": "adset", "requested_by": "test", "reason": "same message id"}),
        message_id=message.message_id,
    )
    cid = await send(broker, message)
    assert (await result_of(results, cid)).status == "ok"
    other_cid = await send(broker, other)

    async def refused() -> bool:
        return any("not acted on" in r.getMessage() and str(other_cid) in r.getMessage() for r in caplog.records)

    await eventually(refused, what="the second command with the same message id handled")
    assert (await node(sandbox, second))["status"] == "ACTIVE"
    assert await audit(db, other_cid) is None
    assert results.get(other_cid) is None
