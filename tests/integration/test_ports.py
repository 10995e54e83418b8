"""Ports of `leadwire run` and the sandbox: a taken one stops the start with one line; two copies run side by side."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from services.registry import SERVICES
from tests.fixtures.infra import AMQP_URL, TEST_DSN, eventually, free_block


@contextlib.contextmanager
def occupied() -> Iterator[int]:
    """A port another process listens on while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]



def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("META_", "AMQP", "DATABASE", "OPS_", "INGRESS_"))}
    return {
        **keep, "AMQP_URL": AMQP_URL, "DATABASE_URL": TEST_DSN, "LOG_FORMAT": "text", "LOG_LEVEL": "INFO",
        "OPS_HOST": "127.0.0.1", "INGRESS_HOST": "127.0.0.1", "META_APP_SECRET": "s", "META_WEBHOOK_VERIFY_TOKEN": "v",
        # Nothing scheduled, nothing sent to Meta: the run only has to start, answer and stop.
        "META_GRAPH_URL": "http://127.0.0.1:9", "META_HEALTH_CHECK_SECONDS": "0", "INSIGHTS_INTERVAL_SECONDS": "0",
        "RULES_INTERVAL_SECONDS": "0", "LEAD_BACKFILL_INTERVAL_SECONDS": "0",
        **extra,
    }


async def _run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_a_taken_ops_port_stops_run_with_one_line_naming_ops_port_base() -> None:
    with occupied() as port:  # crm_sync's offset is 1
        code, _, err = await _run("-m", "services", "run", "crm_sync", env=_env(OPS_PORT_BASE=str(port - 1)))
    assert code == 1
    assert err.splitlines() == [
        f"leadwire: crm_sync: port {port} on 127.0.0.1 is already in use: free it or set OPS_PORT_BASE"
    ]


async def test_a_taken_ingress_port_names_ingress_port_even_with_ops_variables_set() -> None:
    with occupied() as port:
        code, _, err = await _run(
            "-m", "services", "run", "ingress", env=_env(INGRESS_PORT=str(port), OPS_PORT_BASE="20001", OPS_PORT="0")
        )
    assert code == 1
    assert err.splitlines() == [
        f"leadwire: ingress: port {port} on 127.0.0.1 is already in use: free it or set INGRESS_PORT"
    ]


async def test_a_taken_sandbox_port_gives_one_line_naming_sandbox_port() -> None:
    with occupied() as port:
        code, _, err = await _run("-m", "services.graph_sandbox", env={**_env(), "SANDBOX_PORT": str(port)})
    assert code == 1
    assert err.splitlines() == [
        f"graph_sandbox: port {port} on 127.0.0.1 is already in use: free it or set SANDBOX_PORT (--port)"
    ]


@contextlib.asynccontextmanager
async def run_all(base: int, ingress_port: int) -> AsyncIterator[dict[str, str]]:
    """`leadwire run all` until every service logged its address; yields {service: readyz url}."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "run", "all",
        env=_env(OPS_PORT_BASE=str(base), INGRESS_PORT=str(ingress_port), CONSOLE_PORT=str(base + 6)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    addresses: dict[str, str] = {}
    lines: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(90):
            while len(addresses) < len(SERVICES):
                line = (await process.stderr.readline()).decode()
                assert line, f"run all exited early ({await process.wait()}): {''.join(lines[-5:])}"
                lines.append(line)
                if match := re.search(r"(\w+)\s+ready\s+(http://\S+)", line):
                    addresses[match[1]] = match[2]
        drain = asyncio.create_task(process.stderr.read())  # a full pipe would block the process's logging
        yield addresses
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                await process.wait()
        if drain is not None:
            await drain


@pytest.mark.slow
async def test_two_copies_of_run_all_run_side_by_side(database_dsn: str) -> None:
    first_base = second_base = free_block(8)
    while abs(second_base - first_base) < 8:
        second_base = free_block(8)
    async with (
        run_all(first_base + 1, first_base) as first,
        run_all(second_base + 1, second_base) as second,
        aiohttp.ClientSession() as http,
    ):
        assert first["ingress"] == f"http://127.0.0.1:{first_base}/readyz"
        assert first["campaign_executor"] == f"http://127.0.0.1:{first_base + 6}/readyz"
        assert second["crm_sync"] == f"http://127.0.0.1:{second_base + 2}/readyz"
        for url in (*first.values(), *second.values()):

            async def alive(url: str = url) -> bool:
                async with http.get(url.replace("/readyz", "/healthz")) as resp:
                    return resp.status == 200

            await eventually(alive, what=url)
