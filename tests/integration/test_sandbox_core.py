"""Graph sandbox over HTTP: versioning, auth, error shape, usage headers, rate limits, faults, paging."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import aiohttp
import pytest

from tests.fixtures.sandbox import SandboxHandle


async def test_account_read_returns_only_requested_fields(sandbox: SandboxHandle) -> None:
    status, headers, body = await sandbox.graph(
        "GET", sandbox.account_id, fields="name,currency,timezone_name,account_status"
    )
    assert status == 200
    assert body == {
        "name": "Leadwire Demo (USD)",
        "currency": "USD",
        "timezone_name": "America/New_York",
        "account_status": 1,
        "id": "act_1000000001",
    }
    assert json.loads(headers["X-App-Usage"]).keys() == {"call_count", "total_time", "total_cputime"}
    usage = json.loads(headers["X-Ad-Account-Usage"])
    assert usage["ads_api_access_tier"] == "standard_access"
    assert isinstance(usage["acc_id_util_pct"], float)
    buc = json.loads(headers["X-Business-Use-Case-Usage"])
    assert buc["1000000001"][0]["type"] == "ads_management"


async def test_me_adaccounts_and_jpy_account(sandbox: SandboxHandle) -> None:
    status, _, body = await sandbox.graph("GET", "me/adaccounts", fields="name,currency")
    assert status == 200
    currencies = {a["id"]: a["currency"] for a in body["data"]}
    assert currencies == {"act_1000000001": "USD", "act_1000000002": "JPY"}


async def test_unversioned_marketing_call_fails(sandbox: SandboxHandle) -> None:
    async with sandbox.session.get(f"{sandbox.url}/{sandbox.account_id}", params={"access_token": "x"}) as resp:
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == 2635


async def test_unknown_object_is_code_100_subcode_33(sandbox: SandboxHandle) -> None:
    status, headers, body = await sandbox.graph("GET", "999999999999")
    assert status == 400
    err = body["error"]
    assert (err["code"], err["error_subcode"]) == (100, 33)
    assert "Object with ID '999999999999' does not exist" in err["message"]
    assert err["fbtrace_id"]
    assert "X-App-Usage" in headers


async def test_token_in_header_and_missing_token(sandbox: SandboxHandle) -> None:
    url = f"{sandbox.graph_url}/{sandbox.account_id}"
    async with sandbox.session.get(url, headers={"Authorization": "OAuth abc"}) as resp:
        assert resp.status == 200
    async with sandbox.session.get(url, headers={"Authorization": "Bearer abc"}) as resp:
        assert resp.status == 200
    async with sandbox.session.get(url) as resp:
        body = await resp.json()
        assert resp.status == 400
        assert body["error"]["code"] == 104


async def test_expired_token_fault(sandbox: SandboxHandle) -> None:
    await sandbox.faults(token_expired=True)
    status, _, body = await sandbox.graph("GET", sandbox.account_id)
    assert status == 400
    assert (body["error"]["code"], body["error"]["error_subcode"], body["error"]["type"]) == (
        190,
        463,
        "OAuthException",
    )
    _, _, dbg = await sandbox.graph("GET", "debug_token", input_token=sandbox.token)
    assert dbg["data"]["is_valid"] is False


async def test_appsecret_proof_is_verified(sandbox: SandboxHandle) -> None:
    good = hmac.new(sandbox.app_secret.encode(), sandbox.token.encode(), hashlib.sha256).hexdigest()
    status, _, _ = await sandbox.graph("GET", sandbox.account_id, appsecret_proof=good)
    assert status == 200
    status, _, body = await sandbox.graph("GET", sandbox.account_id, appsecret_proof="0" * 64)
    assert status == 400
    assert body["error"]["code"] == 100
    assert "appsecret_proof" in body["error"]["message"]


async def test_debug_token_is_configurable(sandbox: SandboxHandle) -> None:
    await sandbox.set_token(scopes=["ads_read"], expires_at=1900000000, type="USER")
    status, _, body = await sandbox.graph("GET", "debug_token", input_token="whatever")
    assert status == 200
    data = body["data"]
    assert data["scopes"] == ["ads_read"]
    assert (data["expires_at"], data["type"], data["is_valid"]) == (1900000000, "USER", True)
    assert data["app_id"] == sandbox.state["app_id"]


async def test_buc_throttle_blocks_scope_until_window_frees(sandbox: SandboxHandle) -> None:
    await sandbox.limits(buc={"ads_management": {"budget": 3, "window_seconds": 1.5}})
    for _ in range(3):
        status, headers, _ = await sandbox.graph("GET", sandbox.account_id)
        assert status == 200
    assert json.loads(headers["X-Business-Use-Case-Usage"])["1000000001"][0]["call_count"] == 100

    status, headers, body = await sandbox.graph("GET", sandbox.account_id)
    assert status == 400  # throttles are HTTP 400 with error.code, not 429
    assert (body["error"]["code"], body["error"]["error_subcode"]) == (80004, 2446079)
    assert body["error"]["is_transient"] is True
    entry = json.loads(headers["X-Business-Use-Case-Usage"])["1000000001"][0]
    assert entry["estimated_time_to_regain_access"] == 1  # minutes, rounded up
    regain = float(headers["X-Sandbox-Regain-Seconds"])
    assert 0 < regain <= 1.5

    # Other BUC types on the same account are independent.
    status, _, _ = await sandbox.graph("GET", f"{sandbox.account_id}/insights", date_preset="yesterday")
    assert status == 200
    # Still blocked: counted as throttled.
    status, _, body = await sandbox.graph("GET", sandbox.account_id)
    assert body["error"]["code"] == 80004
    calls = await sandbox.calls()
    assert calls["throttled"] == 2
    assert calls["by_scope"]["buc:1000000001:ads_management"] == 5

    await asyncio.sleep(regain + 0.05)  # honour the server's timer, like a well-behaved client
    status, _, _ = await sandbox.graph("GET", sandbox.account_id)
    assert status == 200


@pytest.mark.parametrize(
    ("limits", "path", "code", "subcode"),
    [
        ({"app": {"budget": 1, "window_seconds": 60}}, "act_1000000001", 4, None),
        ({"ad_account": {"budget": 1, "window_seconds": 60}}, "act_1000000001", 17, 2446079),
        ({"buc": {"ads_insights": {"budget": 1, "window_seconds": 60}}}, "act_1000000001/insights", 80000, 2446079),
        (
            {"buc": {"custom_audience": {"budget": 1, "window_seconds": 60}}},
            "act_1000000001/customaudiences",
            80003,
            2446079,
        ),
        ({"buc": {"pages": {"budget": 1, "window_seconds": 60}}}, "102030405060708", 80001, None),
    ],
)
async def test_throttle_codes_per_scope(
    sandbox: SandboxHandle, limits: dict, path: str, code: int, subcode: int | None
) -> None:
    await sandbox.limits(**limits)
    status, _, _ = await sandbox.graph("GET", path)
    assert status == 200
    status, headers, body = await sandbox.graph("GET", path)
    assert status == 400
    assert body["error"]["code"] == code
    assert body["error"].get("error_subcode") == subcode
    assert 59 <= float(headers["X-Sandbox-Regain-Seconds"]) <= 60
    if code == 17:
        assert json.loads(headers["X-Ad-Account-Usage"])["reset_time_duration"] == 60
    if code == 80000:
        throttle = json.loads(headers["X-FB-Ads-Insights-Throttle"])
        assert throttle["acc_id_util_pct"] >= 100


async def test_leadgen_throttle_is_keyed_by_page(sandbox: SandboxHandle) -> None:
    await sandbox.limits(buc={"leadgen": {"budget": 1, "window_seconds": 60}})
    form = sandbox.state["form_ids"][0]
    status, headers, _ = await sandbox.graph("GET", f"{form}/leads")
    assert status == 200
    assert "102030405060708" in json.loads(headers["X-Business-Use-Case-Usage"])
    status, _, body = await sandbox.graph("GET", f"{form}/leads")
    assert body["error"]["code"] == 80005


async def test_with_regain_header_off_only_metas_own_headers_speak(sandbox: SandboxHandle) -> None:
    await sandbox.limits(buc={"leadgen": {"budget": 4, "window_seconds": 90}}, regain_header=False)
    form = sandbox.state["form_ids"][0]
    for _ in range(3):
        status, headers, _ = await sandbox.graph("GET", f"{form}/leads")
        assert status == 200
    entry = json.loads(headers["X-Business-Use-Case-Usage"])["102030405060708"][0]
    assert (entry["type"], entry["call_count"], entry["estimated_time_to_regain_access"]) == ("leadgen", 75, 0)
    await sandbox.graph("GET", f"{form}/leads")
    status, headers, body = await sandbox.graph("GET", f"{form}/leads")
    assert (status, body["error"]["code"]) == (400, 80005)
    assert "X-Sandbox-Regain-Seconds" not in headers  # Meta never sends it
    entry = json.loads(headers["X-Business-Use-Case-Usage"])["102030405060708"][0]
    assert entry["estimated_time_to_regain_access"] == 2  # 90 s, in whole minutes (rounded up)


async def test_injected_error_fault_respects_path_regex(sandbox: SandboxHandle) -> None:
    await sandbox.faults(error_rate=1.0, path_regex=r"/campaigns$")
    status, _, body = await sandbox.graph("GET", f"{sandbox.account_id}/campaigns")
    assert status == 500
    assert body["error"]["code"] == 2
    assert body["error"]["is_transient"] is True
    status, _, _ = await sandbox.graph("GET", f"{sandbox.account_id}/adsets")
    assert status == 200
    await sandbox.faults(error={"code": 1, "message": "An unknown error occurred"}, error_status=400)
    status, _, body = await sandbox.graph("GET", f"{sandbox.account_id}/campaigns")
    assert (status, body["error"]["code"]) == (400, 1)


async def test_timeout_fault_hangs_past_client_timeout(sandbox: SandboxHandle) -> None:
    await sandbox.faults(timeout_rate=1.0, hang_seconds=30)
    timeout = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(TimeoutError):
        async with sandbox.session.get(
            f"{sandbox.graph_url}/{sandbox.account_id}", params={"access_token": "t"}, timeout=timeout
        ) as resp:
            await resp.read()


async def test_latency_fault(sandbox: SandboxHandle) -> None:
    await sandbox.faults(latency_ms=200)
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, _, _ = await sandbox.graph("GET", sandbox.account_id)
    assert status == 200
    assert loop.time() - start >= 0.19


async def test_cursor_paging_walks_all_ads_and_ends_without_next(sandbox: SandboxHandle) -> None:
    seen: list[str] = []
    status, _, page = await sandbox.graph("GET", f"{sandbox.account_id}/ads", fields="name", limit=7)
    pages = 1
    while True:
        assert status == 200
        seen.extend(a["id"] for a in page["data"])
        nxt = page.get("paging", {}).get("next")
        if not nxt:
            break
        async with sandbox.session.get(nxt) as resp:
            status, page = resp.status, await resp.json()
        pages += 1
    assert sorted(seen) == sorted(sandbox.state["accounts"][sandbox.account_id]["ads"])
    assert pages == 3


async def test_empty_pages_with_next_when_fault_enabled(sandbox: SandboxHandle) -> None:
    await sandbox.faults(empty_page_rate=0.5)
    seen: list[str] = []
    empty = 0
    status, _, page = await sandbox.graph("GET", f"{sandbox.account_id}/ads", limit=3)
    for _ in range(200):
        assert status == 200
        if not page["data"]:
            empty += 1
            assert page["paging"]["next"]
        seen.extend(a["id"] for a in page["data"])
        nxt = page.get("paging", {}).get("next")
        if not nxt:
            break
        async with sandbox.session.get(nxt) as resp:
            status, page = resp.status, await resp.json()
    assert empty > 0
    assert len(seen) == len(set(seen)) == len(sandbox.state["accounts"][sandbox.account_id]["ads"])


async def test_calls_log_and_reset(sandbox: SandboxHandle) -> None:
    await sandbox.graph("GET", sandbox.account_id)
    await sandbox.graph("GET", "nope")
    calls = await sandbox.calls()
    assert calls["total"] == 2
    assert calls["by_path"]["GET /act_1000000001"] == 1
    req = calls["requests"][0]
    assert req.keys() >= {"t", "method", "path", "scopes", "status", "throttled"}
    assert req["scopes"] == ["app", "ad_account:act_1000000001", "buc:1000000001:ads_management"]
    await sandbox.reset_calls()
    assert (await sandbox.calls())["total"] == 0


async def test_reset_restores_deterministic_state(sandbox: SandboxHandle) -> None:
    first = sandbox.state
    await sandbox.graph(
        "POST",
        f"{sandbox.account_id}/campaigns",
        name="x",
        objective="OUTCOME_LEADS",
        special_ad_categories="[]",
        is_adset_budget_sharing_enabled="false",
    )
    again = await sandbox.reset(seed=42)
    assert again["accounts"] == first["accounts"]
    big = await sandbox.reset(seed=7, ads=200, days=10)
    assert len(big["accounts"][sandbox.account_id]["ads"]) == 200
