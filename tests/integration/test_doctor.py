"""Connection health against the Graph sandbox: what is wrong, and how to fix it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from contracts.alerts import AlertRaised
from shared.doctor import HealthMonitor, check_token, run_checks, subscribe_pages
from shared.graph import GraphClient, RetryPolicy
from shared.settings import MetaSettings
from tests.fixtures.sandbox import SandboxHandle

PAGE_ID = "102030405060708"
PIXEL_ID = "778899001122334"


@pytest.fixture
async def graph_and_meta(sandbox: SandboxHandle) -> AsyncIterator[tuple[GraphClient, MetaSettings]]:
    meta = MetaSettings(
        access_token=sandbox.token,
        page_access_token=sandbox.page_token,  # Meta: the Page's subscriptions and forms take its Page token
        app_secret=sandbox.app_secret,
        app_id=sandbox.state.get("app_id", ""),
        graph_url=sandbox.url,
        ad_account_id=[sandbox.account_id],
        page_ids=[PAGE_ID],
        pixel_id=PIXEL_ID,
    )
    async with aiohttp.ClientSession() as session:
        yield GraphClient(session, meta, max_wait=5), meta


def _by_check(findings: list[Any]) -> dict[str, Any]:
    return {f"{f.check}:{f.subject}": f for f in findings}


async def test_healthy_setup_after_pages_subscribe(graph_and_meta: tuple[GraphClient, MetaSettings]) -> None:
    graph, meta = graph_and_meta
    before = _by_check(await run_checks(graph, meta))
    assert not before[f"leadgen subscription:{PAGE_ID}"].ok
    assert before[f"leadgen subscription:{PAGE_ID}"].fix == "run `leadwire pages subscribe`"

    assert all(f.ok for f in await subscribe_pages(graph, meta))
    after = await run_checks(graph, meta)
    assert [f.render() for f in after if not f.ok] == []
    checks = {f.check for f in after}
    assert {"token", "permissions", "leadgen subscription", "lead access", "ad account", "pixel"} <= checks


async def test_without_a_page_token_the_pages_own_is_read_as_the_backfill_does(
    sandbox: SandboxHandle, graph_and_meta: tuple[GraphClient, MetaSettings]
) -> None:
    """Without META_PAGE_ACCESS_TOKEN the doctor and `leadwire pages subscribe` read each Page's token with
    META_ACCESS_TOKEN (Meta takes no other for a Page's subscriptions and forms) instead of failing with 190."""
    graph, meta = graph_and_meta
    meta = meta.model_copy(update={"page_access_token": SecretStr("")})
    assert all(f.ok for f in await subscribe_pages(graph, meta))
    findings = await run_checks(graph, meta)
    assert [f.render() for f in findings if not f.ok] == []
    assert _by_check(findings)[f"lead access:{PAGE_ID}"].summary == "leads readable"


async def test_expired_token_and_missing_scope_are_reported(
    sandbox: SandboxHandle, graph_and_meta: tuple[GraphClient, MetaSettings]
) -> None:
    graph, meta = graph_and_meta
    await sandbox.set_token(expires_at=int(time.time()) + 2 * 86400, scopes=["ads_read", "ads_management"])
    findings = _by_check(await run_checks(graph, meta))
    expiry = findings["token expiry:None"]
    assert not expiry.ok
    assert expiry.severity == "warning"
    assert "expires in 2.0 days" in expiry.summary
    assert not findings["permissions:lead capture"].ok
    assert "leads_retrieval" in findings["permissions:lead capture"].summary
    assert findings["permissions:insights"].ok

    await sandbox.faults(token_expired=True)
    findings = _by_check(await run_checks(graph, meta))
    assert not findings["token:None"].ok
    assert "META_ACCESS_TOKEN" in (findings["token:None"].fix or "")


async def test_revoked_lead_permissions_are_reported_by_the_token_and_by_a_lead_read(
    sandbox: SandboxHandle, graph_and_meta: tuple[GraphClient, MetaSettings]
) -> None:
    """The sandbox refuses lead reads without leads_retrieval, as Meta does: the doctor says so twice, from
    debug_token's scopes and from Meta's refusal of a real lead read (listing forms alone would pass)."""
    graph, meta = graph_and_meta
    await sandbox.set_token(revoke=["leads_retrieval"])
    findings = _by_check(await run_checks(graph, meta))
    assert findings["permissions:lead capture"].summary == "missing leads_retrieval"
    access = findings[f"lead access:{PAGE_ID}"]
    assert not access.ok
    assert "cannot read leads" in access.summary
    assert "(#200)" in access.summary
    assert "leads_retrieval" in access.summary
    assert "leads_retrieval" in (access.fix or "")
    assert sandbox.token not in access.render()
    assert sandbox.page_token not in access.render()

    await sandbox.set_token(grant=["leads_retrieval"], revoke=["pages_manage_ads"])
    findings = _by_check(await run_checks(graph, meta))
    assert findings["permissions:lead capture"].summary == "missing pages_manage_ads"
    assert not findings[f"lead access:{PAGE_ID}"].ok

    await sandbox.set_token(grant=["pages_manage_ads"])
    findings = _by_check(await run_checks(graph, meta))
    assert findings["permissions:lead capture"].ok
    assert findings[f"lead access:{PAGE_ID}"].ok
    assert findings[f"lead access:{PAGE_ID}"].summary == "leads readable"


async def test_monitor_alerts_once_per_problem_until_it_recovers(
    sandbox: SandboxHandle, graph_and_meta: tuple[GraphClient, MetaSettings]
) -> None:
    graph, meta = graph_and_meta
    alerts: list[AlertRaised] = []

    async def raise_alert(alert: AlertRaised) -> None:
        alerts.append(alert)

    monitor = HealthMonitor(graph, meta, raise_alert, service="lead_fetcher", repeat=3600)
    await monitor.check_once(now=1_000_000)
    await monitor.check_once(now=1_000_060)  # same problem a minute later: no second alert
    assert [a.code for a in alerts] == ["meta_leadgen_subscription"]
    assert alerts[0].subject == PAGE_ID
    assert alerts[0].fix == "run `leadwire pages subscribe`"
    assert sandbox.token not in alerts[0].model_dump_json()

    await subscribe_pages(graph, meta)
    await monitor.check_once(now=1_000_120)  # recovered: nothing new
    assert len(alerts) == 1

    await graph.delete(f"{PAGE_ID}/subscribed_apps", token=meta.page_access_token)  # the app was removed again
    await monitor.check_once(now=1_000_180)  # broken again after recovering: alert again, within `repeat`
    assert [a.code for a in alerts] == ["meta_leadgen_subscription"] * 2


def _leaks(caplog: pytest.LogCaptureFixture, secret: str) -> list[str]:
    """Log records that hold `secret` anywhere: message, arguments or extra fields."""
    found = []
    for record in caplog.records:
        text = " ".join([record.getMessage(), *map(str, record.__dict__.values())])
        if secret in text:
            found.append(f"{record.name}: {record.getMessage()}")
    return found


@pytest.mark.parametrize("fault", [None, "timeout", "error"])
async def test_debug_token_keeps_the_token_out_of_every_logged_url(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture, fault: str | None
) -> None:
    """Meta's debug_token takes the token only as the `input_token` query parameter (README, "Secrets"): the one
    URL leadwire requests with a token in it. Nothing logs it: not the client (templates, not URLs), not aiohttp,
    not the sandbox's access log, not an error on the way (a timeout, a Graph error)."""
    caplog.set_level(logging.DEBUG)
    token = "EAAG" + "x7Qz" * 12  # looks like a real long-lived token
    meta = MetaSettings(access_token=token, app_secret=sandbox.app_secret, graph_url=sandbox.url,
                        request_timeout_seconds=1)
    if fault == "timeout":
        await sandbox.faults(timeout_rate=1.0, hang_seconds=5, path_regex="^/debug_token")
    elif fault == "error":
        await sandbox.faults(error_rate=1.0, error_status=500, path_regex="^/debug_token")
    async with aiohttp.ClientSession() as session:
        graph = GraphClient(session, meta, max_wait=5, retry=RetryPolicy(max_attempts=2, backoff_base=0.01))
        findings = await check_token(graph, meta)
    calls = [r for r in (await sandbox.calls())["requests"] if r["path"] == "/debug_token"]
    assert calls, "debug_token was not called"
    assert (findings[0].ok is True) == (fault is None), findings[0].render()
    assert token not in " ".join(f.render() for f in findings)
    assert caplog.records, "nothing was logged: the check would prove nothing"
    assert _leaks(caplog, token) == []


@pytest.mark.parametrize("expires_at", [1_795_208_645_000, 10**20])
async def test_an_implausible_expiry_from_meta_is_unknown_not_a_crash(
    sandbox: SandboxHandle, graph_and_meta: tuple[GraphClient, MetaSettings], expires_at: int
) -> None:
    graph, meta = graph_and_meta
    await sandbox.set_token(expires_at=expires_at)
    findings = _by_check(await check_token(graph, meta))
    assert findings["token:None"].ok
    assert "token expiry:None" not in findings
