"""Every CRM outcome finds its lead (issue 17, item 4), end to end on a vhost of its own: a CRM posts to the ingress's
/crm/events, capi_sender and the rules engine consume `conversion.requested` on their real queues, the database and
the Graph sandbox are real.

The leads are stored by lead_fetcher's own insert (`store_leads`), which keeps their hashed e-mail and phone match
keys; the outcomes carry only an e-mail, only a phone, only the CRM's contact id, or nothing any lead has.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.capi_sender.app import create_app as create_capi
from services.capi_sender.settings import CapiSettings
from services.ingress.app import create_app as create_ingress
from services.ingress.settings import IngressSettings
from services.lead_fetcher import store as lead_store
from services.lead_fetcher.logic import parse_lead
from services.rules_engine.app import create_app as create_rules
from services.rules_engine.settings import NotifySettings, RulesSettings
from shared.leads import MatchedBy, OutcomeIdentifiers, match_lead, match_leads
from shared.service import Service
from shared.settings import BrokerSettings, MetaSettings, Settings
from tests.fixtures.infra import eventually, unique
from tests.fixtures.sandbox import SandboxHandle

CRM_SECRET = "test-outcome-matching-secret"

pytestmark = pytest.mark.timeout(90)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _matched(by: str) -> float:
    return REGISTRY.get_sample_value("leadwire_capi_outcomes_matched_total", {"by": by}) or 0.0


@dataclass
class Loop:
    """The running services and what a test needs to reach them."""

    url: str
    http: aiohttp.ClientSession
    sandbox: SandboxHandle
    pixel_id: str
    db: asyncpg.Pool

    async def post(self, *events: dict[str, Any]) -> None:
        async with self.http.post(f"{self.url}/crm/events", data=json.dumps(list(events)).encode(),
                                  headers={"Authorization": f"Bearer {CRM_SECRET}"}) as resp:
            assert resp.status == 202, await resp.text()

    async def sent(self, event_id: str) -> dict[str, Any] | None:
        """The event as Meta (the sandbox) received it, once capi_sender recorded it sent."""
        return await self.sandbox.capi_event_sent(self.db, self.pixel_id, event_id)


@pytest.fixture
async def loop(settings: Settings, vhost_url: str, sandbox: SandboxHandle, db: asyncpg.Pool) -> AsyncIterator[Loop]:
    base = settings.replace(BrokerSettings(amqp_url=vhost_url, RETRY_ATTEMPTS=3, GRACEFUL_TIMEOUT_SECONDS=5))
    pixel_id: str = sandbox.state["pixel_id"]
    services: list[Service] = [
        create_capi(base.replace(
            MetaSettings(pixel_id=pixel_id, graph_url=sandbox.url, access_token=sandbox.token,
                         app_secret=sandbox.app_secret),
            CapiSettings(capi_linger_ms=20, capi_crm_name="Litify"),
        )),
        create_rules(base.replace(
            RulesSettings(interval_seconds=0),
            NotifySettings(slack_webhook_url=SecretStr(""), smtp_host=""),
            MetaSettings(ad_account_id=[]),
        )),
        create_ingress(base.replace(IngressSettings(ingress_port=0, crm_events_secret=CRM_SECRET))),
    ]
    started: list[Service] = []
    try:
        for service in services:  # consumers first: the ingress publishes to queues that exist
            await service.start()
            started.append(service)
        async with aiohttp.ClientSession() as http:
            yield Loop(f"http://127.0.0.1:{services[-1].ops_port}", http, sandbox, pixel_id, db)
    finally:
        for service in reversed(started):
            await service.stop()


async def _store_lead(db: asyncpg.Pool, email: str, phone: str) -> str:
    """A lead as lead_fetcher stores it from Meta's answer (its own parse and insert)."""
    leadgen_id = str(random.randint(10**15, 10**16 - 1))
    raw = {
        "id": leadgen_id,
        "created_time": datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
        "form_id": "2222", "ad_id": "3333", "adset_id": "4444", "campaign_id": "5555",
        "field_data": [
            {"name": "email", "values": [email]},
            {"name": "phone_number", "values": [phone]},
            {"name": "full_name", "values": ["Jane Q. Doe"]},
            {"name": "city", "values": ["Chicago"]},
            {"name": "zip_code", "values": ["60601"]},
        ],
    }
    async with db.acquire() as conn:
        assert await lead_store.store_leads(conn, [(parse_lead(raw, page_id="1111", source="webhook"), None)])
    return leadgen_id


def _phone() -> tuple[str, str]:
    """A fresh US number as Meta gives it and as a CRM writes it, with its normalized digits."""
    exchange, line = random.randint(200, 999), random.randint(1000, 9999)
    return f"+1415{exchange}{line}", f"(415) {exchange}-{line}"


def _outcome(user: dict[str, Any]) -> dict[str, Any]:
    return {"event_name": "SignedCase", "event_time": int(time.time()) - 60, "event_id": unique("signed-"),
            "user": user, "custom_data": {"value": 25000, "currency": "USD"}}


def _assert_enriched(user_data: dict[str, Any], lead_id: str, email: str, phone_digits: str) -> None:
    assert user_data["lead_id"] == lead_id  # unhashed, Meta's best key
    assert user_data["em"] == _sha(email.lower())
    assert user_data["ph"] == _sha(phone_digits)
    assert user_data["fn"] == _sha("janeq")
    assert user_data["ln"] == _sha("doe")
    assert user_data["ct"] == _sha("chicago")
    assert user_data["zp"] == _sha("60601")


async def _outcomes_of(db: asyncpg.Pool, lead_id: str) -> list[str]:
    return [r["event_name"] for r in await db.fetch(
        "select event_name from rule_crm_outcomes where lead_id = $1", lead_id)]


async def test_email_only_and_phone_only_outcomes_find_their_leads(loop: Loop) -> None:
    by_email = await _store_lead(loop.db, email=f"{unique('jane.')}@example.com", phone=_phone()[0])
    email = await loop.db.fetchval("select fields->>'email' from stored_leads where leadgen_id = $1", by_email)
    meta_phone, crm_phone = _phone()
    by_phone = await _store_lead(loop.db, email=f"{unique('mary.')}@example.com", phone=meta_phone)
    phone_email = await loop.db.fetchval("select fields->>'email' from stored_leads where leadgen_id = $1", by_phone)
    before = {by: _matched(by) for by in ("email", "phone", "unmatched")}

    # The CRM writes the e-mail in its own case and spacing, the phone in national format.
    email_only = _outcome({"email": f"  {email.upper()} "})
    phone_only = _outcome({"phone": crm_phone})
    await loop.post(email_only, phone_only)

    sent_email = await eventually(lambda: loop.sent(email_only["event_id"]), what="the e-mail-only event sent")
    sent_phone = await eventually(lambda: loop.sent(phone_only["event_id"]), what="the phone-only event sent")
    first_phone = await loop.db.fetchval("select fields->>'phone_number' from stored_leads where leadgen_id = $1",
                                         by_email)
    _assert_enriched(sent_email["user_data"], by_email, email, first_phone.lstrip("+"))
    _assert_enriched(sent_phone["user_data"], by_phone, phone_email, meta_phone.lstrip("+"))
    assert await eventually(lambda: _outcomes_of(loop.db, by_email), what="e-mail outcome counted") == ["SignedCase"]
    assert await eventually(lambda: _outcomes_of(loop.db, by_phone), what="phone outcome counted") == ["SignedCase"]
    assert _matched("email") - before["email"] >= 1
    assert _matched("phone") - before["phone"] >= 1
    assert _matched("unmatched") == before["unmatched"]


async def test_an_outcome_matching_no_lead_is_sent_and_counted_unmatched(loop: Loop) -> None:
    before = _matched("unmatched")
    nobody = f"{unique('nobody.')}@example.org"
    outcome = _outcome({"email": nobody})
    await loop.post(outcome)

    sent = await eventually(lambda: loop.sent(outcome["event_id"]), what="the unmatched event sent")
    assert sent["user_data"]["em"] == _sha(nobody)  # what the CRM gave, and nothing else
    assert "lead_id" not in sent["user_data"]
    assert "ph" not in sent["user_data"]
    assert _matched("unmatched") - before == 1


async def test_an_outcome_with_the_crm_contact_id_finds_its_lead(loop: Loop) -> None:
    lead_id = await _store_lead(loop.db, email=f"{unique('ann.')}@example.com", phone=_phone()[0])
    reference = unique("ghl-contact-")
    # What crm_sync records when the CRM answers a delivery with its contact id.
    await loop.db.execute("insert into crm_deliveries (leadgen_id, adapter, status, crm_reference, delivered_at) "
                          "values ($1, 'gohighlevel', 'delivered', $2, now())", lead_id, reference)
    before = _matched("crm_reference")
    outcome = _outcome({"external_id": reference})
    await loop.post(outcome)

    sent = await eventually(lambda: loop.sent(outcome["event_id"]), what="the event sent")
    assert sent["user_data"]["lead_id"] == lead_id
    assert "external_id" in sent["user_data"]  # the CRM's id still goes (hashed), beside the lead's
    assert {"em", "ph", "fn", "ln"} <= set(sent["user_data"])
    assert await eventually(lambda: _outcomes_of(loop.db, lead_id), what="outcome counted") == ["SignedCase"]
    assert _matched("crm_reference") - before == 1


async def test_a_batch_of_outcomes_is_matched_in_one_query_per_way_each_by_the_first_way_that_finds(
    db: asyncpg.Pool,
) -> None:
    """`match_leads`, as the capi_sender's batch path calls it: each outcome gets the lead of the first way that
    finds one (the CRM's contact id, then the e-mail, then the phone), as `match_lead` gives it for that outcome
    alone; outcomes sharing a key share its lead; one matching nothing stays unmatched."""
    emails = [f"{unique('m.')}@example.com" for _ in range(3)]
    phones = [_phone() for _ in range(3)]
    leads = [await _store_lead(db, email=e, phone=p[0]) for e, p in zip(emails, phones, strict=True)]
    reference = unique("ghl-contact-")
    await db.execute("insert into crm_deliveries (leadgen_id, adapter, status, crm_reference, delivered_at) "
                     "values ($1, 'gohighlevel', 'delivered', $2, now())", leads[0], reference)
    whos = [
        OutcomeIdentifiers(crm_reference=reference, email=emails[1]),  # the contact id wins over the e-mail
        OutcomeIdentifiers(crm_reference=unique("unknown-"), email=emails[1].upper()),  # then the e-mail
        OutcomeIdentifiers(email=f"{unique('nobody.')}@example.com", phone=phones[2][1]),  # then the phone
        OutcomeIdentifiers(phone=phones[2][0]),  # the same phone as Meta wrote it: the same lead
        OutcomeIdentifiers(email=f"{unique('nobody.')}@example.com"),  # nothing
        OutcomeIdentifiers(),  # no identifier at all
    ]
    found = await match_leads(db, whos)
    assert [(lead.leadgen_id if lead else None, by) for lead, by in found] == [
        (leads[0], MatchedBy.CRM_REFERENCE), (leads[1], MatchedBy.EMAIL), (leads[2], MatchedBy.PHONE),
        (leads[2], MatchedBy.PHONE), (None, MatchedBy.UNMATCHED), (None, MatchedBy.UNMATCHED),
    ]
    for who, (lead, by) in zip(whos, found, strict=True):
        alone = await match_lead(db, who)
        assert (alone[0].leadgen_id if alone[0] else None, alone[1]) == (lead.leadgen_id if lead else None, by)
