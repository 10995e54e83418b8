"""GoHighLevel → leadwire (issue 17, item 3), end to end: a lead is delivered by crm_sync to the GoHighLevel stand-in,
which gives the contact its id; GoHighLevel then posts a stage change or a tag change to the ingress's
`/crm/events/ghl`; capi_sender sends it to Meta (the Graph sandbox) with the lead's id and identifiers, and the rules
engine counts it in `rule_crm_outcomes`. The same through the generic webhook CRM and `/crm/events`."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from pydantic import SecretStr

from services.capi_sender.app import create_app as create_capi
from services.capi_sender.settings import CapiSettings
from services.crm_sync.app import create_app as create_crm_sync
from services.crm_sync.settings import CrmSyncSettings
from services.ingress.app import create_app as create_ingress
from services.ingress.settings import GhlEventsSettings, IngressSettings
from services.rules_engine.app import create_app as create_rules
from services.rules_engine.settings import NotifySettings, RulesSettings
from shared.service import Service
from shared.settings import BrokerSettings, MetaSettings, Settings
from shared.topology import Consumer
from tests.fixtures.crm import FakeCrm, crm_sink  # noqa: F401
from tests.fixtures.ghl import GhlStandIn, ghl  # noqa: F401
from tests.fixtures.infra import eventually, unique
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_crm_sync import Send, _status, captured, queue, send  # noqa: F401
from tests.integration.test_outcome_matching import _outcomes_of, _phone, _sha, _store_lead

pytestmark = pytest.mark.timeout(120)

SECRET = "test-ghl-workflow-secret"
CRM_SECRET = "test-generic-crm-secret"
WEBHOOK_SECRET = "test-generic-webhook-secret"
ED25519 = ed25519.Ed25519PrivateKey.generate()
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OUTCOMES = {"stages": {"stage-signed": {"event_name": "SignedCase", "currency": "USD"}},
            "tags": {"qualified": "QualifiedLead", "signed": {"event_name": "SignedCase", "value": 9000}}}


def _pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class Env:
    url: str
    http: aiohttp.ClientSession
    sandbox: SandboxHandle
    pixel_id: str
    db: asyncpg.Pool
    ghl: GhlStandIn
    location: str
    token: str

    async def post(self, path: str, body: dict[str, Any] | list[Any], headers: dict[str, str]) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        async with self.http.post(f"{self.url}{path}", data=raw,
                                  headers={"Content-Type": "application/json", **headers}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def signed(self, body: dict[str, Any], *, legacy: bool = False) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        if legacy:
            header = {"X-WH-Signature": base64.b64encode(
                RSA.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()}
        else:
            header = {"X-GHL-Signature": base64.b64encode(ED25519.sign(raw)).decode()}
        async with self.http.post(f"{self.url}/crm/events/ghl", data=raw,
                                  headers={"Content-Type": "application/json", **header}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def sent(self, event_id: str) -> dict[str, Any] | None:
        return await self.sandbox.capi_event_sent(self.db, self.pixel_id, event_id)


@pytest.fixture
async def env(settings: Settings, vhost_url: str, sandbox: SandboxHandle, db: asyncpg.Pool, ghl: GhlStandIn,  # noqa: F811
              crm_sink: FakeCrm, queue: Consumer) -> AsyncIterator[Env]:  # noqa: F811
    base = settings.replace(BrokerSettings(amqp_url=vhost_url, RETRY_ATTEMPTS=3, GRACEFUL_TIMEOUT_SECONDS=5))
    pixel_id: str = sandbox.state["pixel_id"]
    location = ghl.add_location()
    token = ghl.add_token(location.id)
    services: list[Service] = [
        create_capi(base.replace(
            MetaSettings(pixel_id=pixel_id, graph_url=sandbox.url, access_token=sandbox.token,
                         app_secret=sandbox.app_secret),
            CapiSettings(capi_linger_ms=20),
        )),
        create_rules(base.replace(
            RulesSettings(interval_seconds=0),
            NotifySettings(slack_webhook_url=SecretStr(""), smtp_host=""),
            MetaSettings(ad_account_id=[]),
        )),
        create_ingress(base.replace(
            IngressSettings(ingress_port=0, crm_events_secret=CRM_SECRET),
            GhlEventsSettings(ghl_events_secret=SECRET, ghl_webhook_public_key=_pem(ED25519),
                              ghl_webhook_rsa_public_key=_pem(RSA), ghl_outcome_map=OUTCOMES),
        )),
        # crm_sync on the test vhost's private queue (`send`), delivering to GoHighLevel and the generic webhook.
        create_crm_sync(settings.replace(CrmSyncSettings(
            ghl_api_token=token, ghl_location_id=location.id, ghl_base_url=ghl.url,
            crm_webhook_url=crm_sink.webhook_url, crm_webhook_secret=WEBHOOK_SECRET, crm_timeout_seconds=5,
        )), lead_consumer=queue),
    ]
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        async with aiohttp.ClientSession() as http:
            yield Env(f"http://127.0.0.1:{services[2].ops_port}", http, sandbox, pixel_id, db, ghl, location.id,
                      token)
    finally:
        for service in reversed(started):
            await service.stop()


async def _delivered_lead(env: Env, send: Send, crm: FakeCrm | None = None) -> tuple[str, str, str, str]:  # noqa: F811
    """A lead stored as lead_fetcher stores it, delivered to both CRMs: (lead id, e-mail, phone digits, GHL id)."""
    meta_phone, _ = _phone()
    email = f"{unique('jane.')}@example.com"
    lead_id = await _store_lead(env.db, email=email, phone=meta_phone)
    if crm is not None:  # the generic CRM's contact id, unique across runs on the same database
        crm.answer_reference(lead_id, unique("crm-"))
    await send(captured(lead_id))
    for adapter in ("gohighlevel", "webhook"):
        await eventually(lambda a=adapter: _status(env.db, lead_id, a, "delivered"), timeout=20,
                         what=f"delivered to {adapter}")
    contact_id = await env.db.fetchval("select contact_id from ghl_contacts where leadgen_id = $1", lead_id)
    [contact] = [c for c in env.ghl.contacts(env.location) if c["id"] == contact_id]
    assert contact["email"] == email
    return lead_id, email, meta_phone.lstrip("+"), contact_id


def _assert_enriched(user_data: dict[str, Any], lead_id: str, email: str, phone_digits: str) -> None:
    assert user_data["lead_id"] == lead_id
    assert user_data["em"] == _sha(email.lower())
    assert user_data["ph"] == _sha(phone_digits)
    assert user_data["fn"] == _sha("janeq")
    assert user_data["ln"] == _sha("doe")
    assert user_data["zp"] == _sha("60601")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def test_a_ghl_stage_change_becomes_a_signed_case_with_the_lead(env: Env, send: Send) -> None:  # noqa: F811
    lead_id, email, phone, contact_id = await _delivered_lead(env, send)
    stage_change = {  # GoHighLevel's OpportunityStageUpdate (docs/webhook events), as its app webhook posts it
        "type": "OpportunityStageUpdate", "locationId": env.location, "id": unique("opp"),
        "assignedTo": "u1", "contactId": contact_id, "monetaryValue": 4500, "name": "Jane v. Acme",
        "pipelineId": "p1", "pipelineStageId": "stage-signed", "source": "Meta Lead Ads", "status": "open",
        "dateAdded": "2026-11-26T12:41:02.193Z", "timestamp": _now_iso(), "webhookId": unique("wh"),
    }
    status, answer = await env.signed(stage_change)
    assert (status, answer["accepted"]) == (202, 1), answer

    sent = await eventually(lambda: env.sent(f"ghl-{contact_id}-SignedCase"), timeout=20, what="SignedCase sent")
    assert sent["event_name"] == "SignedCase"
    assert sent["action_source"] == "system_generated"
    _assert_enriched(sent["user_data"], lead_id, email, phone)
    assert sent["custom_data"]["value"] == 4500
    assert sent["custom_data"]["currency"] == "USD"
    assert sent["custom_data"]["lead_event_source"] == "HighLevel"
    assert sent["custom_data"]["event_source"] == "crm"
    assert await eventually(lambda: _outcomes_of(env.db, lead_id), what="counted") == ["SignedCase"]

    # The same change delivered again (GoHighLevel retries): the same event, not a second one.
    status, again = await env.signed({**stage_change, "webhookId": unique("wh"), "timestamp": _now_iso()})
    assert status == 202
    assert again["message_ids"] == answer["message_ids"]


async def test_ghl_tags_and_workflow_webhooks(env: Env, send: Send) -> None:  # noqa: F811
    lead_id, email, phone, contact_id = await _delivered_lead(env, send)
    # An app's ContactTagUpdate, with the older RSA signature: "qualified" maps to QualifiedLead.
    tag_update = {"type": "ContactTagUpdate", "locationId": env.location, "id": contact_id, "email": email,
                  "tags": ["meta lead ads", "Qualified"], "timestamp": _now_iso(), "webhookId": unique("wh")}
    status, answer = await env.signed(tag_update, legacy=True)
    assert (status, answer["accepted"]) == (202, 1), answer
    sent = await eventually(lambda: env.sent(f"ghl-{contact_id}-QualifiedLead"), timeout=20, what="QualifiedLead")
    _assert_enriched(sent["user_data"], lead_id, email, phone)

    # A workflow's Webhook action: the shared secret in its custom data, the stage by name in its event_name.
    workflow = {"contact_id": contact_id, "first_name": "Jane", "email": email, "tags": "meta lead ads, vip",
                "workflow": {"id": "w1", "name": "Signed"}, "location": {"id": env.location},
                "customData": {"secret": SECRET, "event_name": "SignedCase", "value": "12000", "currency": "usd"}}
    status, answer = await env.post("/crm/events/ghl", workflow, {})
    assert (status, answer["accepted"]) == (202, 1), answer
    signed = await eventually(lambda: env.sent(f"ghl-{contact_id}-SignedCase"), timeout=20, what="SignedCase")
    assert signed["user_data"]["lead_id"] == lead_id
    assert (signed["custom_data"]["value"], signed["custom_data"]["currency"]) == (12000, "USD")
    assert sorted(await eventually(lambda: _outcomes_of_n(env.db, lead_id, 2), what="both counted")) == [
        "QualifiedLead", "SignedCase"]

    # What is refused: no secret, a wrong signature, a stale signed body; an unused event type is acknowledged.
    no_secret = {**workflow, "customData": {"event_name": "SignedCase"}}
    assert (await env.post("/crm/events/ghl", no_secret, {}))[0] == 401
    assert (await env.post("/crm/events/ghl", no_secret, {"Authorization": "Bearer nope"}))[0] == 401
    assert (await env.post("/crm/events/ghl", no_secret, {"X-GHL-Signature": base64.b64encode(b"x" * 64).decode()}
                           ))[0] == 401
    stale = {**tag_update, "timestamp": "2026-01-01T00:00:00Z"}
    assert (await env.signed(stale))[0] == 401
    status, answer = await env.signed({"type": "NoteCreate", "timestamp": _now_iso()})
    assert (status, answer["accepted"], answer["ignored"]) == (202, 0, "event type not used")


async def test_the_generic_webhook_crm_posts_its_contact_id_and_the_outcome_finds_the_lead(
    env: Env, send: Send, crm_sink: FakeCrm  # noqa: F811
) -> None:
    lead_id, email, phone, _ = await _delivered_lead(env, send, crm_sink)
    reference = await env.db.fetchval(
        "select crm_reference from crm_deliveries where leadgen_id = $1 and adapter = 'webhook'", lead_id)
    assert reference
    assert reference.startswith("crm-")
    outcome = {"event_name": "SignedCase", "event_time": int(time.time()) - 60, "event_id": unique("signed-"),
               "user": {"external_id": reference}, "custom_data": {"value": 25000, "currency": "USD"}}
    status, _ = await env.post("/crm/events", [outcome], {"Authorization": f"Bearer {CRM_SECRET}"})
    assert status == 202
    sent = await eventually(lambda: env.sent(outcome["event_id"]), timeout=20, what="sent")
    _assert_enriched(sent["user_data"], lead_id, email, phone)
    assert await eventually(lambda: _outcomes_of(env.db, lead_id), what="counted") == ["SignedCase"]

    # An e-mail-only outcome, as the CRM writes it, is enriched the same way.
    email_only = {**outcome, "event_name": "QualifiedLead", "event_id": unique("q-"),
                  "user": {"email": email.upper()}}
    assert (await env.post("/crm/events", email_only, {"Authorization": f"Bearer {CRM_SECRET}"}))[0] == 202
    sent = await eventually(lambda: env.sent(email_only["event_id"]), timeout=20, what="sent")
    _assert_enriched(sent["user_data"], lead_id, email, phone)


async def _outcomes_of_n(db: asyncpg.Pool, lead_id: str, n: int) -> list[str] | None:
    found = await _outcomes_of(db, lead_id)
    return found if len(found) >= n else None
