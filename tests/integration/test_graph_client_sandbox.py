"""The Graph client against the Graph sandbox over HTTP: limits, blocks, batch, paging, async reports, auth.

Short sandbox windows (seconds) and matching client windows keep these fast. No test sleeps to wait for a
condition: the client's own pacing is what is under test, and the sandbox's call log is the witness.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from shared.graph import AuthError, BatchRequest, GraphClient, Scope, ThrottledError
from shared.graph.errors import AsyncJobFailedError, AsyncJobSkippedError, InvalidRequestError
from shared.graph.insights_jobs import PollPolicy, poll_report_runs, run_report, start_report_run
from shared.settings import MetaSettings
from tests.fixtures.sandbox import SANDBOX_APP_SECRET, SandboxHandle

TOKEN = "EAAB-integration-token-SECRET-xyz"
APP_SECRET = SANDBOX_APP_SECRET
ACCOUNT = "act_1000000001"
OTHER_ACCOUNT = "act_1000000002"

pytestmark = pytest.mark.timeout(60)


class Sandbox:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http
        self.state: dict[str, Any] = {}

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        method = "POST" if body is not None else "GET"
        async with self.http.request(method, f"{self.url}/_sandbox/{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def calls(self) -> dict[str, Any]:
        return await self.control("calls")


@pytest.fixture
async def graph_sandbox(sandbox: SandboxHandle) -> Sandbox:
    """The shared sandbox (reset for each test), behind this module's two-argument control helper."""
    sb = Sandbox(sandbox.url, sandbox.session)
    sb.state = sandbox.state
    return sb


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def make_client(session, sb: Sandbox, window: float = 2.0, **kwargs: Any) -> GraphClient:
    settings = MetaSettings(
        access_token=SecretStr(TOKEN), app_secret=SecretStr(APP_SECRET), graph_url=sb.url, request_timeout_seconds=5
    )
    kwargs.setdefault("registry", CollectorRegistry())
    windows = {"app": window, "ad_account": window, "buc": window, "insights": window}
    return GraphClient(session, settings, usage_windows=windows, **kwargs)


async def test_auth_error_is_one_http_call(graph_sandbox, session, caplog):
    await graph_sandbox.control("faults", {"token_expired": True})
    client = make_client(session, graph_sandbox)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as info:
        await client.get(f"{ACCOUNT}/campaigns")
    assert info.value.code == 190
    assert (await graph_sandbox.calls())["total"] == 1
    assert TOKEN not in str(info.value)
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_no_call_in_blocked_scope_and_work_completes_after_regain(graph_sandbox, session):
    await graph_sandbox.control("limits", {"ad_account": {"budget": 10, "window_seconds": 2.0}})
    # Someone else, with no pacing at all, runs the account into a block.
    for _ in range(12):
        async with session.get(f"{graph_sandbox.url}/v26.0/{ACCOUNT}/campaigns",
                               headers={"Authorization": f"OAuth {TOKEN}"}) as resp:
            await resp.read()
    before = len((await graph_sandbox.calls())["requests"])
    client = make_client(session, graph_sandbox, max_wait=None)
    started = time.monotonic()
    results = await asyncio.gather(*(client.get(f"{ACCOUNT}/campaigns") for _ in range(5)))
    elapsed = time.monotonic() - started
    assert len(results) == 5
    mine = (await graph_sandbox.calls())["requests"][before:]
    # Each of the five calls launched together may meet the block once; after that no call reaches the scope
    # until its regain time, and all the work completes.
    throttled = [r for r in mine if r["throttled"]]
    assert 1 <= len(throttled) <= 5
    last_throttle = max(r["t"] for r in throttled)
    after = [r for r in mine if r["t"] > last_throttle]
    assert len(after) == 5
    assert not any(r["throttled"] for r in after)
    assert min(r["t"] for r in after) - last_throttle >= 1.0  # waited for the regain time
    assert elapsed < 10


async def test_sequential_calls_slow_down_before_the_limit_and_never_throttle(graph_sandbox, session):
    await graph_sandbox.control("limits", {"ad_account": {"budget": 40, "window_seconds": 2.0}})
    client = make_client(session, graph_sandbox)
    for _ in range(100):
        await client.get(f"{ACCOUNT}/campaigns")
    calls = await graph_sandbox.calls()
    assert calls["throttled"] == 0
    times = [r["t"] for r in calls["requests"]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    early = sum(gaps[:25]) / 25
    near_limit = sum(gaps[30:38]) / 8
    assert near_limit > early * 3  # slowed down as usage rose past 75 %
    assert times[-1] - times[0] >= 2.0  # 100 calls at 40 per 2 s cannot be faster than ~2 windows


async def test_concurrent_calls_warm_up_then_no_throttles(graph_sandbox, session):
    await graph_sandbox.control("limits", {"app": {"budget": 60, "window_seconds": 1.5}})
    client = make_client(session, graph_sandbox, window=1.5)
    await client.get(f"{ACCOUNT}/campaigns")  # warm-up: one reading
    sem = asyncio.Semaphore(8)

    async def one() -> None:
        async with sem:
            await client.get(f"{ACCOUNT}/campaigns")

    await asyncio.gather(*(one() for _ in range(150)))
    assert (await graph_sandbox.calls())["throttled"] == 0


async def test_one_blocked_account_does_not_delay_another(graph_sandbox, session):
    await graph_sandbox.control("limits", {"ad_account": {"budget": 5, "window_seconds": 30.0}})
    client = make_client(session, graph_sandbox, window=30.0, max_wait=1.0)
    for _ in range(4):
        await client.get(f"{ACCOUNT}/campaigns", max_wait=None)
    # 80 % used: the next call on ACCOUNT would have to wait ~30 s for room (the client keeps a one-unit
    # margin for Meta's rounding), so it raises at once, without an HTTP call.
    before = (await graph_sandbox.calls())["total"]
    with pytest.raises(ThrottledError) as info:
        await client.get(f"{ACCOUNT}/campaigns")
    assert info.value.retry_after is not None
    assert info.value.retry_after > 1.0
    assert info.value.scope in (f"ad_account:{ACCOUNT}", "buc:1000000001:ads_management")
    assert (await graph_sandbox.calls())["total"] == before
    started = time.monotonic()
    await client.get(f"{OTHER_ACCOUNT}/campaigns")
    assert time.monotonic() - started < 0.5
    assert (await graph_sandbox.calls())["throttled"] == 0


async def test_batch_with_null_items_retries_only_those(graph_sandbox, session):
    ads = graph_sandbox.state["accounts"][ACCOUNT]["ads"]
    await graph_sandbox.control("faults", {"batch_null_rate": 0.3})
    client = make_client(session, graph_sandbox)
    requests = [BatchRequest.get(ad, {"fields": "id,name"}) for ad in ads] + [BatchRequest.get("999999")]
    results = await client.batch(requests)
    assert [r.body["id"] for r in results[:-1]] == ads
    assert results[-1].error is not None
    assert results[-1].error.subcode == 33
    calls = await graph_sandbox.calls()
    per_path = {path: n for path, n in calls["by_path"].items() if path.startswith("GET /")}
    # Every ad ran exactly once (null items never ran; only they were retried).
    assert all(per_path[f"GET /{ad}"] == 1 for ad in ads)
    assert per_path["GET /999999"] == 1  # a permanent error is not retried


async def test_pagination_over_thousands_with_empty_pages(graph_sandbox, session):
    state = await graph_sandbox.control("reset", {"seed": 7, "ads": 3000})
    await graph_sandbox.control("faults", {"empty_page_rate": 0.2})
    client = make_client(session, graph_sandbox)
    ids = [item["id"] async for item in client.paginate(f"{ACCOUNT}/ads", {"fields": "id", "limit": 200})]
    assert len(ids) == len(set(ids)) == len(state["accounts"][ACCOUNT]["ads"])
    assert len(ids) >= 2500
    calls = await graph_sandbox.calls()
    assert calls["total"] > len(ids) // 200  # empty pages were followed, not taken as the end


async def test_async_report_run_success_failure_and_skip(graph_sandbox, session):
    client = make_client(session, graph_sandbox)
    fast = PollPolicy(initial=0.01, maximum=0.05)
    params = {"level": "campaign", "fields": ["spend", "impressions"], "date_preset": "last_7d"}
    rows = await run_report(client, ACCOUNT, params, poll=fast)
    assert rows
    assert all("spend" in row for row in rows)
    await graph_sandbox.control("insights", {"job_fail": True})
    with pytest.raises(AsyncJobFailedError) as failed:
        await run_report(client, ACCOUNT, params, poll=fast)
    assert failed.value.report_run_id
    await graph_sandbox.control("insights", {"job_fail": False, "job_skip": True})
    with pytest.raises(AsyncJobSkippedError):
        await run_report(client, ACCOUNT, params, poll=fast)
    run_ids = [await start_report_run(client, ACCOUNT, params) for _ in range(3)]
    statuses = await poll_report_runs(client, run_ids, scope=Scope.ad_account(ACCOUNT))
    assert set(statuses) == set(run_ids)


async def _failure(call: Any) -> str:
    """str + repr of the exception a call raised ('' when it succeeded)."""
    try:
        await call
    except Exception as exc:  # any failure must be token-free
        return f"{exc} {exc!r}"
    return ""


async def test_token_never_logged_across_errors(graph_sandbox, session, caplog):
    client = make_client(session, graph_sandbox, max_wait=0.5)
    await graph_sandbox.control("limits", {"ad_account": {"budget": 3, "window_seconds": 10.0}})
    await graph_sandbox.control("faults", {"error_rate": 0.3})
    with caplog.at_level(logging.DEBUG):
        for _ in range(8):
            failure = await _failure(client.get(f"{ACCOUNT}/campaigns"))
            assert TOKEN not in failure
        await client.batch([BatchRequest.get("999999")])
        async for _ in client.paginate(f"{OTHER_ACCOUNT}/campaigns", {"limit": 1}):
            pass
        await graph_sandbox.control("faults", {"token_expired": True, "error_rate": 0})
        with pytest.raises(AuthError):
            await client.get("me")
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + str(record.args) + str(record.__dict__)
        assert TOKEN not in text
        assert APP_SECRET not in text


async def test_json_body_carries_the_appsecret_proof_and_structured_data(graph_sandbox, session):
    event = {"event_name": "Lead", "event_time": int(time.time()), "action_source": "system_generated",
             "user_data": {"lead_id": "123456789012345"}}
    pixel = graph_sandbox.state["pixel_id"]
    client = make_client(session, graph_sandbox)
    result = await client.post(f"{pixel}/events", {"data": [event], "test_event_code": "TEST1"}, json_body=True)
    assert result["events_received"] == 1
    stored = (await graph_sandbox.control(f"capi/events?pixel_id={pixel}"))["events"]
    assert [(e["event"], e["test_event_code"]) for e in stored] == [(event, "TEST1")]
    assert await graph_sandbox.control(f"capi/events?pixel_id={pixel}&count_only=1") == {"count": 1, "requests": 1}

    wrong = MetaSettings(access_token=SecretStr(TOKEN), app_secret=SecretStr("not-the-app-secret"),
                         graph_url=graph_sandbox.url, request_timeout_seconds=5)
    with pytest.raises(InvalidRequestError, match="appsecret_proof"):  # checked in a JSON body as in a form
        await GraphClient(session, wrong, registry=CollectorRegistry()).post(
            f"{pixel}/events", {"data": [event]}, json_body=True)
