"""Leads, forms, Page subscriptions and signed leadgen webhook delivery (retries, drops, generator)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web

from tests.fixtures.sandbox import SandboxHandle

SECRET = "receiver-secret"


@dataclass
class Receiver:
    url: str
    bodies: list[bytes] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    fail_first: int = 0
    attempts: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def leads(self) -> list[dict[str, Any]]:
        out = []
        for body in self.bodies:
            for entry in json.loads(body)["entry"]:
                out.extend(c["value"] for c in entry["changes"])
        return out

    async def wait_for(self, n_leads: int, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.leads()) < n_leads:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - loop.time()))


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        rec.attempts += 1
        body = await request.read()
        if rec.attempts <= rec.fail_first:
            return web.Response(status=500)
        rec.bodies.append(body)
        rec.signatures.append(request.headers["X-Hub-Signature-256"])
        rec.changed.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhooks/meta", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/webhooks/meta"
    yield rec
    await runner.cleanup()


async def test_lead_read_shape(sandbox: SandboxHandle) -> None:
    [lead_id] = await sandbox.create_leads(count=1, deliver=False)
    fields = (
        "id,created_time,field_data,ad_id,adset_id,campaign_id,form_id,is_organic,platform,custom_disclaimer_responses"
    )
    status, headers, lead = await sandbox.graph("GET", lead_id, fields=fields)
    assert status == 200
    assert set(lead) == set(fields.split(","))
    assert time.strptime(lead["created_time"], "%Y-%m-%dT%H:%M:%S+0000")
    assert lead["is_organic"] is False
    assert {f["name"] for f in lead["field_data"]} == {
        "full_name",
        "email",
        "phone_number",
        "city",
        "zip_code",
        "when_would_you_like_to_start?",
    }
    assert json.loads(headers["X-Business-Use-Case-Usage"])[sandbox.state["page_id"]][0]["type"] == "leadgen"


async def test_deleted_lead_is_100_33(sandbox: SandboxHandle) -> None:
    [lead_id] = await sandbox.create_leads(count=1, deliver=False)
    status, _, _ = await sandbox.graph("DELETE", lead_id)
    assert status == 200
    status, _, body = await sandbox.graph("GET", lead_id)
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)


async def test_form_and_ad_leads_time_filter_and_paging(sandbox: SandboxHandle) -> None:
    form = sandbox.state["form_ids"][1]
    since = int(time.time()) - 5
    new = await sandbox.create_leads(form_id=form, count=5, deliver=False)
    filtering = json.dumps([{"field": "time_created", "operator": "GREATER_THAN", "value": since}])
    seen: list[str] = []
    _, _, page = await sandbox.graph("GET", f"{form}/leads", filtering=filtering, limit=2)
    while True:
        seen.extend(lead["id"] for lead in page["data"])
        if "next" not in page.get("paging", {}):
            break
        async with sandbox.session.get(page["paging"]["next"]) as resp:
            page = await resp.json()
    assert sorted(seen) == sorted(new)
    _, _, all_leads = await sandbox.graph("GET", f"{form}/leads", limit=500)
    assert len(all_leads["data"]) > 5  # seeded history
    _, _, lead = await sandbox.graph("GET", new[0], fields="ad_id")
    _, _, by_ad = await sandbox.graph("GET", f"{lead['ad_id']}/leads", filtering=filtering)
    assert new[0] in {x["id"] for x in by_ad["data"]}
    bad = json.dumps([{"field": "name", "operator": "EQUAL", "value": 1}])
    status, _, _ = await sandbox.graph("GET", f"{form}/leads", filtering=bad)
    assert status == 400


async def test_page_forms_and_subscribed_apps(sandbox: SandboxHandle) -> None:
    page = sandbox.state["page_id"]
    _, _, forms = await sandbox.graph("GET", f"{page}/leadgen_forms", token=sandbox.page_token, fields="name,status")
    assert [f["name"] for f in forms["data"]] == ["Contact us", "Get a quote"]
    status, _, refused = await sandbox.graph("POST", f"{page}/subscribed_apps", subscribed_fields="leadgen")
    assert (status, refused["error"]["code"]) == (400, 190), "Meta installs an app on a Page with its Page token"
    _, _, before = await sandbox.graph("GET", f"{page}/subscribed_apps", token=sandbox.page_token)
    assert before == {"data": []}
    status, _, body = await sandbox.graph("POST", f"{page}/subscribed_apps", token=sandbox.page_token,
                                          subscribed_fields="leadgen")
    assert (status, body) == (200, {"success": True})
    _, _, after = await sandbox.graph("GET", f"{page}/subscribed_apps", token=sandbox.page_token)
    assert after["data"][0]["subscribed_fields"] == ["leadgen"]


async def test_webhook_delivery_is_signed_and_meta_shaped(sandbox: SandboxHandle, receiver: Receiver) -> None:
    await sandbox.webhooks(target_url=receiver.url, app_secret=SECRET, batch_size=3)
    ids = await sandbox.create_leads(count=3)
    await receiver.wait_for(3)
    body = receiver.bodies[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert receiver.signatures[0] == expected
    payload = json.loads(body)
    assert payload["object"] == "page"
    entry = payload["entry"][0]
    assert entry["id"] == sandbox.state["page_id"]
    change = entry["changes"][0]
    assert change["field"] == "leadgen"
    value = change["value"]
    assert isinstance(value["leadgen_id"], int)
    assert value["adgroup_id"] == value["ad_id"]
    assert {str(v["leadgen_id"]) for v in receiver.leads()} == set(ids)
    assert len(receiver.bodies) == 1  # batched into one delivery


async def test_webhook_retries_on_non_200(sandbox: SandboxHandle, receiver: Receiver) -> None:
    receiver.fail_first = 2
    await sandbox.webhooks(target_url=receiver.url, retry_base_seconds=0.01)
    [lead_id] = await sandbox.create_leads(count=1)
    await receiver.wait_for(1)
    assert receiver.attempts == 3
    deliveries = (await sandbox.webhooks())["deliveries"]
    assert deliveries[0]["status"] == "delivered"
    assert deliveries[0]["attempts"] == 3
    assert deliveries[0]["leadgen_ids"] == [lead_id]
    # default secret is the sandbox app secret
    expected = "sha256=" + hmac.new(sandbox.app_secret.encode(), receiver.bodies[0], hashlib.sha256).hexdigest()
    assert receiver.signatures[0] == expected


async def test_dropped_webhooks_are_found_by_backfill(sandbox: SandboxHandle, receiver: Receiver) -> None:
    await sandbox.webhooks(target_url=receiver.url, drop_rate=0.5)
    since = int(time.time()) - 5
    ids = await sandbox.create_leads(count=20)
    deliveries = (await sandbox.webhooks())["deliveries"]
    dropped = {d["leadgen_ids"][0] for d in deliveries if d["status"] == "dropped"}
    assert 0 < len(dropped) < 20
    await receiver.wait_for(20 - len(dropped))
    delivered = {str(v["leadgen_id"]) for v in receiver.leads()}
    assert delivered | dropped == set(ids)
    assert not delivered & dropped
    filtering = json.dumps([{"field": "time_created", "operator": "GREATER_THAN_OR_EQUAL", "value": since}])
    found: set[str] = set()
    for form in sandbox.state["form_ids"]:
        _, _, page = await sandbox.graph("GET", f"{form}/leads", filtering=filtering, limit=100)
        found |= {lead["id"] for lead in page["data"]}
    assert dropped <= found


async def test_generator_creates_and_delivers(sandbox: SandboxHandle, receiver: Receiver) -> None:
    await sandbox.webhooks(target_url=receiver.url, rate_per_second=50)
    await receiver.wait_for(5)
    await sandbox.webhooks(rate_per_second=0)
    assert len(receiver.leads()) >= 5


async def test_leads_older_than_90_days_are_gone(sandbox: SandboxHandle) -> None:
    form_id = sandbox.state["form_ids"][0]
    old = await sandbox.create_leads(form_id=form_id, created_time=time.time() - 91 * 86400, deliver=False)
    kept = await sandbox.create_leads(form_id=form_id, created_time=time.time() - 89 * 86400, deliver=False)
    status, _, body = await sandbox.graph("GET", old[0], fields="id,created_time")
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)
    status, _, body = await sandbox.graph("GET", kept[0], fields="id")
    assert status == 200
    since = int(time.time()) - 100 * 86400
    status, _, body = await sandbox.graph(
        "GET", f"{form_id}/leads", fields="id", limit=500,
        filtering=json.dumps([{"field": "time_created", "operator": "GREATER_THAN", "value": since}]))
    ids = {lead["id"] for lead in body["data"]}
    assert kept[0] in ids
    assert old[0] not in ids
