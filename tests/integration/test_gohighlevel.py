"""GoHighLevel to the letter of its API v2 spec (issue 17, item 2; issue 14, item 7): crm_sync on the real broker and
database delivers to the stand-in built from GoHighLevel's own OpenAPI documents (`tests/fixtures/ghl.py`), which
refuses any request the spec forbids."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from services.crm_sync.app import create_app
from services.crm_sync.settings import CrmSyncSettings
from shared.doctor import check_gohighlevel
from shared.ghl import LEADWIRE_FIELD_KEYS, CustomFieldCache, GhlClient, GhlRateLimited
from shared.messaging import ensure_confirmed
from shared.service import Service
from shared.settings import Settings
from shared.topology import EXCHANGE, Consumer
from tests.fixtures.ghl import ALL_SCOPES, GhlStandIn, ghl  # noqa: F401
from tests.fixtures.infra import TEST_DSN, eventually, free_block
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_crm_sync import (  # noqa: F401 - fixtures
    Send,
    _alerts,
    _status,
    captured,
    delivery_row,
    new_lead_id,
    queue,
    send,
    taps,
)

pytestmark = pytest.mark.timeout(90)


async def store_lead(db: asyncpg.Pool, leadgen_id: str, fields: dict[str, Any]) -> None:
    raw = {"id": leadgen_id, "ad_name": "Car crash - video", "adset_name": "Phoenix 25-54",
           "campaign_name": "PI Leads Q4", "form_name": "Free case review"}
    await db.execute(
        "insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, fields, raw, "
        "source) values ($1, '1111', '2222', '3333', '4444', '5555', $2, $3, $4, 'webhook')",
        leadgen_id, datetime(2026, 11, 20, 15, 4, 5, tzinfo=UTC), fields, raw,
    )


def form_answers(leadgen_id: str) -> dict[str, Any]:
    """A form with Meta's own name questions and custom questions."""
    return {
        "first_name": ["Mary Ann"], "last_name": ["Smith"], "full_name": ["Mary Ann Smith"],
        "email": [f"mary.{leadgen_id}@example.com"], "phone_number": [f"+1415555{leadgen_id[-4:]}"],
        "country": ["United States"], "date_of_birth": ["2/16/1997"], "gender": ["female"],
        "city": ["Phoenix"], "zip_code": ["85004"],
        "accident_date": ["2026-10-01"], "were_you_injured": ["yes"], "describe_what_happened": ["rear-ended"],
    }


StartGhl = Callable[..., Awaitable[Service]]


@pytest.fixture
async def ghl_sync(settings: Settings, ghl: GhlStandIn, queue: Consumer) -> AsyncIterator[StartGhl]:  # noqa: F811
    started: list[Service] = []

    async def start(location: str, token: str, **extra: Any) -> Service:
        crm = CrmSyncSettings(ghl_api_token=token, ghl_location_id=location, ghl_base_url=ghl.url,
                              crm_timeout_seconds=5, **extra)
        service = create_app(settings.replace(crm), lead_consumer=queue)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


def _custom(contact: dict[str, Any]) -> dict[str, Any]:
    return {f["id"]: f["value"] for f in contact.get("customFields", [])}


async def _delivered(db: asyncpg.Pool, lid: str) -> bool:
    return await _status(db, lid, "gohighlevel", "delivered")


async def test_a_lead_with_custom_questions_reaches_gohighlevel_by_the_spec(
    ghl_sync: StartGhl, ghl: GhlStandIn, send: Send, db: asyncpg.Pool  # noqa: F811
) -> None:
    location = ghl.add_location(fields=(("Accident Date", "DATE"),))
    token = ghl.add_token(location.id)
    await ghl_sync(location.id, token, ghl_custom_field_map={"accident_date": "contact.accident_date"})
    lid = new_lead_id()
    await store_lead(db, lid, form_answers(lid))
    await send(captured(lid))
    await eventually(lambda: _delivered(db, lid), timeout=20, what="delivered to GoHighLevel")

    assert ghl.rejected() == [], [r.problems for r in ghl.rejected()]
    assert all(r.headers.get("Version") == "2021-07-28" for r in ghl.requests)
    [contact] = ghl.contacts(location.id)
    assert (contact["firstName"], contact["lastName"]) == ("Mary Ann", "Smith")  # Meta's own, not a split
    assert contact["email"] == f"mary.{lid}@example.com"
    assert contact["country"] == "US"
    assert contact["dateOfBirth"] == "1997-02-16"
    assert contact["gender"] == "female"
    assert (contact["city"], contact["postalCode"]) == ("Phoenix", "85004")
    assert contact["source"] == "Meta Lead Ads: PI Leads Q4"
    custom = _custom(contact)
    field = {purpose: ghl.field_id(location.id, key) for purpose, key in LEADWIRE_FIELD_KEYS.items()}
    assert all(field.values()), "leadwire created its own fields (the token may)"
    assert custom[ghl.field_id(location.id, "contact.accident_date")] == "2026-10-01"  # by id
    assert custom[field["lead_id"]] == lid
    assert custom[field["form"]] == "Free case review"
    assert custom[field["campaign"]] == "PI Leads Q4"
    assert custom[field["answers"]].splitlines() == ["were_you_injured: yes", "describe_what_happened: rear-ended"]
    assert {"meta lead ads", "paid", "campaign: pi leads q4", "ad set: phoenix 25-54", "ad: car crash - video",
            "form: free case review"} <= set(contact["tags"])
    upsert = next(r for r in ghl.requests if r.path == "/contacts/upsert")
    assert "tags" not in upsert.body, "the upsert's tags would replace the contact's own"
    row = await delivery_row(db, lid, "gohighlevel")
    assert row["crm_reference"] == contact["id"]
    assert await db.fetchval("select contact_id from ghl_contacts where leadgen_id = $1", lid) == contact["id"]


async def test_a_returning_contact_keeps_its_tags(
    ghl_sync: StartGhl, ghl: GhlStandIn, send: Send, db: asyncpg.Pool  # noqa: F811
) -> None:
    location = ghl.add_location()
    token = ghl.add_token(location.id)
    lid = new_lead_id()
    answers = form_answers(lid)
    # The firm's workflows tagged this person before (an earlier enquiry).
    async with aiohttp.ClientSession() as session:
        client = GhlClient(session, ghl.url, token, location.id)
        existing, new = await client.upsert_contact({"locationId": location.id, "email": answers["email"][0],
                                                     "firstName": "Mary"})
        assert new
        await client.add_tags(existing or "", ["signed retainer", "vip"])
    await ghl_sync(location.id, token)
    await store_lead(db, lid, answers)
    await send(captured(lid))
    await eventually(lambda: _delivered(db, lid), timeout=20, what="delivered to GoHighLevel")

    [contact] = ghl.contacts(location.id)
    assert contact["id"] == existing
    assert {"signed retainer", "vip", "meta lead ads", "campaign: pi leads q4"} <= set(contact["tags"])
    assert ghl.rejected() == []


async def test_without_the_field_scope_answers_go_to_one_note_and_doctor_names_the_fields(
    ghl_sync: StartGhl, ghl: GhlStandIn, send: Send, db: asyncpg.Pool  # noqa: F811
) -> None:
    location = ghl.add_location()
    token = ghl.add_token(location.id, scopes=ALL_SCOPES - {"locations/customFields.write"})
    await ghl_sync(location.id, token, ghl_custom_field_map={"accident_date": "contact.accident_date"})
    lid = new_lead_id()
    await store_lead(db, lid, form_answers(lid))
    await send(captured(lid))
    await eventually(lambda: _delivered(db, lid), timeout=20, what="delivered to GoHighLevel")

    [contact] = ghl.contacts(location.id)
    assert "customFields" not in next(r for r in ghl.requests if r.path == "/contacts/upsert").body
    [note] = ghl.notes(location.id, contact["id"])
    assert "accident_date: 2026-10-01" in note["body"]  # a mapped field the location lacks: kept, not dropped
    assert "were_you_injured: yes" in note["body"]
    assert ghl.rejected() == []

    async with aiohttp.ClientSession() as session:
        findings = {f.check: f for f in await check_gohighlevel(GhlClient(session, ghl.url, token, location.id),
                                                                {"accident_date": "contact.accident_date"})}
    assert findings["gohighlevel token"].ok
    fields = findings["gohighlevel custom fields"]
    assert not fields.ok
    assert "Meta Lead ID (contact.meta_lead_id)" in fields.summary
    assert "locations/customFields.write" in (fields.fix or "")
    assert "contact.accident_date" in findings["gohighlevel field map"].summary


async def test_doctor_tells_a_bad_token_from_a_wrong_location(ghl: GhlStandIn) -> None:  # noqa: F811
    location = ghl.add_location()
    other = ghl.add_location()
    token = ghl.add_token(location.id)
    async with aiohttp.ClientSession() as session:
        [bad] = await check_gohighlevel(GhlClient(session, ghl.url, "pit-wrong", location.id), {})
        [wrong] = await check_gohighlevel(GhlClient(session, ghl.url, token, other.id), {})
        good = await check_gohighlevel(GhlClient(session, ghl.url, token, location.id), {})
    assert (bad.check, bad.ok, bad.summary) == ("gohighlevel token", False, "GoHighLevel rejects the token")
    assert (wrong.check, wrong.ok) == ("gohighlevel location", False)
    assert [f.check for f in good if not f.ok] == ["gohighlevel custom fields"]  # the location has none of ours


async def test_the_client_paces_on_ghl_rate_headers_and_waits_out_a_429(ghl: GhlStandIn) -> None:  # noqa: F811
    location = ghl.add_location()
    token = ghl.add_token(location.id)

    def statuses() -> list[int]:
        return [r.status for r in ghl.requests if r.headers.get("Authorization") == f"Bearer {token}"]

    ghl.limit(burst=2, interval_ms=1200)
    try:
        async with aiohttp.ClientSession() as session:
            paced = GhlClient(session, ghl.url, token, location.id)
            for _ in range(4):  # twice the burst: the client waits out the window instead of meeting a 429
                await paced.get_location()
            assert statuses() == [200] * 4
            # Another copy of crm_sync with the same token knows nothing of the window the first one spent: it meets
            # GoHighLevel's 429, waits the interval its headers give, and goes on.
            await paced.get_location()
            await paced.get_location()
            other = GhlClient(session, ghl.url, token, location.id)
            await other.get_location()
            assert statuses()[-2:] == [429, 200]
            assert other.rate.maximum == 2
            assert other.rate.interval == 1.2
            # The daily quota spent: no point waiting in place; the caller is told how long (the queue waits).
            ghl.limit(daily=0)
            with pytest.raises(GhlRateLimited) as raised:
                await GhlClient(session, ghl.url, token, location.id).get_location()
    finally:
        ghl.limit(burst=100, interval_ms=10_000, daily=200_000)
    assert raised.value.retry_after == 3600
    assert raised.value.reason == "HTTP 429"


async def test_rate_limited_leads_are_all_delivered_once(
    ghl_sync: StartGhl, ghl: GhlStandIn, send: Send, db: asyncpg.Pool  # noqa: F811
) -> None:
    location = ghl.add_location()
    token = ghl.add_token(location.id)
    ghl.limit(burst=5, interval_ms=1000)
    try:
        await ghl_sync(location.id, token)
        ids = [new_lead_id() for _ in range(6)]
        for lid in ids:
            await store_lead(db, lid, form_answers(lid))
        for lid in ids:
            await send(captured(lid))
        for lid in ids:
            await eventually(lambda lid=lid: _delivered(db, lid), timeout=40, what=f"{lid} delivered")
    finally:
        ghl.limit(burst=100, interval_ms=10_000)
    emails = sorted(c["email"] for c in ghl.contacts(location.id))
    assert emails == sorted(f"mary.{lid}@example.com" for lid in ids)  # one contact each
    assert ghl.rejected() == []


async def test_an_invalid_token_is_permanent_with_an_alert(
    ghl_sync: StartGhl, ghl: GhlStandIn, send: Send, db: asyncpg.Pool, taps: Any, queue: Consumer  # noqa: F811
) -> None:
    location = ghl.add_location()
    await ghl_sync(location.id, "pit-not-a-token")
    lid = new_lead_id()
    await store_lead(db, lid, form_answers(lid))
    await send(captured(lid))
    await eventually(lambda: _status(db, lid, "gohighlevel", "failed"), timeout=20, what="failed for good")
    row = await delivery_row(db, lid, "gohighlevel")
    assert (row["attempts"], row["last_error"]) == (1, "HTTP 401")
    # One incident alert for the parked lead (never one per lead), whose fix is a command an operator can run.
    [alert] = await eventually(lambda: _alerts(taps, f"{queue.service}/{queue.name}"), what="an alert")
    assert alert.payload.code == "messages_parked_opened"
    assert "gohighlevel (HTTP 401)" in alert.payload.summary
    assert "leadwire parked replay" in (alert.payload.fix or "")
    assert await _alerts(taps, lid) is None


async def test_a_lead_without_email_or_phone_is_updated_through_its_recorded_contact(
    ghl_sync: StartGhl, ghl: GhlStandIn, send: Send, db: asyncpg.Pool  # noqa: F811
) -> None:
    location = ghl.add_location()
    token = ghl.add_token(location.id)
    await ghl_sync(location.id, token)
    lid = new_lead_id()
    await store_lead(db, lid, {"full_name": ["Pat Doe"], "were_you_injured": ["no"]})
    ghl.fail_next(1, status=503, path_pattern=r"/tags$")  # the contact exists, then the tags fail: retried
    await send(captured(lid))
    await eventually(lambda: _delivered(db, lid), timeout=30, what="delivered to GoHighLevel")
    [contact] = ghl.contacts(location.id)  # the retry updated the same contact (PUT), created none
    assert [r.method for r in ghl.requests if r.path == f"/contacts/{contact['id']}"] == ["PUT"]
    assert "meta lead ads" in contact["tags"]
    assert ghl.rejected() == []


# -- issue 14, item 7: a SIGKILL during a slow CRM call --------------------------------------------------------


async def _ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_sigkill_during_a_slow_upsert_creates_no_second_contact(
    ghl: GhlStandIn, db: asyncpg.Pool, vhost_url: str  # noqa: F811
) -> None:
    location = ghl.add_location()
    token = ghl.add_token(location.id)
    ops = free_block(1)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AMQP", "DATABASE", "CRM_", "GHL_", "OPS_"))},
           "AMQP_URL": vhost_url, "DATABASE_URL": TEST_DSN, "GHL_API_TOKEN": token, "GHL_LOCATION_ID": location.id,
           "GHL_BASE_URL": ghl.url, "OPS_PORT": str(ops), "LOG_FORMAT": "json"}
    ids = [new_lead_id() for _ in range(3)]
    for lid in ids:
        await store_lead(db, lid, form_answers(lid))
    emails = {f"mary.{lid}@example.com" for lid in ids}

    def upserts() -> list[Any]:
        return [r for r in ghl.requests
                if r.path == "/contacts/upsert" and isinstance(r.body, dict) and r.body.get("email") in emails]

    def ours() -> list[dict[str, Any]]:  # other suites' leads may pass through the same queue: only these count
        return [c for c in ghl.contacts(location.id) if c.get("email") in emails]

    ghl.slow(r"^/contacts/upsert$", 30)  # GoHighLevel creates the contact, then takes its time to answer
    first = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", "run", "crm_sync", env=env,
                                                 stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await eventually(lambda: _ready(f"http://127.0.0.1:{ops}/readyz"), timeout=30, what="crm_sync ready")
        broker = RabbitBroker(vhost_url, logger=None)  # crm_sync's real queue, in this module's own vhost
        await broker.connect()
        try:
            for lid in ids:
                message = captured(lid)
                frame = await broker.publish(message.model_dump_json().encode(), exchange=EXCHANGE,
                                             routing_key=message.routing_key, persist=True, mandatory=True,
                                             content_type="application/json", message_id=str(message.message_id),
                                             message_type=message.type)
                ensure_confirmed(frame, "crm_sync")
        finally:
            await broker.stop()
        await eventually(lambda: _at_least(upserts, len(ids)), timeout=30, what="every upsert in flight")
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert len(ours()) == len(ids)  # GoHighLevel made them; crm_sync never heard back

    ghl.heal()
    second = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", "run", "crm_sync", env=env,
                                                  stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL)
    try:
        for lid in ids:
            await eventually(lambda lid=lid: _delivered(db, lid), timeout=60, what=f"{lid} delivered after restart")
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    assert len(upserts()) >= 2 * len(ids)  # every lead was sent again...
    assert sorted(c["email"] for c in ours()) == sorted(emails)  # ...and none has a second contact
    for lid in ids:
        row = await delivery_row(db, lid, "gohighlevel")
        [contact] = [c for c in ours() if c["email"] == f"mary.{lid}@example.com"]
        assert row["crm_reference"] == contact["id"]


async def _at_least(probe: Callable[[], list[Any]], n: int) -> bool:
    return len(probe()) >= n


async def test_two_copies_creating_leadwire_fields_end_with_one_of_each(ghl: GhlStandIn) -> None:  # noqa: F811
    location = ghl.add_location()
    token = ghl.add_token(location.id)
    async with aiohttp.ClientSession() as session:
        first = CustomFieldCache(GhlClient(session, ghl.url, token, location.id))
        second = CustomFieldCache(GhlClient(session, ghl.url, token, location.id))
        await second.load()  # the second copy read the fields before the first created them
        await first.current()
        await second._ensure_leadwire_fields()  # its creates meet "already exists": it reads the fields again
        by_key = second.by_key
    assert sorted(f["fieldKey"] for f in location.custom_fields) == sorted(LEADWIRE_FIELD_KEYS.values())
    assert {k: by_key[k] for k in LEADWIRE_FIELD_KEYS.values()} == {
        f["fieldKey"]: f["id"] for f in location.custom_fields}
    assert not second.cannot_create


async def test_leadwire_doctor_checks_gohighlevel(ghl: GhlStandIn, sandbox: SandboxHandle) -> None:  # noqa: F811
    location = ghl.add_location(fields=(("Meta Lead ID", "TEXT"),))
    token = ghl.add_token(location.id)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("META_", "CRM_", "GHL_"))},
           "META_ACCESS_TOKEN": sandbox.token, "META_APP_SECRET": sandbox.app_secret, "META_GRAPH_URL": sandbox.url,
           "GHL_API_TOKEN": token, "GHL_LOCATION_ID": location.id, "GHL_BASE_URL": ghl.url,
           "GHL_CUSTOM_FIELD_MAP": '{"accident_date": "contact.accident_date"}', "LOG_FORMAT": "text"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", "doctor", env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    text = output.decode()
    assert process.returncode == 1, text
    assert f"[ok  ] gohighlevel token {location.id}: valid for Test Law Firm" in text
    assert "[WARN] gohighlevel custom fields" in text
    assert "missing Meta Lead Form (contact.meta_lead_form)" in text  # the one it has is not listed
    assert "Meta Lead ID (contact.meta_lead_id)" not in text
    assert "GHL_CUSTOM_FIELD_MAP names fields the location lacks: contact.accident_date" in text
    assert token not in text
