"""The demo `make up` runs: the demo CRM on its own, then scripts/up.sh end to end (leads reach the demo CRM,
Ctrl-C stops everything), as a new user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.demo_crm.app import create_app
from tests.fixtures.infra import TEST_DSN, eventually, free_block, free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "demo-test-secret"


@pytest.fixture
async def demo_crm() -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(SECRET), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


def signed(body: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"X-Leadwire-Signature": signature, "Idempotency-Key": str(body.get("leadgen_id")),
                 "Content-Type": "application/json"}


async def test_demo_crm_takes_signed_leads_once_and_refuses_the_rest(demo_crm: str) -> None:
    lead = {"leadgen_id": "880000000000123", "campaign_name": "Leads - Prospecting",
            "fields": {"full_name": "Mary Ann Smith"}}
    async with aiohttp.ClientSession() as http:
        raw, headers = signed(lead)
        async with http.post(f"{demo_crm}/hook", data=raw, headers=headers) as first:
            assert first.status == 200
            contact = (await first.json())["id"]
        async with http.post(f"{demo_crm}/hook", data=raw, headers=headers) as again:
            assert again.status == 200
            assert (await again.json())["id"] == contact
            assert again.headers["Idempotent-Replayed"] == "true"
        raw, headers = signed(lead, secret="not-the-secret")
        async with http.post(f"{demo_crm}/hook", data=raw, headers=headers) as forged:
            assert forged.status == 401
        raw, headers = signed({"no": "lead id"})
        async with http.post(f"{demo_crm}/hook", data=raw, headers=headers) as malformed:
            assert malformed.status == 422
        async with http.get(f"{demo_crm}/leads.json") as summary:
            assert await summary.json() == {"leads": 1, "requests": 4, "rejected": 2,
                                            "leadgen_ids": ["880000000000123"]}
        async with http.get(f"{demo_crm}/") as page:
            text = await page.text()
    assert "Mary S." in text
    assert "Smith" not in text  # names are masked, even in a demo


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
async def test_make_up_demo_delivers_leads_to_the_demo_crm_and_ctrl_c_stops_everything(vhost_url: str,
                                                                                      database_dsn: str) -> None:
    ports = {"SANDBOX_PORT": free_port(), "DEMO_CRM_PORT": free_port(), "INGRESS_PORT": free_port(),
             "OPS_PORT_BASE": free_block(7), "CONSOLE_PORT": free_port()}
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("META_", "CRM_", "GHL_", "SLACK_", "SMTP_"))}
    env = {**keep, **{k: str(v) for k, v in ports.items()}, "AMQP_URL": vhost_url, "DATABASE_URL": TEST_DSN,
           "DEMO_LEADS_PER_MINUTE": "120"}
    up = await asyncio.create_subprocess_exec(
        "bash", str(ROOT / "scripts" / "up.sh"), cwd=ROOT, env=env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = bytearray()

    async def read_output() -> None:
        assert up.stdout is not None
        while chunk := await up.stdout.read(4096):
            output.extend(chunk)

    reader = asyncio.create_task(read_output())
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:

            async def leads_in_crm() -> int:
                if up.returncode is not None:
                    pytest.fail(f"up.sh exited {up.returncode}:\n{output.decode(errors='replace')}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{ports['DEMO_CRM_PORT']}/leads.json") as resp:
                        return (await resp.json())["leads"] >= 3
                return 0

            await eventually(leads_in_crm, timeout=90, interval=0.5, what="3 demo leads in the demo CRM")
            # The demo's console lets its operator in with the password it printed (once it is ready).
            async def console_line() -> re.Match[str] | None:
                printed = output.decode(errors="replace")
                return re.search(r"console +ready +(http://\S+) \(user demo, password (\S+)\)", printed)

            console = await eventually(console_line, timeout=60, interval=0.2, what="the console's address and user")
            async with http.get(f"{console[1]}login") as page:
                token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
            assert token
            async with http.post(f"{console[1]}login", data={"username": "demo", "password": console[2],
                                                             "csrf_token": token[1]}, allow_redirects=False) as login:
                assert login.status == 303, await login.text()
            async with http.get(console[1]) as today:  # signed in: Today, not the login form
                assert today.status == 200
                assert "csrf_token" not in str(today.url)
                assert 'name="password"' not in await today.text()
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground process group
        assert await asyncio.wait_for(up.wait(), 30) in (0, 130)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)
        await reader
    text = output.decode(errors="replace")
    assert "DEMO MODE" in text
    assert f"demo_crm           ready   http://127.0.0.1:{ports['DEMO_CRM_PORT']}/" in text
    assert "Traceback" not in text
    with pytest.raises(ProcessLookupError):  # nothing of it is left running
        os.killpg(up.pid, 0)
    ops = range(ports["OPS_PORT_BASE"], ports["OPS_PORT_BASE"] + 7)
    assert not [port for port in [*ports.values(), *ops] if _listening(port)]
