"""Today's health strip asks Meta (the Graph sandbox) for the token, the Page's subscription and lead access, and
shows the Graph usage per scope from Meta's headers."""

from __future__ import annotations

import re
import time

import asyncpg
import pytest

from shared.settings import MetaSettings, Settings
from tests.fixtures.console import Console, running_console
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.timeout(60)


def chip(page: str, label: str) -> tuple[str, str] | None:
    """(state, detail) of the chip labelled `label` in the Today page, or None."""
    pattern = rf'<li class="chip (\w+)"><span class="dot"></span><strong>{re.escape(label)}</strong> ([^<]*)</li>'
    match = re.search(pattern, page)
    return (match[1], match[2]) if match else None


async def tiles(console: Console, label: str, state: str | None = None) -> str | None:
    _, page, _ = await console.get("/today/tiles")
    found = chip(page, label)
    return page if found and (state is None or found[0] == state) else None


async def test_strip_shows_token_expiry_page_subscription_lead_access_and_usage(
    settings: Settings, console_dsn: str, console_db: asyncpg.Pool, sandbox: SandboxHandle,
) -> None:
    page_id = sandbox.state["page_id"]
    await sandbox.set_token(expires_at=int(time.time()) + 3 * 86400 + 3600)
    # A small app budget: the console's own checks use a share of it, and Meta's X-App-Usage header says which.
    await sandbox.limits(app={"budget": 20, "window_seconds": 3600})
    meta = MetaSettings(access_token=sandbox.token, page_access_token=sandbox.page_token,
                        app_secret=sandbox.app_secret, app_id=sandbox.state.get("app_id", ""), graph_url=sandbox.url,
                        ad_account_id=[sandbox.account_id], page_ids=[page_id], request_timeout_seconds=5)
    async with running_console(settings.replace(meta), console_dsn, meta_check_seconds=3600) as console:
        await console.login()
        page = await eventually(lambda: tiles(console, "Meta token"), what="the first Meta check", timeout=20)

        expires = (await sandbox.set_token())["expires_at"]
        day = time.strftime("%Y-%m-%d", time.gmtime(expires))
        assert chip(page, "Meta token") == (
            "warn", f"expires in 3.0 days ({day}) — fix: replace it with a system-user token, which does not expire")
        assert chip(page, "Permissions") == ("ok", "every permission granted")
        assert chip(page, f"Page {page_id} webhooks") == (
            "bad", "the app is not subscribed to this Page&#39;s leadgen webhooks: no lead will arrive by webhook "
                   "— fix: run `leadwire pages subscribe`")
        assert chip(page, f"Page {page_id} lead access") == ("ok", "leads readable")
        assert chip(page, f"Ad account {sandbox.account_id}")[0] == "ok"  # type: ignore[index]
        state, detail = chip(page, "Graph app")  # type: ignore[misc]
        used = int(detail.split("%")[0])
        assert 0 < used < 75, detail  # 5-6 calls of a budget of 20
        assert state == "ok"
        assert sandbox.token not in page


async def test_a_throttled_scope_is_red(
    settings: Settings, console_dsn: str, console_db: asyncpg.Pool, sandbox: SandboxHandle,
) -> None:
    page_id = sandbox.state["page_id"]
    # Meta answers the lead-form read with an app-level throttle (code 4): the client blocks the app scope.
    await sandbox.faults(error_rate=1.0, error_status=400, path_regex="leadgen_forms",
                         error={"code": 4, "message": "Application request limit reached", "is_transient": True})
    meta = MetaSettings(access_token=sandbox.token, page_access_token=sandbox.page_token,
                        app_secret=sandbox.app_secret, app_id=sandbox.state.get("app_id", ""), graph_url=sandbox.url,
                        ad_account_id=[sandbox.account_id], page_ids=[page_id], request_timeout_seconds=5,
                        graph_max_wait_seconds=0)
    async with running_console(settings.replace(meta), console_dsn, meta_check_seconds=3600) as console:
        await console.login()
        page = await eventually(lambda: tiles(console, "Graph app", "bad"), what="the throttled app scope",
                                timeout=20)
        detail = chip(page, "Graph app")[1]  # type: ignore[index]
        assert re.fullmatch(r"throttled, \d+ s to go", detail), detail
        assert chip(page, f"Page {page_id} lead access")[0] == "bad"  # type: ignore[index]
