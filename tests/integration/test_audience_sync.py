"""Audiences kept in sync with the CRM, end to end: real RabbitMQ and PostgreSQL, the Graph sandbox over HTTP.

Leads (and CRM outcomes) are written to PostgreSQL as lead_fetcher (and the rules engine) would; `sync_audience`
commands name a definition of the audiences file; the checks are what Meta (the sandbox) ends up with, the
results, and what crossed the broker.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.campaign_executor import cli
from shared.meta.customer_data import sha256_hex
from shared.topology import EXCHANGE
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_campaign_executor import (  # noqa: F401 - fixtures
    command,
    executor_settings,
    result_of,
    results,
    send,
    start_executor,
)

pytestmark = pytest.mark.timeout(90)

PAGE = "700100200300"  # these tests' leads only: other tests share the leads table


def audiences_yaml(account: str) -> str:
    return f"""
audiences:
  past_leads:
    account_id: {account}
    description: Leads of the last 180 days (exclusion)
    page_ids: ["{PAGE}"]
    leads: {{days: 180}}
  signed:
    account_id: {account}
    page_ids: ["{PAGE}"]
    outcomes: [SignedCase]
  qualified:
    account_id: {account}
    page_ids: ["{PAGE}"]
    outcomes: [QualifiedLead]
  signed_lookalike:
    account_id: {account}
    lookalike: {{seed: signed, country: US, ratio: 0.02}}
  qualified_lookalike:
    account_id: {account}
    lookalike: {{seed: qualified, countries: [US, CA], ratio: 0.01}}
"""


@pytest.fixture
async def clean(db: asyncpg.Pool) -> None:
    # The sandbox hands out the same ids after each reset: forget what earlier tests recorded.
    await db.execute("delete from audience_members")
    await db.execute("delete from campaign_commands where kind = 'sync_audience'")
    await db.execute("delete from audiences")
    await db.execute("delete from rule_crm_outcomes where lead_id in (select leadgen_id from leads where page_id = $1)",
                     PAGE)
    await db.execute("delete from leads where page_id = $1", PAGE)


@pytest.fixture
def audiences_file(tmp_path: Path, sandbox: SandboxHandle) -> str:
    path = tmp_path / "audiences.yaml"
    path.write_text(audiences_yaml(sandbox.account_id), encoding="utf-8")
    return str(path)


async def add_lead(db: asyncpg.Pool, fields: dict[str, Any], *, days_ago: float = 1,
                   outcome: str | None = None) -> str:
    lead_id = str(uuid.uuid4().int % 10**15 + 10**15)
    await db.execute(
        "insert into leads (leadgen_id, page_id, created_time, fields, raw, source) "
        "values ($1, $2, $3, $4, '{}', 'webhook')",
        lead_id, PAGE, datetime.now(UTC) - timedelta(days=days_ago), fields)
    if outcome:
        await db.execute("insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) "
                         "values ($1, $2, now(), gen_random_uuid())", lead_id, outcome)
    return lead_id


async def sync(broker: Any, seen: Any, name: str, **extra: Any) -> Any:
    return await result_of(seen, await send(broker, command("sync_audience", audience=name, **extra)),
                           timeout=40)


async def test_audience_is_created_once_then_members_are_added_and_removed(
    start_executor, sandbox, broker, results, db, clean, audiences_file  # noqa: F811
) -> None:
    await start_executor(audiences_file=audiences_file)
    mary = await add_lead(db, {"email": "Mary.Roe@Example.com", "full_name": "Mary Roe"})
    john = await add_lead(db, {"phone_number": "+1 (202) 555-0101", "first_name": "John", "last_name": "Doe",
                               "zip_code": "77001", "city": "Houston", "state": "TX", "country": "US"})
    await add_lead(db, {"first_name": "Nameless"})  # no identifier: left out, counted
    await add_lead(db, {"email": "old@example.com"}, days_ago=200)  # outside the window
    await sandbox.reset_calls()

    first = await sync(broker, results, "past_leads")

    assert first.status == "ok", first.detail
    audience = first.created_ids["audience"]
    assert {k: first.counts[k] for k in ("leads", "rows_sent", "rows_dropped", "rows_removed", "members")} == {
        "leads": 3, "rows_sent": 2, "rows_dropped": 1, "rows_removed": 0, "members": 2}
    assert first.counts["add_num_received"] == 2
    assert first.counts["add_num_invalid_entries"] == 0
    _, _, node = await sandbox.graph("GET", audience, fields="name,subtype,customer_file_source,description")
    assert (node["name"], node["subtype"], node["customer_file_source"]) == (
        "past_leads", "CUSTOM", "USER_PROVIDED_ONLY")
    assert node["description"] == "Leads of the last 180 days (exclusion)"
    calls = (await sandbox.calls())["requests"]
    uploads = [c for c in calls if c["path"] == f"/{audience}/users"]
    assert [c["method"] for c in uploads] == ["POST"]
    assert sum(c["path"] == f"/{sandbox.account_id}/customaudiences" and c["method"] == "POST" for c in calls) == 1
    assert "approximate_count_lower_bound" not in first.counts or first.counts["approximate_count_lower_bound"] == 0
    stored = await db.fetch("select leadgen_id, row_sent from audience_members where audience_id = $1", audience)
    assert {r["leadgen_id"] for r in stored} == {mary, john}
    mary_row = next(r["row_sent"] for r in stored if r["leadgen_id"] == mary)
    assert mary_row[0] == sha256_hex("mary.roe@example.com"), "hashed"
    assert mary_row[-1] == mary, "EXTERN_ID (the lead id) unhashed"
    assert mary_row[2] == sha256_hex("mary")
    assert mary_row[3] == sha256_hex("roe")

    # Nothing changed: nothing is created or sent again.
    await sandbox.reset_calls()
    again = await sync(broker, results, "past_leads")
    assert again.status == "ok"
    assert again.created_ids == {}
    assert (again.counts["rows_sent"], again.counts["rows_removed"]) == (0, 0)
    assert not [k for k in (await sandbox.calls())["by_path"] if not k.startswith("GET")], "only reads"

    # Mary's lead ages out of the window, a new lead arrives: one removed, one added, Meta's size follows.
    await db.execute("update leads set created_time = now() - interval '181 days' where leadgen_id = $1", mary)
    ann = await add_lead(db, {"work_email": "ann@example.org"})
    await sandbox.audiences(count_delay_seconds=0)
    await sandbox.reset_calls()
    third = await sync(broker, results, "past_leads")
    assert third.status == "ok", third.detail
    assert (third.counts["rows_sent"], third.counts["rows_removed"], third.counts["members"]) == (1, 1, 2)
    by_path = (await sandbox.calls())["by_path"]
    assert by_path.get(f"POST /{audience}/users") == 1
    assert by_path.get(f"DELETE /{audience}/users") == 1
    assert third.counts["approximate_count_lower_bound"] == 2, "Meta's size reported once it shows"
    assert "approximate size 2" in third.detail
    assert {r["leadgen_id"] for r in await db.fetch(
        "select leadgen_id from audience_members where audience_id = $1", audience)} == {john, ann}

    # John's phone changes: his old row leaves Meta and the new one goes in; still two members.
    await db.execute("update leads set fields = fields || '{\"phone_number\": \"+1 202 555 0202\"}' "
                     "where leadgen_id = $1", john)
    fourth = await sync(broker, results, "past_leads")
    assert fourth.status == "ok", fourth.detail
    assert (fourth.counts["rows_sent"], fourth.counts["rows_removed"], fourth.counts["rows_changed"]) == (1, 1, 1)
    assert fourth.counts["approximate_count_lower_bound"] == 2
    recorded = await db.fetchrow("select * from audiences where name = 'past_leads'")
    assert recorded["audience_id"] == audience
    assert recorded["synced_at"] is not None
    assert recorded["last_counts"]["rows_changed"] == 1


async def test_an_audience_already_at_meta_is_adopted_and_replaced_not_duplicated(
    start_executor, sandbox, broker, results, db, clean, audiences_file  # noqa: F811
) -> None:
    await start_executor(audiences_file=audiences_file)
    # Created at Meta by an earlier attempt that crashed before recording it, with someone else in it.
    _, _, made = await sandbox.graph("POST", f"{sandbox.account_id}/customaudiences", name="past_leads",
                                     subtype="CUSTOM", customer_file_source="USER_PROVIDED_ONLY")
    await sandbox.graph("POST", f"{made['id']}/users", payload=json.dumps(
        {"schema": ["EMAIL"], "data": [[sha256_hex("stranger@example.com")]]}))
    await sandbox.audiences(count_delay_seconds=0)

    nobody = await sync(broker, results, "past_leads")  # no lead yet: an audience someone filled is not emptied
    assert (nobody.status, nobody.guardrail) == ("refused", "no_usable_rows")
    await add_lead(db, {"email": "kim@example.com"})
    await sandbox.reset_calls()

    result = await sync(broker, results, "past_leads")

    assert result.status == "ok", result.detail
    assert result.created_ids == {}
    assert (await db.fetchval("select audience_id from audiences where name = 'past_leads'")) == made["id"]
    by_path = (await sandbox.calls())["by_path"]
    assert by_path.get(f"POST /{sandbox.account_id}/customaudiences") is None, "not created twice"
    assert by_path.get(f"POST /{made['id']}/usersreplace") == 1
    assert result.counts["approximate_count_lower_bound"] == 1, "the stranger was replaced"


async def test_no_personal_data_crosses_the_broker(
    start_executor, sandbox, broker, results, db, clean, audiences_file, amqp  # noqa: F811
) -> None:
    await start_executor(audiences_file=audiences_file)
    exchange = await amqp.declare_exchange(EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True)
    tap = await amqp.declare_queue(exclusive=True, auto_delete=True)
    await tap.bind(exchange, routing_key="#")
    await add_lead(db, {"email": "secret.person@example.com", "phone_number": "+1 202 555 0199",
                        "full_name": "Secret Person", "city": "Springfield"})
    result = await sync(broker, results, "past_leads")
    assert result.status == "ok"
    assert result.counts["rows_sent"] == 1

    bodies = []
    while (message := await tap.get(fail=False, timeout=2)) is not None:
        await message.ack()
        bodies.append(message.body.decode())
    assert any('"sync_audience"' in b for b in bodies)
    assert any("CommandResult" in b for b in bodies)
    wire = "\n".join(bodies).lower()
    for secret in ("secret.person", "example.com", "5550199", "springfield", "secret person",
                   sha256_hex("secret.person@example.com"), sha256_hex("12025550199")):
        assert secret not in wire, f"{secret!r} crossed the broker"
    audit = await db.fetchrow("select payload, result from campaign_commands where command_id = $1",
                              uuid.UUID(str(result.command_id)))
    assert "example.com" not in json.dumps([audit["payload"], audit["result"]])


async def test_lookalike_is_created_once_and_refused_while_the_seed_is_small(
    start_executor, sandbox, broker, results, db, clean, audiences_file, settings  # noqa: F811
) -> None:
    await start_executor(audiences_file=audiences_file)
    for i in range(120):
        await add_lead(db, {"email": f"signed{i}@example.com"}, outcome="SignedCase")
    for i in range(5):
        await add_lead(db, {"email": f"qualified{i}@example.com"}, outcome="qualifiedlead")
    await sandbox.audiences(count_delay_seconds=0)

    early = await sync(broker, results, "signed_lookalike")
    assert (early.status, early.guardrail) == ("refused", "seed_missing")

    # The seeds, then the lookalikes, through the CLI's path (outbox, relay, results from the audit table).
    cli_settings = executor_settings(settings, sandbox, audiences_file=audiences_file)
    assert await cli.sync(cli_settings, ["signed", "qualified"], wait=60) == 0
    assert await cli.sync(cli_settings, ["signed_lookalike", "qualified_lookalike"], wait=60) == 0
    rows = {r["name"]: r for r in await db.fetch("select * from audiences")}
    assert rows["signed"]["last_counts"]["members"] == 120
    assert rows["qualified"]["last_counts"]["members"] == 5
    assert "qualified_lookalike" not in rows, "a 5-person seed is refused"
    lookalike = rows["signed_lookalike"]["audience_id"]
    _, _, node = await sandbox.graph("GET", lookalike, fields="subtype,origin_audience_id,lookalike_spec")
    assert node["subtype"] == "LOOKALIKE"
    assert node["origin_audience_id"] == rows["signed"]["audience_id"]
    assert node["lookalike_spec"]["ratio"] == 0.02
    assert node["lookalike_spec"]["country"] == "US"

    small = await sync(broker, results, "qualified_lookalike")
    assert (small.status, small.guardrail) == ("refused", "seed_too_small")
    assert "about 5 matched people" in small.detail
    assert "at least 100" in small.detail

    await sandbox.reset_calls()
    once = await sync(broker, results, "signed_lookalike")
    assert once.status == "ok"
    assert "exists" in once.detail
    assert (await sandbox.calls())["by_path"].get(f"POST /{sandbox.account_id}/customaudiences") is None


async def test_unknown_audience_is_refused(start_executor, broker, results, clean, audiences_file) -> None:  # noqa: F811
    await start_executor(audiences_file=audiences_file)
    result = await sync(broker, results, "nope")
    assert (result.status, result.guardrail) == ("refused", "unknown_audience")
    assert "past_leads" in result.detail


async def test_the_executor_syncs_every_audience_on_its_schedule(
    start_executor, sandbox, db, clean, audiences_file  # noqa: F811
) -> None:
    await add_lead(db, {"email": "scheduled@example.com"}, outcome="SignedCase")
    await start_executor(audiences_file=audiences_file, audiences_sync_interval_seconds=3600)

    async def synced() -> set[str]:
        rows = await db.fetch("select name from audiences where synced_at is not null")
        return {r["name"] for r in rows} if len(rows) >= 3 else set()

    names = await eventually(synced, timeout=40, what="the scheduled sync of the customer-file audiences")
    assert names == {"past_leads", "signed", "qualified"}
    members = await db.fetchval("select count(*) from audience_members m join audiences a using (audience_id) "
                                "where a.name = 'signed'")
    assert members == 1

    # The lookalikes' commands are queued after the customer-file audiences': wait for all five.
    async def requested() -> int | None:
        count = await db.fetchval("select count(*) from campaign_commands where kind = 'sync_audience' and "
                                  "requested_by = 'campaign_executor:schedule'")
        return count if count >= 5 else None

    assert await eventually(requested, timeout=30, what="one command per definition") == 5, (
        "one command per definition, lookalikes included")


def test_audiences_list_shows_definitions_and_what_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.registry import SERVICES
    from shared.cli import main
    from tests.fixtures.infra import TEST_DSN

    audiences_file = tmp_path / "audiences.yaml"
    audiences_file.write_text(audiences_yaml("act_1000000001"), encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", TEST_DSN)
    monkeypatch.setenv("EXECUTOR_AUDIENCES_FILE", str(audiences_file))
    assert main(SERVICES, ["audiences", "list"]) == 0
    out = capsys.readouterr().out
    assert "past_leads\tact_" in out
    assert "leads of the last 180 days" in out
    assert "signed_lookalike" in out
    assert "lookalike of signed" in out
    monkeypatch.setenv("EXECUTOR_AUDIENCES_FILE", str(tmp_path / "missing.yaml"))
    assert main(SERVICES, ["audiences", "sync"]) == 2
    assert "not found" in capsys.readouterr().err


async def test_a_large_audience_goes_in_one_session_of_10000_row_batches(
    start_executor, sandbox, broker, results, db, clean, audiences_file  # noqa: F811
) -> None:
    await start_executor(audiences_file=audiences_file)
    now = datetime.now(UTC)
    await db.executemany(
        "insert into leads (leadgen_id, page_id, created_time, fields, raw, source) "
        "values ($1, $2, $3, $4, '{}', 'backfill')",
        [(str(3 * 10**15 + i), PAGE, now - timedelta(hours=1), {"email": f"bulk{i}@example.com"})
         for i in range(25_000)])
    await sandbox.reset_calls()

    result = await sync(broker, results, "past_leads")

    assert result.status == "ok", result.detail
    assert result.counts["rows_sent"] == 25_000
    assert result.counts["add_requests"] == 3, "10,000 + 10,000 + 5,000"
    assert result.counts["add_num_received"] == 25_000, "one session: Meta counts the rows of all its batches"
    assert (await sandbox.calls())["by_path"].get(f"POST /{result.created_ids['audience']}/users") == 3
    assert await db.fetchval("select count(*) from audience_members where audience_id = $1",
                             result.created_ids["audience"]) == 25_000
