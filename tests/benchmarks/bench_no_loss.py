"""No lead lost, none duplicated, while the broker restarts and each lead-path service is killed.

10,000 leads (`--leads`) exist in the Graph sandbox; this script plays Meta: it posts one signed leadgen webhook per
lead to the ingress and, like Meta, retries a delivery that did not get a 200 (with backoff). Meanwhile the
ingress, lead_fetcher and crm_sync run as separate `leadwire run <service>` processes; each is killed once with
SIGKILL (and started again), and RabbitMQ is restarted once (`rabbitmqctl stop_app && start_app`, on a RabbitMQ
node of the benchmark's own: the machine's broker is never restarted). The backfill is
off, so every lead has to come through the webhook path. The fake CRM honours `Idempotency-Key` as a real endpoint
does: a repeated request for a lead it already has is answered again but creates nothing. The goal is every lead in
the CRM, no duplicate contact. Repeated requests are counted and printed apart: a crm_sync killed between the CRM's
200 and its own commit has to send again (with the same key), so some are expected under chaos.

Runs on its own RabbitMQ node and database (`leadwire_noloss`, recreated each run). Needs RabbitMQ installed here.

    python -m tests.benchmarks.bench_no_loss [--leads 10000] [--rate 250] [--no-broker-restart]
    python -m tests.benchmarks.bench_no_loss --latency --leads 6000 --rate 200   # no chaos: POST -> CRM times
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import os
import signal
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web

from services.graph_sandbox.app import create_app as create_sandbox
from services.graph_sandbox.config import SandboxConfig
from shared.db.migrate import ensure_database, migrate
from tests.fixtures import rabbit_node
from tests.fixtures.crm import FakeCrm
from tests.fixtures.infra import TEST_DSN, free_port

APP_SECRET = "bench-app-secret"
TOKEN = "bench-token"
# A fresh one each run; per checkout (LEADWIRE_TEST_VHOST), so two checkouts can benchmark at once.
DATABASE = "leadwire_noloss" + (f"_{os.environ['LEADWIRE_TEST_VHOST']}"
                                if os.environ.get("LEADWIRE_TEST_VHOST") else "")
SERVICES = ("ingress", "lead_fetcher", "crm_sync")



class Fleet:
    """The three lead-path services as subprocesses, each restartable."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.ports = {name: free_port() for name in SERVICES}

    async def start(self, name: str) -> None:
        env = {**self.env, "OPS_PORT": str(self.ports[name])}
        if name == "ingress":
            env["INGRESS_PORT"] = str(self.ports[name])
        self.procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "run", name, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )

    async def ready(self, name: str, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{self.ports[name]}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout}s")

    async def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=20)
            if proc.returncode is None:
                proc.kill()


def delivery(page_id: str, form_id: str, leadgen_id: str) -> bytes:
    now = int(time.time())
    value = {"leadgen_id": int(leadgen_id), "page_id": int(page_id), "form_id": int(form_id), "created_time": now}
    return json.dumps({"object": "page", "entry": [{"id": page_id, "time": now,
                                                    "changes": [{"field": "leadgen", "value": value}]}]}).encode()


async def play_meta(session: aiohttp.ClientSession, url: str, body: bytes, stats: collections.Counter[str]) -> None:
    """Post until 200, as Meta retries a failed delivery (here compressed from 36 hours to a minute or two)."""
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    delay = 0.2
    while True:
        try:
            async with session.post(url, data=body, headers={"X-Hub-Signature-256": signature,
                                                             "Content-Type": "application/json"}) as resp:
                stats[f"http_{resp.status}"] += 1
                if resp.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            stats["connection_error"] += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if not rabbit_node.available():
        raise SystemExit("bench_no_loss needs RabbitMQ installed here, to run (and restart) a node of its own")
    async with rabbit_node.private_rabbitmq() as node:
        return await _run(args, node)


async def _run(args: argparse.Namespace, node: rabbit_node.RabbitNode) -> dict[str, Any]:
    amqp_url = node.amqp_url
    dsn = urlunsplit(urlsplit(TEST_DSN)._replace(path=f"/{DATABASE}"))
    admin = await asyncpg.connect(urlunsplit(urlsplit(dsn)._replace(path="/postgres")))
    await admin.execute(f'drop database if exists "{DATABASE}" with (force)')
    await admin.close()
    await ensure_database(dsn)
    await migrate(dsn)

    sandbox_runner = web.AppRunner(create_sandbox(SandboxConfig(app_secret=APP_SECRET)), access_log=None)
    await sandbox_runner.setup()
    sandbox_port = free_port()
    await web.TCPSite(sandbox_runner, "127.0.0.1", sandbox_port).start()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    crm = FakeCrm()
    await crm.start()

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{sandbox}/_sandbox/reset", json={"seed": 7}) as resp:
            state = await resp.json()
        page_id, form_id = state["page_id"], state["form_ids"][0]
        lead_ids: list[str] = []
        while len(lead_ids) < args.leads:
            count = min(1000, args.leads - len(lead_ids))
            async with session.post(f"{sandbox}/_sandbox/leads",
                                    json={"form_id": form_id, "count": count, "deliver": False}) as resp:
                lead_ids += (await resp.json())["lead_ids"]

        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("META_", "CRM_", "GHL_", "LEAD_"))},
            "AMQP_URL": amqp_url, "DATABASE_URL": dsn, "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
            "META_GRAPH_URL": sandbox, "META_ACCESS_TOKEN": TOKEN, "META_PAGE_ACCESS_TOKEN": state["page_access_token"],
            "META_APP_SECRET": APP_SECRET, "META_PAGE_IDS": page_id, "META_HEALTH_CHECK_SECONDS": "0",
            "LEAD_BACKFILL_INTERVAL_SECONDS": "0",  # every lead must come through the webhook path
            "CRM_WEBHOOK_URL": crm.webhook_url, "CRM_WEBHOOK_SECRET": "bench-crm-secret",
            "RETRY_ATTEMPTS": "50",  # a broker restart must not exhaust attempts
        }
        fleet = Fleet(env)
        for name in SERVICES:
            await fleet.start(name)
        for name in SERVICES:
            await fleet.ready(name, session)

        stats: collections.Counter[str] = collections.Counter()
        url = f"http://127.0.0.1:{fleet.ports['ingress']}/webhooks/meta"
        started = time.monotonic()
        chaos_log: list[str] = []

        async def chaos() -> None:
            steps: list[tuple[float, str]] = [(0.15, "ingress"), (0.35, "lead_fetcher"), (0.55, "crm_sync")]
            if not args.no_broker_restart:
                steps.append((0.75, "rabbitmq"))
            duration = args.leads / args.rate
            for fraction, what in steps:
                await asyncio.sleep(max(0.0, started + duration * fraction - time.monotonic()))
                at = time.monotonic() - started
                if what == "rabbitmq":
                    await node.restart()
                    chaos_log.append(f"{at:.1f}s restarted RabbitMQ ({time.monotonic() - started - at:.1f}s down)")
                else:
                    await fleet.kill(what)
                    await fleet.start(what)
                    chaos_log.append(f"{at:.1f}s SIGKILLed {what}, started it again")

        chaos_task = asyncio.create_task(asyncio.sleep(0) if args.latency else chaos())
        limit = asyncio.Semaphore(200)
        posted: dict[str, float] = {}
        arrived: dict[str, float] = {}

        async def watch_crm() -> None:  # stamps each lead's first CRM delivery (5 ms resolution)
            seen = 0
            while True:
                now = time.monotonic()
                for request in crm.requests[seen:]:
                    key = request.headers.get("Idempotency-Key")
                    if request.status == 200 and key:
                        arrived.setdefault(key, now)
                seen = len(crm.requests)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch_crm())

        acked: dict[str, float] = {}

        async def send(leadgen_id: str) -> None:
            posted[leadgen_id] = time.monotonic()
            async with limit:
                await play_meta(session, url, delivery(page_id, form_id, leadgen_id), stats)
            acked[leadgen_id] = time.monotonic()

        senders = []
        for i, leadgen_id in enumerate(lead_ids):
            await asyncio.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            senders.append(asyncio.create_task(send(leadgen_id)))
        await asyncio.gather(*senders)
        await chaos_task
        all_acked = time.monotonic() - started

        wanted = set(lead_ids)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            delivered = {r.headers.get("Idempotency-Key") for r in crm.requests if r.status == 200}
            if wanted <= delivered:
                break
            await asyncio.sleep(1)
        finished = time.monotonic() - started
        watcher.cancel()
        per_lead = collections.Counter(r.headers.get("Idempotency-Key") for r in crm.requests if r.status == 200)
        contacts = {lead for lead in crm.contacts if lead in wanted}
        await fleet.stop_all()
        latencies = sorted(arrived[k] - posted[k] for k in arrived if k in posted)
        ack_latencies = sorted(acked[k] - posted[k] for k in acked)
        # Leads into the CRM per second, from the first webhook to the last lead's arrival.
        throughput = len(arrived) / (max(arrived.values()) - started) if arrived else 0.0

    await crm.stop()
    await sandbox_runner.cleanup()
    return {
        "leads": len(lead_ids),
        "distinct_leads_in_crm": len(contacts),
        "missing": len(wanted - contacts),
        "duplicate_contacts_created": crm.duplicate_contacts(),
        "repeated_requests_answered_idempotently": crm.replayed(),
        "crm_requests_for_an_already_delivered_lead": sum(n - 1 for n in per_lead.values() if n > 1),
        "webhook_posts": dict(stats),
        "all_webhooks_acked_after_s": round(all_acked, 1),
        "all_in_crm_after_s": round(finished, 1),
        "crm_leads_per_s": round(throughput, 1),
        "chaos": chaos_log,
        "webhook_post_to_crm_ms": _percentiles(latencies),
        "webhook_post_to_200_ms": _percentiles(ack_latencies),  # the ingress's share of the above
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max of sorted seconds, in ms."""
    if not values:
        return {}
    return {name: round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)
            for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=250.0, help="new leads per second")
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to wait for the CRM afterwards")
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--latency", action="store_true", help="no chaos: measure webhook POST -> CRM times")
    result = asyncio.run(run(parser.parse_args()))
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    goal = result["missing"] == 0 and result["duplicate_contacts_created"] == 0
    verdict = "met" if goal else "NOT met"
    sys.stdout.write(f"goal (all {result['leads']} distinct in the CRM, 0 duplicate contacts): {verdict}; "
                     f"{result['repeated_requests_answered_idempotently']} repeated requests (same key)\n")
    if not goal:
        sys.exit(1)


if __name__ == "__main__":
    main()
