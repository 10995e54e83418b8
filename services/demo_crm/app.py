"""The demo CRM: what a firm's CRM does with leadwire's generic webhook, in memory, for `make up`.

`POST /hook` checks `X-Leadwire-Signature` (HMAC-SHA256 of the body with the shared secret) and honours
`Idempotency-Key` as a real endpoint should: a lead it already has is answered again and created once.
`GET /` lists the leads received (names masked); `GET /leads.json` gives counts for scripts and checks.
Leads exist only in this process's memory: it is a demo, never a place for real personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_BODY = 256 * 1024


@dataclass
class Received:
    leadgen_id: str
    contact_id: str
    received_at: float
    campaign: str
    form: str
    name: str


@dataclass
class DemoCrm:
    secret: bytes
    leads: dict[str, Received] = field(default_factory=dict)
    requests: int = 0
    rejected: int = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Leadwire-Signature", ""), expected):
            self.rejected += 1
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            lead = json.loads(body)
            leadgen_id = str(lead["leadgen_id"])
        except (ValueError, KeyError, TypeError):
            self.rejected += 1
            return web.json_response({"error": "a JSON object with leadgen_id is required"}, status=422)
        key = request.headers.get("Idempotency-Key") or leadgen_id
        if key in self.leads:
            return web.json_response({"id": self.leads[key].contact_id}, headers={"Idempotent-Replayed": "true"})
        contact = self.leads[key] = Received(
            leadgen_id=leadgen_id,
            contact_id=f"demo-{len(self.leads) + 1}",
            received_at=time.time(),
            campaign=str(lead.get("campaign_name") or lead.get("campaign_id") or ""),
            form=str(lead.get("form_name") or lead.get("form_id") or ""),
            name=_masked(lead),
        )
        return web.json_response({"id": contact.contact_id})

    async def summary(self, request: web.Request) -> web.Response:
        return web.json_response({
            "leads": len(self.leads), "requests": self.requests, "rejected": self.rejected,
            "leadgen_ids": sorted(self.leads),
        })

    async def page(self, request: web.Request) -> web.Response:
        rows = "".join(
            f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(r.received_at))}</td><td>{html.escape(r.name)}</td>"
            f"<td>{html.escape(r.campaign)}</td><td>{html.escape(r.form)}</td><td>{r.leadgen_id}</td></tr>"
            for r in sorted(self.leads.values(), key=lambda r: r.received_at, reverse=True)[:100]
        )
        text = (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5><title>Demo CRM</title>"
            "<style>body{font:14px system-ui;margin:2em}td,th{padding:.3em .8em;text-align:left}</style>"
            f"<h1>Demo CRM: {len(self.leads)} leads received</h1>"
            "<table><tr><th>received</th><th>name</th><th>campaign</th><th>form</th><th>Meta lead id</th></tr>"
            f"{rows}</table>"
        )
        return web.Response(text=text, content_type="text/html")


def _masked(lead: dict[str, Any]) -> str:
    """"Mary S." from the lead's answers: even demo data is shown as an operator should see it by default."""
    fields = lead.get("fields") if isinstance(lead.get("fields"), dict) else lead
    full = str(fields.get("full_name") or fields.get("name") or fields.get("first_name") or "").strip()
    parts = full.split()
    if not parts:
        return "(no name)"
    return parts[0] + (f" {parts[-1][0]}." if len(parts) > 1 else "")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_app(secret: str) -> web.Application:
    crm = DemoCrm(secret.encode())
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/hook", crm.hook)
    app.router.add_get("/leads.json", crm.summary)
    app.router.add_get("/", crm.page)
    app.router.add_get("/healthz", _healthz)
    return app
