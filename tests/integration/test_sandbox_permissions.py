"""The sandbox refuses what the token has no permission for, as Meta does (code 200 or 10, never retried), and
`POST /_sandbox/token` revokes and grants permissions at run time (debug_token shows them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.sandbox import SandboxHandle

PAGE_ID = "102030405060708"


@dataclass(frozen=True)
class Call:
    """One call of a route family: what to revoke to have it refused, and Meta's answer then."""

    name: str
    revoke: tuple[str, ...]
    method: str
    path: str  # {lead} {form} {ad} {campaign} {account} {page} are filled in from the sandbox's state
    params: dict[str, Any]
    code: int = 200
    page_token: bool = False


CALLS = [
    Call("a lead", ("leads_retrieval",), "GET", "{lead}", {"fields": "id,field_data"}),
    Call("a lead, no pages_manage_ads", ("pages_manage_ads",), "GET", "{lead}", {"fields": "id"}),
    Call("a form's leads", ("leads_retrieval",), "GET", "{form}/leads", {"fields": "id"}),
    Call("an ad's leads", ("leads_retrieval",), "GET", "{ad}/leads", {"fields": "id"}),
    Call("a campaign update", ("ads_management",), "POST", "{campaign}", {"name": "Renamed"}),
    Call("an ad account read", ("ads_read", "ads_management"), "GET", "{account}", {"fields": "name"}),
    Call("insights", ("ads_read", "ads_management"), "GET", "{account}/insights", {"fields": "spend"}),
    Call("the Page's forms", ("pages_manage_ads",), "GET", "{page}/leadgen_forms", {"fields": "id"},
         page_token=True),
    Call("the Page's app installs", ("pages_manage_metadata",), "GET", "{page}/subscribed_apps", {},
         page_token=True),
    Call("installing the app for leadgen", ("leads_retrieval",), "POST", "{page}/subscribed_apps",
         {"subscribed_fields": "leadgen"}, page_token=True),
    Call("the Page's token", ("pages_read_engagement",), "GET", "{page}", {"fields": "access_token"}, code=10),
]


async def _ids(sandbox: SandboxHandle) -> dict[str, str]:
    [lead] = await sandbox.create_leads(count=1, deliver=False)
    account = sandbox.state["accounts"][sandbox.account_id]
    return {"lead": lead, "form": sandbox.state["form_ids"][0], "ad": account["ads"][0],
            "campaign": account["campaigns"][0], "account": sandbox.account_id, "page": PAGE_ID}


async def _call(sandbox: SandboxHandle, call: Call, ids: dict[str, str]) -> tuple[int, Any]:
    token = sandbox.page_token if call.page_token else None
    status, _, body = await sandbox.graph(call.method, call.path.format(**ids), token=token, **call.params)
    return status, body


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
async def test_each_family_is_refused_without_its_permission_and_allowed_with_it(
    sandbox: SandboxHandle, call: Call
) -> None:
    ids = await _ids(sandbox)
    await sandbox.set_token(revoke=list(call.revoke))

    status, body = await _call(sandbox, call, ids)
    assert status == 400, body
    err = body["error"]
    assert (err["code"], err["type"], err["is_transient"]) == (call.code, "OAuthException", False)
    assert err["message"].startswith(f"(#{call.code}) ")
    assert call.revoke[0] in err["message"]
    assert err["fbtrace_id"]

    await sandbox.set_token(grant=list(call.revoke))
    status, body = await _call(sandbox, call, ids)
    assert status == 200, body


async def test_reads_need_ads_read_or_ads_management_writes_ads_management(sandbox: SandboxHandle) -> None:
    campaign = sandbox.state["accounts"][sandbox.account_id]["campaigns"][0]
    await sandbox.set_token(revoke=["ads_management"])  # ads_read alone: Ads Manager's "analyst"
    assert (await sandbox.graph("GET", campaign, fields="name"))[0] == 200
    assert (await sandbox.graph("GET", f"{sandbox.account_id}/insights", fields="spend"))[0] == 200
    status, _, body = await sandbox.graph("POST", campaign, status="PAUSED")
    assert (status, body["error"]["code"]) == (400, 200)
    assert body["error"]["message"] == "(#200) Requires ads_management permission to manage the object"


async def test_a_batch_item_is_refused_like_a_single_call(sandbox: SandboxHandle) -> None:
    [lead] = await sandbox.create_leads(count=1, deliver=False)
    await sandbox.set_token(revoke=["leads_retrieval"])
    batch = '[{"method":"GET","relative_url":"' + lead + '?fields=id"}]'
    status, _, body = await sandbox.graph("POST", "", batch=batch)
    assert status == 200
    assert body[0]["code"] == 400
    assert '"code":200' in body[0]["body"].replace(" ", "")
    assert "leads_retrieval" in body[0]["body"]


async def test_debug_token_shows_revoked_and_granted_permissions(sandbox: SandboxHandle) -> None:
    before = (await sandbox.graph("GET", "debug_token", input_token=sandbox.token))[2]["data"]["scopes"]
    assert "leads_retrieval" in before

    token = await sandbox.set_token(revoke=["leads_retrieval", "pages_manage_ads"])
    assert "leads_retrieval" not in token["scopes"]
    data = (await sandbox.graph("GET", "debug_token", input_token=sandbox.token))[2]["data"]
    assert [s for s in before if s not in ("leads_retrieval", "pages_manage_ads")] == data["scopes"]
    assert {g["scope"] for g in data["granular_scopes"]} == set(data["scopes"])

    await sandbox.set_token(grant=["leads_retrieval", "leads_retrieval"])  # granting twice holds it once
    data = (await sandbox.graph("GET", "debug_token", input_token=sandbox.token))[2]["data"]
    assert data["scopes"].count("leads_retrieval") == 1
    assert "pages_manage_ads" not in data["scopes"]

    await sandbox.reset()  # a reset gives the token every permission back
    assert (await sandbox.graph("GET", "debug_token", input_token=sandbox.token))[2]["data"]["scopes"] == before


@pytest.mark.parametrize("body", [{"revoke": "leads_retrieval"}, {"grant": [1]}, {"scope": ["ads_read"]}])
async def test_the_token_knob_refuses_what_it_cannot_mean(sandbox: SandboxHandle, body: dict[str, Any]) -> None:
    async with sandbox.session.post(f"{sandbox.url}/_sandbox/token", json=body) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
