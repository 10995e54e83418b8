"""The console's Stuck page over plain HTTP against a RabbitMQ vhost of this module's own: parked messages by queue
and reason, replay of one and of a group, CSRF, and an audit row of who replayed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import asyncpg
import pytest

from shared.messaging import declare_topology
from shared.parked import ParkedMessage
from shared.settings import BrokerSettings, Settings
from shared.topology import H_ATTEMPT, H_FIRST_FAILURE, H_PARKED_AT, H_REASON, Consumer, consumer
from tests.fixtures.console import Console, csrf_of, running_console
from tests.fixtures.infra import eventually

CRM = consumer("crm_sync", "lead_captured")
CAPI = consumer("capi_sender", "conversion_requested")


async def park(url: str, spec: object, reason: str, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for message_id in ids:
            headers = {H_REASON: reason, H_ATTEMPT: 5, H_PARKED_AT: datetime.now(UTC).isoformat(),
                       H_FIRST_FAILURE: f"{datetime.now(UTC).timestamp() - 3600:.3f}"}
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", message_id=message_id, type="LeadCaptured", headers=headers),
                routing_key=spec.parking_queue_name,  # type: ignore[attr-defined]
            )
    return ids


async def purge(url: str, *specs: object) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for spec in specs:
            queue = await channel.declare_queue(spec.parking_queue_name, passive=True)  # type: ignore[attr-defined]
            await queue.purge()


async def waiting(url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def test_stuck_lists_parked_messages_by_reason_and_replays_one_then_a_group(
    settings: Settings, console_dsn: str, console_db: asyncpg.Pool, vhost_url: str
) -> None:
    with_vhost = settings.replace(BrokerSettings(amqp_url=vhost_url))
    async with running_console(with_vhost, console_dsn) as console:
        await console.login()
        status, page, _ = await console.get("/stuck")
        assert status == 200
        assert 'data-testid="nothing-stuck"' in page  # no service has declared its queues here yet: none parked
        await declare_topology(vhost_url, [])
        crm_ids = await park(vhost_url, CRM, "CRM (webhook) answered 422: email is invalid", 3)
        await park(vhost_url, CAPI, "contract: event_time must be a number", 1)

        # A sweep reads as many messages as the queue's count said; a quorum queue's count lags by a few seconds.
        page = await eventually(lambda: _page_with(console, "<strong>4</strong> parked message(s)"), timeout=30,
                                what="4 parked messages listed")
        assert "crm_sync/lead_captured · 3" in page
        assert "CRM (webhook) answered 422: email is invalid" in page
        assert "capi_sender/conversion_requested · 1" in page
        assert all(i in page for i in crm_ids)
        # Listing leaves every message parked.
        again = await eventually(lambda: _page_with(console, "<strong>4</strong> parked message(s)"), timeout=30,
                                 what="still 4 after a listing")
        assert again.count("data-message=") == 4

        # A replay without the session's CSRF token is refused and replays nothing.
        status, _, _ = await console.post("/stuck/replay", {"queue": "crm_sync/lead_captured", "id": crm_ids[0]})
        assert status == 403
        # One message, then the rest of its group, go back to crm_sync's own queue.
        token = csrf_of(page)
        status, _, resp = await console.post("/stuck/replay", {"csrf_token": token, "queue": "crm_sync/lead_captured",
                                                                "id": crm_ids[0]})
        assert status == 303
        assert resp.headers["Location"] == "/stuck?notice=replayed-1"
        page = await eventually(lambda: _page_with(console, "<strong>3</strong> parked message(s)"), timeout=30,
                                what="3 left")
        assert crm_ids[0] not in page
        assert crm_ids[1] in page
        status, _, resp = await console.post("/stuck/replay", {
            "csrf_token": token, "queue": "crm_sync/lead_captured",
            "reason": "CRM (webhook) answered 422: email is invalid"})
        assert resp.headers["Location"] == "/stuck?notice=replayed-2"
        page = await eventually(lambda: _page_with(console, "<strong>1</strong> parked message(s)"), timeout=30,
                                what="1 left")
        assert "crm_sync/lead_captured" not in page.split("<form class=\"filters\"")[1].split("</form>", 1)[1]
        assert "capi_sender/conversion_requested · 1" in page  # another queue's message stays parked

        # A quorum queue's count follows its messages by a few seconds.
        await eventually(lambda: _equals(waiting(vhost_url, CRM.queue_name), 3), what="3 replayed", timeout=30)
        audit = await console_db.fetchval(
            "select string_agg(subject, '; ' order by at) from console_audit where action = 'parked_replay'")
        assert "crm_sync/lead_captured: 1 replayed" in audit
        assert "crm_sync/lead_captured: 2 replayed" in audit
        # An unknown queue is a clear 400, not a crash.
        assert (await console.get("/stuck?queue=nope/nothing"))[0] == 400


async def _equals(count: asyncio.Future[int] | object, expected: int) -> bool | None:
    return True if await count == expected else None  # type: ignore[misc]


async def _page_with(console: Console, text: str) -> str | None:
    _, page, _ = await console.get("/stuck")
    return page if text in page else None



async def test_the_listing_sweeps_a_queue_again_only_when_its_count_changed_it_aged_or_it_was_replayed(
    vhost_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.console import parked as console_parked
    from shared.parked import Action, Selection, apply, list_parked

    swept: list[list[str]] = []  # the queues each sweep read (the real sweep runs)

    async def counted(url: str, consumers: list[Consumer]) -> list[ParkedMessage]:
        swept.append([c.name for c in consumers])
        return await list_parked(url, consumers)

    monkeypatch.setattr(console_parked, "list_parked", counted)
    await declare_topology(vhost_url, [CRM, CAPI])  # their parking queues, as the services declare them
    await purge(vhost_url, CRM, CAPI)  # what the module's other test left there
    listing = console_parked.ParkedListing()
    ids = await park(vhost_url, CRM, "CRM (webhook) answered 422: email is invalid", 3)

    async def listed(expected: int, max_age: float = 600) -> list[str] | None:
        messages = await listing.read(vhost_url, [CRM, CAPI], max_age)
        return [m.id for m in messages] if len(messages) == expected else None

    assert await eventually(lambda: listed(3), timeout=30, what="3 listed") == ids  # in the queue's order
    assert all(m.body == b"" and not m.headers for m in await listing.read(vhost_url, [CRM], 600))  # no bodies kept
    assert swept[-1] == ["lead_captured"]  # the empty CAPI queue is not read
    # Read again while the count stands: from the listing, the queue untouched.
    sweeps = len(swept)
    assert await listed(3) == ids
    assert await listed(3) == ids
    assert len(swept) == sweeps
    # A fourth message parked: the count changes and the queue is read again.
    fourth = await park(vhost_url, CRM, "CRM (webhook) answered 422: email is invalid", 1)
    assert await eventually(lambda: listed(4), timeout=30, what="4 listed") == ids + fourth
    assert len(swept) > sweeps
    # The console replayed from it: read again at once.
    assert len(await apply(vhost_url, [CRM], Selection(ids=frozenset(fourth)), Action.REPLAY)) == 1
    listing.forget([CRM])
    sweeps = len(swept)
    assert await listed(3) == ids
    assert len(swept) == sweeps + 1
    # Older than max_age: read again; none of these readings lost, reordered or duplicated a message.
    assert await listed(3, max_age=0) == ids
    assert len(swept) == sweeps + 2
    assert [m.id for m in await list_parked(vhost_url, [CRM])] == ids
