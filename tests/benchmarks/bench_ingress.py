"""Ingress throughput and time to 200 (broker confirms included), against a naive fetch-in-the-request design.

Run: `python -m tests.benchmarks.bench_ingress [--deliveries 20000] [--concurrency 64]`.

The ingress runs in this process against the real RabbitMQ, in a throwaway vhost (created and deleted with
`rabbitmqctl`, so 20,000 fake leads never reach a real queue; set BENCH_AMQP_URL to use a broker of your own
instead). The load comes from a second process (an aiohttp client, `--client` mode), so client and server do not
share one event loop. The naive design is the n8n-style handler (peers.md §5): it fetches each lead from the
Graph sandbox inside the request, with the sandbox's latency fault at 200 ms, before answering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

APP_SECRET = "bench-app-secret"
PAGE_ID = "9999000099990000"
VHOST = "leadwire_bench"


def delivery_body(leadgen_id: str) -> bytes:
    return json.dumps({
        "object": "page",
        "entry": [{"id": PAGE_ID, "time": int(time.time()), "changes": [{"field": "leadgen", "value": {
            "leadgen_id": int(leadgen_id), "page_id": int(PAGE_ID), "form_id": 123456789,
            "ad_id": 987654321, "adgroup_id": 987654321, "created_time": int(time.time())}}]}],
    }, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------------- client process


async def run_client(url: str, lead_ids: list[str], concurrency: int) -> dict[str, Any]:
    bodies = [delivery_body(i) for i in lead_ids]
    signed = [(b, "sha256=" + hmac.new(APP_SECRET.encode(), b, hashlib.sha256).hexdigest()) for b in bodies]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(signed):
                body, signature = signed[next_index]
                next_index += 1
                started = time.perf_counter()
                async with session.post(url, data=body, headers={"X-Hub-Signature-256": signature,
                                                                 "Content-Type": "application/json"}) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - started)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "elapsed": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": 1000 * latencies[-1],
        "mean_ms": 1000 * statistics.fmean(latencies),
        "statuses": statuses,
    }


def client_main(args: argparse.Namespace) -> None:
    lead_ids = json.loads(sys.stdin.read())
    import uvloop; result = uvloop.run(run_client(args.client, lead_ids, args.concurrency))
    sys.stdout.write(json.dumps(result) + "\n")


async def load(url: str, lead_ids: list[str], concurrency: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.benchmarks.bench_ingress", "--client", url, "--concurrency", str(concurrency),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate(json.dumps(lead_ids).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed with exit code {proc.returncode}")
    return json.loads(out)


# ------------------------------------------------------------------------------------------- broker vhost


@contextlib.asynccontextmanager
async def bench_broker() -> AsyncIterator[str]:
    if url := os.environ.get("BENCH_AMQP_URL"):
        yield url
        return
    if shutil.which("rabbitmqctl") is None:
        raise SystemExit("bench_ingress needs rabbitmqctl to create a throwaway vhost, or BENCH_AMQP_URL")

    async def ctl(*argv: str) -> None:
        proc = await asyncio.create_subprocess_exec("rabbitmqctl", *argv, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL)
        await proc.wait()

    vhost = f"{VHOST}_{uuid.uuid4().hex[:6]}"
    await ctl("add_vhost", vhost)
    await ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    base = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/").rstrip("/")
    try:
        yield f"{base}/{vhost}"
    finally:
        await ctl("delete_vhost", vhost)


# ------------------------------------------------------------------------------------------- the two designs


async def bench_leadwire(amqp_url: str, deliveries: int, concurrency: int, first_id: int) -> dict[str, Any]:
    from services.ingress.app import create_app
    from shared.settings import BrokerSettings, MetaSettings, OpsSettings, Settings

    settings = Settings(
        meta=MetaSettings(app_secret=APP_SECRET),
        broker=BrokerSettings(amqp_url=amqp_url),
        ops=OpsSettings(ops_port=0),
    )
    service = create_app(settings)
    await service.start()
    try:
        url = f"http://127.0.0.1:{service.ops_port}/webhooks/meta"
        await load(url, [str(first_id - 1000 + i) for i in range(200)], concurrency)  # warm-up
        return await load(url, [str(first_id + i) for i in range(deliveries)], concurrency)
    finally:
        await service.stop()


async def bench_naive(deliveries: int, concurrency: int, latency_ms: float) -> dict[str, Any]:
    """A webhook handler that reads every lead from the Graph sandbox before answering."""
    from services.graph_sandbox.app import create_app as create_sandbox
    from services.graph_sandbox.config import SandboxConfig

    sandbox = web.AppRunner(create_sandbox(SandboxConfig(app_secret=APP_SECRET)), access_log=None)
    await sandbox.setup()
    site = web.TCPSite(sandbox, "127.0.0.1", 0)
    await site.start()
    sandbox_url = f"http://127.0.0.1:{sandbox.addresses[0][1]}"
    async with aiohttp.ClientSession() as session:

        async def control(path: str, body: dict[str, Any]) -> Any:
            async with session.post(f"{sandbox_url}/_sandbox/{path}", json=body) as resp:
                resp.raise_for_status()
                return await resp.json()

        lead_ids: list[str] = []
        while len(lead_ids) < deliveries + 50:
            batch = min(500, deliveries + 50 - len(lead_ids))
            lead_ids += (await control("leads", {"count": batch, "deliver": False}))["lead_ids"]
        await control("faults", {"latency_ms": latency_ms})

        async def naive_webhook(request: web.Request) -> web.Response:
            raw = await request.read()
            expected = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
                return web.Response(status=403)
            for entry in json.loads(raw)["entry"]:
                for change in entry["changes"]:
                    lead = str(change["value"]["leadgen_id"])
                    async with session.get(f"{sandbox_url}/v26.0/{lead}",
                                           params={"access_token": "sandbox-bench-token",
                                                   "fields": "id,created_time,field_data"}) as resp:
                        await resp.read()
                        if resp.status != 200:
                            return web.Response(status=502)
            return web.json_response({"received": 1})

        app = web.Application()
        app.router.add_post("/webhooks/meta", naive_webhook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        naive_site = web.TCPSite(runner, "127.0.0.1", 0)
        await naive_site.start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/meta"
            await load(url, lead_ids[:50], concurrency)
            return await load(url, lead_ids[50:], concurrency)
        finally:
            await runner.cleanup()
            await sandbox.cleanup()


def _row(name: str, r: dict[str, Any]) -> str:
    ok = r["statuses"].get("200", 0)
    return (f"{name:<34} {r['requests']:>7} {r['per_second']:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['max_ms']:>8.1f}   {ok}/{r['requests']} ok")


def production_logging() -> None:
    """Log as `leadwire run` does (JSON, INFO: one line per delivery), into /dev/null: the cost is real."""
    from shared.logging import configure_logging

    configure_logging("INFO", "json")
    for handler in logging.getLogger().handlers:
        if handler.get_name() == "leadwire" and isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process


async def run(args: argparse.Namespace) -> None:
    production_logging()
    async with bench_broker() as amqp_url:
        ours = await bench_leadwire(amqp_url, args.deliveries, args.concurrency, 2 * 10**15)
        few = await bench_leadwire(amqp_url, args.deliveries // 10, args.low_concurrency, 3 * 10**15)
    naive = await bench_naive(args.naive_deliveries, args.concurrency, args.latency_ms)
    out = sys.stdout
    out.write(f"\ningress: signed Meta deliveries (1 leadgen each), {args.concurrency} concurrent clients, "
              f"load from a second process, {os.cpu_count()} CPUs\n")
    out.write(f"{'design':<34} {'requests':>7} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}\n")
    out.write(_row("leadwire (queue, confirm, 200)", ours) + "\n")
    out.write(_row(f"leadwire, {args.low_concurrency} clients", few) + "\n")
    out.write(_row(f"naive (fetch lead {args.latency_ms:.0f} ms, then 200)", naive) + "\n")
    met = ours["per_second"] >= 2000 and ours["p99_ms"] < 50
    out.write(f"goal: >= 2000/s with p99 < 50 ms -> {'met' if met else 'NOT met'}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--naive-deliveries", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--low-concurrency", type=int, default=8)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
    else:
        import uvloop; uvloop.run(run(args))


if __name__ == "__main__":
    main()
