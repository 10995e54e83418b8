"""The ingress against the real RabbitMQ: Meta's handshake and signed deliveries, CRM events, broker outages."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
import pytest

from contracts.conversions import ConversionRequested
from contracts.messages import ConversionRequestedMessage, LeadgenReceivedMessage, RoutingKey
from services.ingress.app import create_app
from services.ingress.settings import IngressSettings
from shared.service import Service
from shared.settings import BrokerSettings, MetaSettings, Settings
from tests.fixtures.infra import Workers, eventually, free_port, leadwire_workers
from tests.fixtures.taps import Tap, tap

APP_SECRET = "test-app-secret-ingress"
VERIFY_TOKEN = "test-verify-token"
CRM_SECRET = "test-crm-events-secret"
MAX_BODY = 16 * 1024
PII = ("Jane Roe", "jane.roe@example.com", "+15555550123")


def lead_id() -> str:
    return str(random.randint(10**15, 10**16 - 1))


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery(*entries: list[str], page_id: str = "1111", numbers: bool = True) -> dict[str, Any]:
    """A Meta `page` delivery: one entry per list of leadgen ids (ids as JSON numbers, as Meta sends them)."""

    def value(lid: str) -> dict[str, Any]:
        ids = {"leadgen_id": lid, "page_id": page_id, "form_id": "2222", "ad_id": "3333", "adgroup_id": "3333"}
        return {**({k: int(v) for k, v in ids.items()} if numbers else ids), "created_time": 1_790_000_000}

    return {
        "object": "page",
        "entry": [
            {"id": page_id, "time": 1_790_000_001, "changes": [{"field": "leadgen", "value": value(x)} for x in ids]}
            for ids in entries
        ],
    }


@pytest.fixture
async def vamqp(vhost_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(vhost_url)
    yield await connection.channel()
    await connection.close()


@pytest.fixture
async def leadgen_tap(vamqp: aio_pika.abc.AbstractChannel) -> Tap:
    return await tap(vamqp, RoutingKey.LEADGEN_RECEIVED)


@pytest.fixture
async def conversion_tap(vamqp: aio_pika.abc.AbstractChannel) -> Tap:
    return await tap(vamqp, RoutingKey.CONVERSION_REQUESTED)


def ingress_settings(
    settings: Settings, amqp_url: str, *, crm_secret: str = CRM_SECRET, max_body: int = MAX_BODY
) -> Settings:
    return settings.replace(
        MetaSettings(app_secret=APP_SECRET, webhook_verify_token=VERIFY_TOKEN),
        IngressSettings(
            ingress_port=0, crm_events_secret=crm_secret, ingress_max_body_bytes=max_body,
            ingress_publish_timeout_seconds=2.0,
        ),
        BrokerSettings(amqp_url=amqp_url, RETRY_ATTEMPTS=3, GRACEFUL_TIMEOUT_SECONDS=5),
    )


@dataclass
class Ingress:
    service: Service
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.ops_port}"

    async def post_meta(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.post(f"{self.url}/webhooks/meta", data=body, headers=headers or {}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def post_signed(self, payload: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        return await self.post_meta(body, {"X-Hub-Signature-256": sign(body)})

    async def post_crm(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.post(f"{self.url}/crm/events", data=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


async def start_ingress(settings: Settings) -> Service:
    service = create_app(settings)
    await service.start()
    return service


@pytest.fixture
async def ingress(settings: Settings, vhost_url: str) -> AsyncIterator[Ingress]:
    service = await start_ingress(ingress_settings(settings, vhost_url))
    async with aiohttp.ClientSession() as http:
        yield Ingress(service, http)
    await service.stop()


def ids_of(bodies: list[dict[str, Any]], wanted: set[str]) -> list[str]:
    return [b["payload"]["leadgen_id"] for b in bodies if b["payload"].get("leadgen_id") in wanted]


# --------------------------------------------------------------------------------------------- handshake (GET)


async def test_verification_handshake_echoes_the_challenge(ingress: Ingress) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    async with ingress.http.get(f"{ingress.url}/webhooks/meta", params=params) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
    ],
    ids=["wrong-token", "wrong-mode", "no-token", "no-challenge"],
)
async def test_verification_handshake_refuses(ingress: Ingress, params: dict[str, str]) -> None:
    async with ingress.http.get(f"{ingress.url}/webhooks/meta", params=params) as resp:
        assert resp.status == 403
        assert "1" not in await resp.text()


# --------------------------------------------------------------------------------------------- deliveries (POST)


async def test_every_leadgen_of_every_entry_is_published_before_200(ingress: Ingress, leadgen_tap: Tap) -> None:
    first, second = [lead_id() for _ in range(3)], [lead_id() for _ in range(2)]
    payload = delivery(first, second)
    payload["entry"][1]["changes"].append({"field": "feed", "value": {"item": "status"}})

    status, body = await ingress.post_signed(payload)

    assert (status, body) == (200, {"received": 5})
    # 200 comes after the confirms, so the messages are already in the queue: no waiting needed
    bodies = await leadgen_tap.bodies()
    assert sorted(ids_of(bodies, {*first, *second})) == sorted(first + second)
    message = next(LeadgenReceivedMessage.model_validate(b) for b in bodies if b["payload"]["leadgen_id"] == first[0])
    assert message.payload.page_id == "1111"
    assert message.payload.form_id == "2222"
    assert message.payload.ad_id == "3333"
    assert message.payload.created_time == 1_790_000_000


async def test_same_delivery_three_times_gives_three_200s_and_the_same_message_ids(
    ingress: Ingress, leadgen_tap: Tap
) -> None:
    ids = [lead_id(), lead_id()]
    payload = delivery(ids)
    results = [await ingress.post_signed(payload) for _ in range(3)]
    assert [status for status, _ in results] == [200, 200, 200]

    messages = [m for m in await leadgen_tap.collect() if json.loads(m.body)["payload"]["leadgen_id"] in ids]
    assert len(messages) == 6
    by_lead: dict[str, set[str]] = {}
    for m in messages:
        by_lead.setdefault(json.loads(m.body)["payload"]["leadgen_id"], set()).add(str(m.message_id))
    assert all(len(message_ids) == 1 for message_ids in by_lead.values()), by_lead
    assert len({next(iter(s)) for s in by_lead.values()}) == 2  # one id per lead, different leads differ


async def test_a_thousand_changes_in_one_delivery(settings: Settings, vhost_url: str, leadgen_tap: Tap) -> None:
    ids = [lead_id() for _ in range(1000)]
    payload = delivery(*(ids[i : i + 100] for i in range(0, 1000, 100)), numbers=False)
    body = json.dumps(payload, separators=(",", ":")).encode()
    service = await start_ingress(ingress_settings(settings, vhost_url, max_body=1_048_576))
    try:
        async with aiohttp.ClientSession() as http:
            ingress = Ingress(service, http)
            status, answer = await ingress.post_meta(body, {"X-Hub-Signature-256": sign(body)})
    finally:
        await service.stop()
    assert (status, answer) == (200, {"received": 1000})
    assert sorted(ids_of(await leadgen_tap.bodies(), set(ids))) == sorted(ids)


async def test_other_objects_and_fields_are_acknowledged_not_published(ingress: Ingress, leadgen_tap: Tap) -> None:
    payload = {
        "object": "application",
        "entry": [{"id": "1", "time": 1, "changes": [{"field": "ads_rules_engine", "value": {"rule_id": 5}}]}],
    }
    status, body = await ingress.post_signed(payload)
    assert (status, body) == (200, {"received": 0})
    async with ingress.http.get(f"{ingress.url}/metrics") as resp:
        text = await resp.text()
    assert 'leadwire_ingress_changes_ignored_total{field="ads_rules_engine",object="application"}' in text


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-signature", 403),
        ("bad-signature", 403),
        ("signature-of-other-body", 403),
        ("sha1-only", 403),
        ("oversize", 413),
        ("oversize-chunked", 413),
        ("not-json", 400),
        ("entry-not-a-list", 400),
        ("leadgen-without-id", 400),
        ("leadgen-id-not-digits", 400),
        ("change-not-an-object", 400),
    ],
)
async def test_rejected_deliveries_publish_nothing_and_the_service_goes_on(
    ingress: Ingress, leadgen_tap: Tap, case: str, expected: int
) -> None:
    lid = lead_id()
    payload = delivery([lid])
    headers: dict[str, str] = {}
    body = json.dumps(payload).encode()
    match case:
        case "no-signature":
            pass
        case "bad-signature":
            headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
        case "signature-of-other-body":
            headers["X-Hub-Signature-256"] = sign(body + b" ")
        case "sha1-only":
            headers["X-Hub-Signature"] = "sha1=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()
        case "oversize" | "oversize-chunked":
            payload["entry"][0]["padding"] = "x" * MAX_BODY
            body = json.dumps(payload).encode()
            headers["X-Hub-Signature-256"] = sign(body)
        case "not-json":
            body = b'{"object": "page", "entry": [' + lid.encode()
            headers["X-Hub-Signature-256"] = sign(body)
        case "entry-not-a-list":
            body = json.dumps({"object": "page", "entry": {"id": "1", "leadgen_id": lid}}).encode()
            headers["X-Hub-Signature-256"] = sign(body)
        case "leadgen-without-id":
            payload["entry"][0]["changes"].insert(0, {"field": "leadgen", "value": {"page_id": 1, "form_id": 2}})
            body = json.dumps(payload).encode()
            headers["X-Hub-Signature-256"] = sign(body)
        case "leadgen-id-not-digits":
            payload["entry"][0]["changes"].append({"field": "leadgen", "value": {"leadgen_id": "jane@x.com"}})
            body = json.dumps(payload).encode()
            headers["X-Hub-Signature-256"] = sign(body)
        case "change-not-an-object":
            payload["entry"][0]["changes"].append("leadgen")
            body = json.dumps(payload).encode()
            headers["X-Hub-Signature-256"] = sign(body)

    if case == "oversize-chunked":

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        async with ingress.http.post(f"{ingress.url}/webhooks/meta", data=chunks(), headers=headers) as resp:
            status, answer = resp.status, await resp.json(content_type=None)
    else:
        status, answer = await ingress.post_meta(body, headers)

    assert status == expected, answer
    assert "error" in answer
    assert "jane@x.com" not in json.dumps(answer)
    if case == "leadgen-without-id":
        assert "entry[0].changes[0].value.leadgen_id" in answer["error"]
    # still serving, and a good delivery after the bad one is published
    good = lead_id()
    assert (await ingress.post_signed(delivery([good])))[0] == 200
    assert ids_of(await leadgen_tap.bodies(), {lid, good}) == [good]


async def test_unconfigured_app_secret_answers_503(settings: Settings, vhost_url: str, leadgen_tap: Tap) -> None:
    service = await start_ingress(
        ingress_settings(settings, vhost_url).replace(MetaSettings(webhook_verify_token="x" * 8))
    )
    try:
        async with aiohttp.ClientSession() as http:
            lid = lead_id()
            body = json.dumps(delivery([lid])).encode()
            async with http.post(f"http://127.0.0.1:{service.ops_port}/webhooks/meta", data=body,
                                 headers={"X-Hub-Signature-256": "sha256=" + hmac.new(b"", body, hashlib.sha256)
                                          .hexdigest()}) as resp:
                assert resp.status == 503
    finally:
        await service.stop()
    assert ids_of(await leadgen_tap.bodies(), {lid}) == []


async def test_no_lead_pii_in_logs(ingress: Ingress, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    payload = delivery([lead_id()])
    payload["entry"][0]["changes"][0]["value"]["full_name"] = PII[0]  # not Meta's shape, but must not leak
    await ingress.post_signed(payload)
    body = json.dumps({"object": "page", "entry": [{"changes": [{"field": "leadgen", "value": {"email": PII[1]}}]}]})
    await ingress.post_meta(body.encode(), {"X-Hub-Signature-256": sign(body.encode())})
    event = {"event_name": "Lead", "event_time": "yesterday", "user": {"email": PII[1], "phone": PII[2]},
             "crm_name": "leadwire-test"}
    await ingress.post_crm(json.dumps(event).encode(), {"Authorization": f"Bearer {CRM_SECRET}"})
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records
    for value in (*PII, APP_SECRET, CRM_SECRET):
        assert value not in text


# --------------------------------------------------------------------------------------------- broker outage


class TcpProxy:
    """A TCP relay to RabbitMQ that a test can cut (server closed, connections dropped) and restore."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_broker_unreachable_answers_503_and_a_retry_succeeds_once_it_is_back(
    settings: Settings, vhost_url: str, leadgen_tap: Tap
) -> None:
    broker_at = urlsplit(vhost_url)
    proxy = TcpProxy((broker_at.hostname or "127.0.0.1", broker_at.port or 5672))
    await proxy.start()
    credentials = f"{broker_at.username}:{broker_at.password}"
    via_proxy = urlunsplit(broker_at._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))
    service = await start_ingress(ingress_settings(settings, via_proxy))
    ingress = Ingress(service, aiohttp.ClientSession())
    try:
        lid = lead_id()
        payload = delivery([lid])
        await proxy.stop()
        status, body = await ingress.post_signed(payload)
        assert status == 503, body
        assert ids_of(await leadgen_tap.bodies(), {lid}) == []

        await proxy.start()  # same port: the robust connection reconnects on its own

        async def retried() -> bool:
            return (await ingress.post_signed(payload))[0] == 200

        await eventually(retried, timeout=30, interval=0.25, what="a 200 once the broker is back")
        assert lid in ids_of(await leadgen_tap.bodies(), {lid})
    finally:
        await ingress.http.close()
        await service.stop()
        await proxy.stop()


# --------------------------------------------------------------------------------------------- /crm/events


def conversion(**overrides: Any) -> dict[str, Any]:
    event = {
        "event_name": "SignedCase",
        "event_time": 1_790_000_000,
        "user": {"lead_id": lead_id()},
        "crm_name": "leadwire-test",
    }
    return {**event, **overrides}


async def test_crm_events_with_hmac_signature(ingress: Ingress, conversion_tap: Tap) -> None:
    events = [conversion(), conversion(event_name="QualifiedLead")]
    body = json.dumps(events).encode()
    status, answer = await ingress.post_crm(body, {"X-Leadwire-Signature": sign(body, CRM_SECRET)})
    assert status == 202, answer
    assert answer["accepted"] == 2
    published = {str(m.message_id): ConversionRequestedMessage.model_validate_json(m.body)
                 for m in await conversion_tap.collect()}
    assert set(answer["message_ids"]) <= set(published)
    assert {published[i].payload.event_name for i in answer["message_ids"]} == {"SignedCase", "QualifiedLead"}


async def test_crm_events_with_bearer_token_and_retry_gives_same_id(ingress: Ingress, conversion_tap: Tap) -> None:
    body = json.dumps(conversion()).encode()
    first = await ingress.post_crm(body, {"Authorization": f"Bearer {CRM_SECRET}"})
    again = await ingress.post_crm(body, {"Authorization": f"Bearer {CRM_SECRET}"})
    assert first[0] == again[0] == 202
    assert first[1]["message_ids"] == again[1]["message_ids"]
    ids = [str(m.message_id) for m in await conversion_tap.collect()]
    assert ids.count(first[1]["message_ids"][0]) == 2


async def test_crm_events_travel_with_hashed_identifiers_and_the_id_of_the_clear_ones(
    ingress: Ingress, conversion_tap: Tap
) -> None:
    """A CRM sends an outcome by e-mail and phone, in clear: what the ingress publishes carries their hashes only
    (Meta's normalization), and the same event id a producer hashing them itself would not change."""
    email, phone = f"{uuid.uuid4().hex[:10]}@Example.com", "(650) 555-0134"
    event = conversion(user={"email": email, "phone": phone, "first_name": "Zoë", "zip": "02134"})
    body = json.dumps(event).encode()
    status, answer = await ingress.post_crm(body, {"Authorization": f"Bearer {CRM_SECRET}"})
    assert status == 202, answer
    raw = [m.body.decode() for m in await conversion_tap.collect() if str(m.message_id) in answer["message_ids"]]
    assert len(raw) == 1
    for clear in (email, email.lower(), "555-0134", "(650)", "Zoë", "zo\\u00eb"):  # none can occur in hex or a uuid
        assert clear.lower() not in raw[0].lower(), f"{clear!r} travelled in clear"
    user = ConversionRequestedMessage.model_validate_json(raw[0]).payload.user
    assert user.email == hashlib.sha256(email.lower().encode()).hexdigest()
    assert user.phone == hashlib.sha256(b"16505550134").hexdigest()
    assert user.zip == hashlib.sha256(b"02134").hexdigest()
    derived = ConversionRequested.model_validate(event).resolved_event_id()
    assert ConversionRequestedMessage.model_validate_json(raw[0]).payload.event_id == derived


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-secret"},
        {"Authorization": f"Basic {CRM_SECRET}"},
        {"X-Leadwire-Signature": "sha256=" + "0" * 64},
        {"X-Leadwire-Signature": "bad", "Authorization": f"Bearer {CRM_SECRET}"},
    ],
    ids=["none", "wrong-bearer", "basic", "bad-hmac", "bad-hmac-good-bearer"],
)
async def test_crm_events_bad_auth(ingress: Ingress, conversion_tap: Tap, headers: dict[str, str]) -> None:
    event = conversion()
    status, answer = await ingress.post_crm(json.dumps(event).encode(), headers)
    assert status == 401, answer
    lead = event["user"]["lead_id"]
    assert [b for b in await conversion_tap.bodies() if b["payload"]["user"].get("lead_id") == lead] == []


async def test_crm_events_invalid_body_is_422_without_values(ingress: Ingress, conversion_tap: Tap) -> None:
    good = conversion()
    bad = conversion(event_time="not a time", user={"email": PII[1]}, data_processing_options=["GDPR"])
    body = json.dumps([good, bad, {"user": {"phone": PII[2]}}]).encode()
    status, answer = await ingress.post_crm(body, {"Authorization": f"Bearer {CRM_SECRET}"})
    assert status == 422
    paths = {e["path"] for e in answer["errors"]}
    assert {"[1].event_time", "[1].data_processing_options.0", "[2].event_name", "[2].event_time"} <= paths
    assert not any(value in json.dumps(answer) for value in PII)
    assert "not a time" not in json.dumps(answer)
    lead = good["user"]["lead_id"]
    assert [b for b in await conversion_tap.bodies() if b["payload"]["user"].get("lead_id") == lead] == []

    status, answer = await ingress.post_crm(b"[1, 2", {"Authorization": f"Bearer {CRM_SECRET}"})
    assert status == 400
    too_many = json.dumps([good] * 1001).encode()
    status, answer = await ingress.post_crm(too_many, {"Authorization": f"Bearer {CRM_SECRET}"})
    assert status in (413, 422)  # 1001 events exceed this test's 16 KiB cap before the count cap


async def test_crm_events_unconfigured_secret_is_closed(
    settings: Settings, vhost_url: str, conversion_tap: Tap
) -> None:
    service = await start_ingress(ingress_settings(settings, vhost_url, crm_secret=""))
    try:
        async with aiohttp.ClientSession() as http:
            event = conversion()
            for headers in ({}, {"Authorization": "Bearer "}, {"X-Leadwire-Signature": sign(b"{}", "")}):
                async with http.post(f"http://127.0.0.1:{service.ops_port}/crm/events",
                                     data=json.dumps(event).encode(), headers=headers) as resp:
                    assert resp.status == 503
                    assert "not configured" in (await resp.json())["error"].lower() or "not set" in (
                        await resp.json())["error"]
    finally:
        await service.stop()
    lead = event["user"]["lead_id"]
    assert [b for b in await conversion_tap.bodies() if b["payload"]["user"].get("lead_id") == lead] == []


# --------------------------------------------------------------------------------------------- INGRESS_WORKERS


@pytest.fixture
async def ingress_workers(vhost_url: str) -> AsyncIterator[Workers]:
    """`leadwire run ingress` with INGRESS_WORKERS=2, as an operator starts it."""
    port = free_port()
    env = {"AMQP_URL": vhost_url, "META_APP_SECRET": APP_SECRET, "INGRESS_WORKERS": "2", "INGRESS_PORT": str(port),
           "INGRESS_HOST": "127.0.0.1"}
    async with leadwire_workers("ingress", 2, env, port) as workers:
        yield workers


async def test_workers_share_the_port_and_count_together(ingress_workers: Workers, leadgen_tap: Tap) -> None:
    ids = [lead_id() for _ in range(40)]
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request: the kernel spreads them
    async with aiohttp.ClientSession(connector=connector) as http:
        for leadgen_id in ids:
            body = json.dumps(delivery([leadgen_id])).encode()
            async with http.post(f"{ingress_workers.url}/webhooks/meta", data=body,
                                 headers={"X-Hub-Signature-256": sign(body)}) as resp:
                assert resp.status == 200
        async with http.get(f"{ingress_workers.url}/metrics") as resp:
            metrics = await resp.text()
    published = [line for line in metrics.splitlines() if line.startswith("leadwire_ingress_leadgen_published_total")]
    assert published == ["leadwire_ingress_leadgen_published_total 40.0"], published  # both workers' counts

    async def all_queued() -> bool:
        return len(ids_of(await leadgen_tap.bodies(), set(ids))) == len(ids)

    await eventually(all_queued, what="every lead queued")


async def test_sigterm_stops_every_worker_cleanly(ingress_workers: Workers) -> None:
    pids = ingress_workers.pids()
    ingress_workers.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(ingress_workers.process.wait(), timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


async def test_a_dead_worker_takes_the_group_down_with_a_failure_code(ingress_workers: Workers) -> None:
    victim, other = sorted(ingress_workers.pids())
    os.kill(victim, signal.SIGKILL)
    assert await asyncio.wait_for(ingress_workers.process.wait(), timeout=30) == 1
    assert not Path(f"/proc/{other}").exists()


async def test_workers_do_not_outlive_a_killed_supervisor(ingress_workers: Workers) -> None:
    pids = ingress_workers.pids()
    ingress_workers.process.kill()
    await ingress_workers.process.wait()

    async def all_gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in pids)

    await eventually(all_gone, timeout=30, what="orphaned workers to stop")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return "zombie"
