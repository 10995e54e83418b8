"""The Graph client over HTTP against a tiny scripted aiohttp server (no sandbox needed)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from shared.graph import (
    AuthError,
    BatchRequest,
    GraphClient,
    GraphConnectionError,
    NotFoundError,
    Priority,
    RetryPolicy,
    Scope,
    ThrottledError,
    TransientError,
    appsecret_proof,
)
from shared.graph.batch import execute_dependent_batch
from shared.graph.errors import AsyncJobFailedError, AsyncJobSkippedError
from shared.graph.insights_jobs import PollPolicy, poll_report_runs, run_report
from shared.graph.usage import budget_edit_key
from shared.settings import MetaSettings

TOKEN = "EAAB-system-user-token-SECRET"
PAGE_TOKEN = "EAAB-page-token-SECRET"
APP_SECRET = "app-secret-SECRET"

Responder = Callable[[dict[str, Any]], Any]


class FakeClock:
    """Clock + sleep that advance virtual time instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Fake:
    """Records every request; answers via `responder(request_dict) -> (status, body, headers)`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.responder: Responder = lambda req: (200, {"id": "1"}, {})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post()) if request.method == "POST" else {}
        req = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "form": {k: str(v) for k, v in form.items()},
            "url": str(request.url),
        }
        self.requests.append(req)
        status, body, headers = self.responder(req)
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, headers=headers, content_type="application/json")


@pytest.fixture
async def fake():
    fake = Fake()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_client(fake, session, clock):
    def make(**kwargs: Any) -> GraphClient:
        settings = MetaSettings(
            access_token=SecretStr(TOKEN), app_secret=SecretStr(APP_SECRET), graph_url=fake.url,
            request_timeout_seconds=5,
        )
        kwargs.setdefault("registry", CollectorRegistry())
        kwargs.setdefault("retry", RetryPolicy(backoff_base=0.1))
        kwargs.setdefault("sleep", clock.sleep)
        return GraphClient(session, settings, clock=clock, **kwargs)

    return make


def _throttle(code: int, subcode: int | None = None, headers: dict[str, str] | None = None):
    err = {"message": f"(#{code}) limit", "type": "OAuthException", "code": code, "fbtrace_id": "T1"}
    if subcode:
        err["error_subcode"] = subcode
    return 400, {"error": err}, headers or {}


async def test_version_in_url_token_in_header_and_proof(fake, make_client):
    client = make_client()
    assert await client.get("act_1/campaigns", {"fields": ["id", "name"], "limit": 5}) == {"id": "1"}
    req = fake.requests[0]
    assert req["path"] == "/v26.0/act_1/campaigns"
    assert req["headers"]["Authorization"] == f"OAuth {TOKEN}"
    assert "access_token" not in req["query"]
    assert TOKEN not in req["url"]
    assert req["query"]["fields"] == '["id","name"]'
    assert req["query"]["appsecret_proof"] == appsecret_proof(APP_SECRET, TOKEN)
    # A page token gets its own proof.
    await client.post("123/subscribed_apps", {"subscribed_fields": "leadgen"}, token=SecretStr(PAGE_TOKEN))
    req = fake.requests[1]
    assert req["headers"]["Authorization"] == f"OAuth {PAGE_TOKEN}"
    assert req["form"]["appsecret_proof"] == appsecret_proof(APP_SECRET, PAGE_TOKEN)
    assert req["form"]["subscribed_fields"] == "leadgen"


async def test_auth_error_is_one_call_no_retry(fake, make_client, caplog):
    fake.responder = lambda req: (400, {"error": {"message": "Error validating access token", "code": 190,
                                                  "error_subcode": 463, "type": "OAuthException"}}, {})
    client = make_client()
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as info:
        await client.get("me")
    assert len(fake.requests) == 1
    assert info.value.subcode == 463
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)
    assert all(TOKEN not in r.getMessage() and APP_SECRET not in r.getMessage() for r in caplog.records)


async def test_transient_errors_retry_with_backoff_then_succeed(fake, make_client, clock):
    answers = iter([(500, {"error": {"message": "x", "code": 2, "is_transient": True}}, {}),
                    (503, "<html>busy</html>", {}),
                    (200, {"id": "ok"}, {})])
    fake.responder = lambda req: next(answers)
    client = make_client()
    assert await client.get("123") == {"id": "ok"}
    assert len(fake.requests) == 3
    assert len(clock.sleeps) == 2
    assert all(0 <= s <= 0.2 for s in clock.sleeps)  # full jitter under the exponential ceiling


async def test_transient_errors_are_bounded(fake, make_client):
    fake.responder = lambda req: (500, {"error": {"message": "x", "code": 1}}, {})
    client = make_client(retry=RetryPolicy(max_attempts=3, backoff_base=0.01))
    with pytest.raises(TransientError):
        await client.get("123")
    assert len(fake.requests) == 3


async def test_not_found_is_not_retried(fake, make_client):
    fake.responder = lambda req: (400, {"error": {"message": "does not exist", "code": 100, "error_subcode": 33}}, {})
    with pytest.raises(NotFoundError):
        await make_client().get("999")
    assert len(fake.requests) == 1


async def test_throttle_blocks_scope_then_retries_after_regain(fake, make_client, clock):
    calls = []

    def responder(req):
        calls.append(clock.now)
        if len(calls) == 1:
            return _throttle(80004, 2446079, {"X-Business-Use-Case-Usage": json.dumps(
                {"1": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 2}]})})
        return 200, {"data": []}, {}

    fake.responder = responder
    client = make_client()
    assert await client.get("act_1/campaigns") == {"data": []}
    assert calls[1] - calls[0] >= 120.0  # minutes from the header
    assert client.usage.blocked_for("buc:1:ads_management") == 0


async def test_sandbox_regain_header_wins_and_other_scopes_flow(fake, make_client, clock):
    def responder(req):
        if "act_1" in req["path"] and len([r for r in fake.requests if "act_1" in r["path"]]) == 1:
            usage = '{"acc_id_util_pct": 100, "reset_time_duration": 300}'
            return _throttle(17, 2446079, {"X-Sandbox-Regain-Seconds": "3.000", "X-Ad-Account-Usage": usage})
        return 200, {"ok": True}, {}

    fake.responder = responder
    client = make_client(max_wait=1.0)
    with pytest.raises(ThrottledError) as info:
        await client.get("act_1/campaigns")
    assert info.value.scope == "ad_account:act_1"
    assert info.value.retry_after == pytest.approx(3.0)
    # While blocked: no call reaches act_1 (raised before any HTTP), act_2 keeps flowing.
    with pytest.raises(ThrottledError):
        await client.get("act_1/adsets")
    assert await client.get("act_2/campaigns") == {"ok": True}
    assert [r["path"] for r in fake.requests] == ["/v26.0/act_1/campaigns", "/v26.0/act_2/campaigns"]
    clock.now += 3.0
    assert await client.get("act_1/adsets") == {"ok": True}


async def test_too_many_budget_changes_blocks_budget_writes_only(fake, make_client, clock):
    """613/1487632: Meta blocks the ad set's budget changes for an hour, not its other edits (a pause)."""
    answers = iter([_throttle(613, 1487632)])
    fake.responder = lambda req: next(answers, (200, {"success": True}, {}))
    client = make_client(max_wait=1.0)
    budget = Scope.key(budget_edit_key("77"))
    with pytest.raises(ThrottledError) as info:
        await client.post("77", {"daily_budget": 5000}, scope=budget)
    assert info.value.scope == "action:budget /77"
    assert info.value.retry_after == pytest.approx(3600.0)
    assert await client.post("77", {"status": "PAUSED"}) == {"success": True}  # a pause still goes through
    with pytest.raises(ThrottledError):  # another budget write waits for the block, without a call
        await client.post("77", {"daily_budget": 4000}, scope=budget)
    assert len(fake.requests) == 2
    clock.now += 3600.0
    assert await client.post("77", {"daily_budget": 4000}, scope=budget) == {"success": True}


async def test_max_wait_none_waits_out_the_block(fake, make_client, clock):
    answers = iter([_throttle(4, None, {"X-Sandbox-Regain-Seconds": "30"}), (200, {"id": "1"}, {})])
    fake.responder = lambda req: next(answers)
    client = make_client(max_wait=None)
    assert await client.get("123") == {"id": "1"}
    assert clock.sleeps == [pytest.approx(30.0)]


async def test_network_errors_retry_gets_but_not_posts(fake, make_client, session, clock):
    settings = MetaSettings(access_token=SecretStr(TOKEN), graph_url="http://127.0.0.1:1")
    client = GraphClient(session, settings, registry=CollectorRegistry(), clock=clock, sleep=clock.sleep,
                         retry=RetryPolicy(max_attempts=3, backoff_base=0.01))
    with pytest.raises(GraphConnectionError) as info:
        await client.get("123")
    assert len(clock.sleeps) == 2  # connection refused: retried (nothing was sent)
    assert TOKEN not in str(info.value)


async def test_paginate_follows_next_through_empty_pages_without_token_in_url(fake, make_client):
    def responder(req):
        after = int(req["query"].get("after", "0"))
        if after >= 6:
            return 200, {"data": [{"id": str(after)}]}, {}
        data = [] if after == 2 else [{"id": str(after)}, {"id": str(after + 1)}]
        nxt = f"{fake.url}/v26.0/act_1/campaigns?access_token={TOKEN}&limit=2&after={after + 2}"
        return 200, {"data": data, "paging": {"next": nxt}}, {}

    fake.responder = responder
    client = make_client()
    items = [item["id"] async for item in client.paginate("act_1/campaigns", {"limit": 2})]
    assert items == ["0", "1", "4", "5", "6"]
    assert all(TOKEN not in r["url"] for r in fake.requests)
    assert client.usage.account_of("4") == "act_1"  # objects learned for scope resolution


async def test_batch_partial_failure_retries_only_failed_items(fake, make_client):
    seen: list[list[str]] = []

    def responder(req):
        ops = json.loads(req["form"]["batch"])
        assert req["form"]["include_headers"] == "true"
        assert req["form"]["access_token"] == TOKEN
        assert req["form"]["appsecret_proof"] == appsecret_proof(APP_SECRET, TOKEN)
        seen.append([op["relative_url"] for op in ops])
        out = []
        for op in ops:
            url = op["relative_url"]
            if url.endswith("/2") and len(seen) == 1:
                out.append({"code": 500, "headers": [], "body": json.dumps(
                    {"error": {"message": "x", "code": 2, "is_transient": True}})})
            elif url.endswith("/3") and len(seen) == 1:
                out.append(None)
            elif url.endswith("/4"):
                out.append({"code": 400, "headers": [], "body": json.dumps(
                    {"error": {"message": "nope", "code": 100, "error_subcode": 33}})})
            else:
                out.append({"code": 200, "headers": [{"name": "X-App-Usage", "value": '{"call_count": 5}'}],
                            "body": json.dumps({"id": url.rsplit("/", 1)[-1]})})
        return 200, out, {}

    fake.responder = responder
    client = make_client()
    results = await client.batch([BatchRequest.get(f"{i}") for i in range(1, 5)])
    assert [r.ok for r in results] == [True, True, True, False]
    assert [r.body["id"] for r in results[:3]] == ["1", "2", "3"]
    assert isinstance(results[3].error, NotFoundError)
    assert seen == [["v26.0/1", "v26.0/2", "v26.0/3", "v26.0/4"], ["v26.0/2", "v26.0/3"]]
    assert client.usage.current_pct("app") == 5


async def test_dependent_batch_keeps_references_and_is_sent_once(fake, make_client):
    sent: list[list[dict[str, Any]]] = []

    def responder(req):
        ops = json.loads(req["form"]["batch"])
        sent.append(ops)
        usage = [{"name": "X-App-Usage", "value": '{"call_count": 7}'}]
        transient = json.dumps({"error": {"message": "x", "code": 2, "is_transient": True}})
        created = {"code": 200, "headers": usage, "body": '{"id": "c1"}'}
        return 200, [created, {"code": 500, "headers": [], "body": transient}, None], {}

    fake.responder = responder
    requests = [
        BatchRequest("POST", "act_1/campaigns", {"name": "C"}, name="campaign"),
        BatchRequest("POST", "act_1/adsets", {"campaign_id": "{result=campaign:$.id}"}, name="adset"),
        BatchRequest("POST", "act_1/ads", {"adset_id": "{result=adset:$.id}"}, name="ad"),
    ]
    client = make_client()
    results = await execute_dependent_batch(client, requests, max_wait=None)
    [ops] = sent  # never retried item by item: the names referred to exist only within one batch
    assert [op["name"] for op in ops] == ["campaign", "adset", "ad"]
    assert all(op["omit_response_on_success"] is False for op in ops)
    assert ops[1]["body"] == "campaign_id={result=campaign:$.id}"
    assert results[0].ok
    assert results[0].body == {"id": "c1"}
    assert isinstance(results[1].error, TransientError)
    assert isinstance(results[2].error, TransientError)  # null: the batch timed out before it ran
    assert client.usage.current_pct("app") == 7  # each item's headers feed the usage state


async def test_batch_splits_at_50(fake, make_client):
    sizes = []

    def responder(req):
        ops = json.loads(req["form"]["batch"])
        sizes.append(len(ops))
        return 200, [{"code": 200, "headers": [], "body": "{}"} for _ in ops], {}

    fake.responder = responder
    results = await make_client().batch([BatchRequest.get(str(i)) for i in range(120)])
    assert sizes == [50, 50, 20]
    assert all(r.ok for r in results)


async def test_async_report_run_success_failure_and_skip(fake, make_client):
    polls = {"n": 0}
    mode = {"status": "Job Completed"}

    def responder(req):
        path = req["path"]
        if req["method"] == "POST" and path.endswith("/insights"):
            return 200, {"report_run_id": "777"}, {}
        if path == "/v26.0/777":
            polls["n"] += 1
            if polls["n"] < 3:
                return 200, {"id": "777", "async_status": "Job Running", "async_percent_completion": 50}, {}
            if mode["status"] == "Job Failed":
                return 200, {"id": "777", "async_status": "Job Failed", "async_percent_completion": 0,
                             "error_code": 2, "error_subcode": 1504043, "error_message": "backend"}, {}
            return 200, {"id": "777", "async_status": mode["status"], "async_percent_completion": 100}, {}
        if path == "/v26.0/777/insights":
            return 200, {"data": [{"spend": "1.00"}, {"spend": "2.00"}]}, {}
        if path == "/v26.0/":
            ops = json.loads(req["form"]["batch"])
            return 200, [{"code": 200, "headers": [], "body": json.dumps(
                {"id": op["relative_url"].split("/")[1].split("?")[0], "async_status": "Job Skipped"})}
                for op in ops], {}
        return 404, {"error": {"message": "?", "code": 100}}, {}

    fake.responder = responder
    client = make_client()
    rows = await run_report(client, "act_1", {"level": "ad"}, poll=PollPolicy(initial=1.0))
    assert rows == [{"spend": "1.00"}, {"spend": "2.00"}]
    polls["n"] = 0
    mode["status"] = "Job Failed"
    with pytest.raises(AsyncJobFailedError) as info:
        await run_report(client, "act_1", {"level": "ad"})
    assert (info.value.code, info.value.subcode, info.value.report_run_id) == (2, 1504043, "777")
    polls["n"] = 0
    mode["status"] = "Job Skipped"
    with pytest.raises(AsyncJobSkippedError):
        await run_report(client, "act_1", {"level": "ad"})
    statuses = await poll_report_runs(client, ["1", "2"])
    assert all(isinstance(v, AsyncJobSkippedError) for v in statuses.values())


async def test_pacing_slows_calls_as_usage_rises(fake, make_client, clock):
    count = {"n": 0}

    def responder(req):
        count["n"] += 1
        return 200, {"id": "1"}, {"X-App-Usage": json.dumps({"call_count": count["n"]})}  # budget 100

    fake.responder = responder
    client = make_client(usage_windows={"app": 10.0})
    gaps = []
    for _ in range(99):
        before = clock.now
        await client.get("me", scope=Scope.key("app"))
        gaps.append(clock.now - before)
    assert sum(gaps[:70]) == 0  # no slowdown below the threshold
    assert 0 < gaps[80] < gaps[95]  # grows with usage
    assert count["n"] == 99


def test_metrics_registered_once_per_registry(session):
    registry = CollectorRegistry()
    settings = MetaSettings(access_token=SecretStr(TOKEN))
    a = GraphClient(session, settings, registry=registry)
    b = GraphClient(session, settings, registry=registry)
    assert a.metrics is b.metrics
    assert TOKEN not in repr(a)


async def test_a_throttle_without_a_regain_time_blocks_no_longer_than_a_probe_interval(fake, make_client, clock):
    answers = iter([_throttle(80005), _throttle(80005), _throttle(80005), _throttle(80005), (200, {"id": "1"}, {})])
    fake.responder = lambda req: next(answers)
    client = make_client(max_wait=None)
    client.usage.probe_interval = 90.0
    assert await client.get("123", scope=Scope.leadgen("77")) == {"id": "1"}
    # Meta gave no time: the fallback (60 s, doubling) never holds the Page's lead reads past one probe interval.
    assert [round(s) for s in clock.sleeps] == [60, 90, 90, 90]


async def test_lead_reads_go_before_background_calls_in_the_same_scope(fake, make_client, clock):
    order: list[str] = []
    fake.responder = lambda req: (order.append(req["path"].rsplit("/", 1)[-1]), (200, {"id": "1"}, {}))[1]
    gate = asyncio.Event()

    async def gated_sleep(seconds: float) -> None:
        await gate.wait()
        await asyncio.sleep(0.001)  # let the other task's HTTP call progress
        clock.now += seconds

    client = make_client(max_wait=None, sleep=gated_sleep)
    client.usage.block("buc:77:leadgen", 5.0)
    lead = asyncio.ensure_future(client.get("2002", scope=Scope.leadgen("77")))
    await asyncio.sleep(0.01)  # the lead read waits out the block
    clock.now += 5.0  # the block is over, but the lead read has not woken up yet
    background = asyncio.ensure_future(client.get("1001", scope=Scope.leadgen("77", Priority.BACKGROUND)))
    await asyncio.sleep(0.01)
    assert order == []  # the backfill did not jump ahead of the waiting lead read
    gate.set()
    await asyncio.gather(background, lead)
    assert order == ["2002", "1001"]
