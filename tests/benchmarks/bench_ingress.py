"""Ingress throughput and time to 200 (broker confirms included), against a naive fetch-in-the-request design.

Run: `python -m tests.benchmarks.bench_ingress [--seconds 10] [--concurrency 64] [--workers 2]
[--rates 1000,1500,2000]`.

The ingress runs as `leadwire run ingress` (JSON logs at INFO, as in production), with 1 and with `--workers`
processes (INGRESS_WORKERS), against the real RabbitMQ in a throwaway vhost (created and deleted with `rabbitmqctl`
or the management API, so the fake leads never reach a real queue; set BENCH_AMQP_URL to use a broker of your own
instead). The load comes
from wrk (Debian package `wrk`) replaying pre-signed deliveries for `--seconds`, or without wrk (or with
`--python-client`) from an aiohttp client in a second process sending `--deliveries`. wrk matters on a small
machine: the aiohttp client burns a third of a core at these rates, which the ingress then does not have.

Two kinds of load. Closed loop (wrk's default, `--concurrency` clients each sending again once answered) finds the
most the ingress can take, but its latency is only clients / throughput. Open loop (`--rates`, wrk with
wrk_signed_post_rate.lua) sends on a fixed schedule, as Meta's deliveries arrive whatever our answers take: the time
to 200 at a given throughput. The goal (>= 2,000/s with p99 < 50 ms) is checked open loop at 2,000/s.

The naive design is the n8n-style handler (docs/prior-art.md §5): it fetches each lead from the
Graph sandbox inside the request, with the sandbox's latency fault at 200 ms, before answering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fixtures import vhosts
from tests.fixtures.infra import free_port

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
    result = asyncio.run(run_client(args.client, lead_ids, args.concurrency))
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
    suffix = os.environ.get("LEADWIRE_TEST_VHOST", "")
    vhost = f"{VHOST}.{suffix}" if suffix else VHOST  # one per checkout, emptied, never deleted (vhosts.py)
    try:
        await asyncio.to_thread(vhosts.create, vhost, fresh=True)
    except vhosts.VhostError as exc:
        raise SystemExit(f"bench_ingress needs a vhost of its own ({exc}), or BENCH_AMQP_URL") from None
    base = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/").rstrip("/")
    try:
        yield f"{base}/{vhost}"
    finally:
        await asyncio.to_thread(vhosts.empty, vhost)


# ------------------------------------------------------------------------------------------- the two designs


@contextlib.asynccontextmanager
async def ingress_process(amqp_url: str, workers: int) -> AsyncIterator[str]:
    """`leadwire run ingress` as an operator runs it (JSON logs at INFO, into /dev/null); yields its webhook URL."""
    port = free_port()
    env = {**os.environ, "AMQP_URL": amqp_url, "META_APP_SECRET": APP_SECRET, "INGRESS_WORKERS": str(workers),
           "INGRESS_HOST": "127.0.0.1", "INGRESS_PORT": str(port), "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
    env.pop("OPS_PORT", None)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", "run", "ingress", env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the ingress did not become ready")
        await asyncio.sleep(0.5 * workers)  # every worker up, not only the first one
        yield f"http://127.0.0.1:{port}/webhooks/meta"
    finally:
        proc.terminate()
        await proc.wait()



async def bench_leadwire(amqp_url: str, workers: int, concurrency: int, args: argparse.Namespace,
                         first_id: int) -> dict[str, Any]:
    async with ingress_process(amqp_url, workers) as url:
        if shutil.which("wrk") and not args.python_client:
            await wrk_load(url, first_id - 10**6, 1000, concurrency, seconds=1)  # warm-up
            count = max(args.deliveries, int(4000 * args.seconds))  # more than it can send: no lead id twice
            return await wrk_load(url, first_id, count, concurrency, seconds=args.seconds)
        await load(url, [str(first_id - 1000 + i) for i in range(200)], concurrency)  # warm-up
        return await load(url, [str(first_id + i) for i in range(args.deliveries)], concurrency)


async def bench_open_loop(amqp_url: str, workers: int, rates: list[int], args: argparse.Namespace,
                          first_id: int) -> list[dict[str, Any]]:
    """Deliveries at fixed rates, as Meta sends them (open loop): the time to 200 at a given throughput."""
    async with ingress_process(amqp_url, workers) as url:
        await wrk_load(url, first_id - 10**6, 1000, OPEN_LOOP_CONNECTIONS, seconds=1)  # warm-up
        results = []
        for n, rate in enumerate(rates):
            count = int(rate * args.seconds * 1.2)
            results.append(await wrk_load(url, first_id + n * 10**9, count, OPEN_LOOP_CONNECTIONS,
                                          seconds=args.seconds, rate=rate))
        return results


WRK_SCRIPT = Path(__file__).with_name("wrk_signed_post.lua")
WRK_RATE_SCRIPT = Path(__file__).with_name("wrk_signed_post_rate.lua")
# Enough connections that a send on schedule finds one free even when a few answers are slow.
OPEN_LOOP_CONNECTIONS = 128


async def wrk_load(url: str, first_id: int, count: int, concurrency: int, *, seconds: float,
                   rate: int | None = None) -> dict[str, Any]:
    """wrk (C, 2 threads) replays pre-signed deliveries for `seconds`: the load costs little of the 2 CPUs.

    Without `rate`, each connection sends its next delivery as soon as the last was answered (closed loop: the
    latency is then about concurrency / throughput); with it, deliveries go out at `rate` per second on a fixed
    schedule (open loop), and the figures say how long a delivery waits for its 200 at that throughput.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as bodies:
        for i in range(count):
            body = delivery_body(str(first_id + i))
            signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
            bodies.write(f"{signature} {body.decode()}\n")
        bodies.flush()
        threads = min(2, concurrency)
        script, extra = (WRK_SCRIPT, []) if rate is None else (WRK_RATE_SCRIPT, [str(rate / threads)])
        proc = await asyncio.create_subprocess_exec(
            "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{round(seconds)}s", "--latency", "-s", str(script), url,
            "--", bodies.name, str(threads), *extra, stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed with exit code {proc.returncode}")
    return parse_wrk(out.decode())


def parse_wrk(text: str) -> dict[str, Any]:
    """Figures from wrk's --latency report."""
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def millis(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * units[unit]

    percentiles = {int(p): millis(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", text, re.MULTILINE)}
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)$", text, re.MULTILINE)
    statuses = {"200": requests - (int(failed.group(1)) if failed else 0)}
    if errors:
        statuses["socket errors"] = errors.group(1)
    if late := re.search(r"Late sends: (\d+)", text):
        statuses["late sends"] = int(late.group(1))
    return {
        "requests": requests,
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_ms": percentiles[50],
        "p99_ms": percentiles[99],
        "max_ms": millis(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", text).group(1)),  # type: ignore[union-attr]
        "statuses": statuses,
        "load": "wrk",
    }


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
    extra = "".join(f", {k}: {v}" for k, v in r["statuses"].items() if k != "200" and v)
    return (f"{name:<48} {r['requests']:>7} {r['per_second']:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['max_ms']:>8.1f}   {ok}/{r['requests']} ok{extra}")


async def run(args: argparse.Namespace) -> None:
    rows = []
    async with bench_broker() as amqp_url:
        for n, (workers, clients) in enumerate(((1, args.concurrency), (args.workers, args.concurrency),
                                                 (args.workers, args.concurrency // 2),
                                                 (args.workers, args.concurrency // 4),
                                                 (args.workers, args.low_concurrency))):
            result = await bench_leadwire(amqp_url, workers, clients, args, (2 + n) * 10**15)
            rows.append((f"leadwire, {workers} worker(s), {clients} clients", result))
        open_loop = []
        if shutil.which("wrk") and not args.python_client:
            open_loop = await bench_open_loop(amqp_url, args.workers, args.rates, args, 8 * 10**15)
    naive = await bench_naive(args.naive_deliveries, args.concurrency, args.latency_ms)
    out = sys.stdout
    load = "wrk" if rows[0][1].get("load") == "wrk" else "an aiohttp client"
    out.write(f"\ningress: signed Meta deliveries (1 leadgen each; broker confirm before 200), load from {load} in a "
              f"second process, {os.cpu_count()} CPUs shared by load, ingress and RabbitMQ\n")
    out.write(f"{'design':<48} {'requests':>7} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}\n")
    out.write("closed loop (each client sends again once answered: the most it can take; latency ~ clients / rate)\n")
    for name, result in rows:
        out.write(_row(name, result) + "\n")
    out.write(_row(f"naive (fetch lead {args.latency_ms:.0f} ms, then 200), {args.concurrency} clients", naive) + "\n")
    if open_loop:
        out.write(f"open loop (deliveries at a fixed rate, as Meta sends them, {OPEN_LOOP_CONNECTIONS} connections)\n")
        for rate, result in zip(args.rates, open_loop, strict=True):
            out.write(_row(f"leadwire, {args.workers} worker(s), {rate:,}/s offered", result) + "\n")
        at_goal = next((r for rate, r in zip(args.rates, open_loop, strict=True) if rate == 2000), None)
        how = f"{args.workers} workers, 2,000/s offered"
    else:  # no wrk: only the closed loop can be measured
        at_goal = rows[1][1]
        how = f"{args.workers} workers, {args.concurrency} clients"
    met = (at_goal is not None and at_goal["per_second"] >= 0.99 * 2000 and at_goal["p99_ms"] < 50
           and not at_goal["statuses"].get("late sends"))
    out.write(f"goal: >= 2,000/s with p99 < 50 ms ({how}) -> {'met' if met else 'NOT met'}\n")
    if not met:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--naive-deliveries", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--low-concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="INGRESS_WORKERS of the second run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--rates", type=lambda v: [int(r) for r in v.split(",")], default=[1000, 1500, 2000],
                        help="open-loop rates (deliveries/s), comma separated; the goal is checked at 2000")
    parser.add_argument("--python-client", action="store_true", help="load from aiohttp even if wrk is installed")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
