"""Send conversions to Meta once, in batches of up to 1,000 per pixel, and record what Meta accepted.

The path of one `ConversionRequested`:

1. `CapiSender.process_many` (a consumer batch of up to 1,000 messages; `process` for one) fills in what the CRM
   left out from the stored leads (`leads.fields`, one lookup per batch), builds each server event
   (`events.prepare_event`) or parks it with a reason, and hands it to the batcher. The batch handler awaits the
   outcomes: a message is acked only after Meta accepted the request that carried its event.
2. `CapiSender.flush` (one batch of one pixel and test code): re-checks every event (it may have aged while it
   waited), keeps one copy per dedupe key, claims the keys in `capi_events` (a key sent within 48 h, or being
   sent by another batch, is not sent again), and posts the batch.
3. `deliver` posts it; when Meta rejects the whole request for one invalid event (docs/meta-api.md §8.1) it
   bisects and resends the halves, so the good events go and the bad one is parked with Meta's error.
4. Accepted events are marked `sent` with Meta's `events_received` and `fbtrace_id`, and one `ConversionSent`
   listing them is written to the outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from contracts.messages import ConversionRequestedMessage, ConversionSentMessage
from services.capi_sender import metrics
from services.capi_sender.batcher import Batcher, Coalescer, Entry, FlushIncompleteError
from services.capi_sender.events import (
    MAX_EVENTS_PER_REQUEST,
    Parked,
    PreparedEvent,
    RequestBatch,
    StoredLead,
    bisect_batch,
    check_event,
    conversions_sent,
    prepare_event,
)
from services.capi_sender.settings import CapiSettings
from shared.graph.errors import GraphError, InvalidRequestError, NotFoundError, ThrottledError
from shared.messaging import PermanentError, RetryLater
from shared.meta.customer_data import HASHED_KEYS
from shared.outbox import enqueue

logger = logging.getLogger(__name__)

# Meta discards a repeat of (event_name, event_id) within 48 hours (docs/meta-api.md §8.5); we do not send one.
DEDUPE_WINDOW_SECONDS = 48 * 3600
# A claim older than this belongs to a crashed process: its keys may be sent again. It must outlast the
# slowest batch (linger, client retries within SEND_MAX_WAIT_SECONDS, a full bisection).
CLAIM_STALE_SECONDS = 600
# A repeat of an event another batch is sending right now comes back after this long (not counted as an attempt).
IN_FLIGHT_RETRY_SECONDS = 60.0
# Longest throttle wait the Graph client may sit out inside a batch; longer goes back to the queue (RetryLater).
SEND_MAX_WAIT_SECONDS = 10.0
# Requests one batch may spend isolating rejected events (~20 per bad event in a batch of 1,000).
MAX_SPLIT_REQUESTS = 100
# Concurrent requests per process: the Meta SDK's batch processor sends one at a time (docs/prior-art.md §3).
SEND_CONCURRENCY = 4
# Longest a partly filled batch waits while events keep joining it (CAPI_LINGER_MS is the quiet gap that ends it).
MAX_BATCH_AGE_SECONDS = 10.0

# Meta's standard lead-form question keys -> stored-lead field; the first key present wins.
LEAD_FIELD_KEYS: tuple[tuple[str, str], ...] = (
    ("email", "email"),
    ("work_email", "email"),
    ("phone_number", "phone"),
    ("work_phone_number", "phone"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("city", "city"),
    ("state", "state"),
    ("province", "state"),
    ("zip_code", "zip"),
    ("post_code", "zip"),
    ("postal_code", "zip"),
    ("country", "country"),
    ("gender", "gender"),
    ("date_of_birth", "date_of_birth"),
)

PostFn = Callable[[RequestBatch], Awaitable[Mapping[str, Any]]]


class Outcome(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Pending:
    """A prepared event waiting in a batch, with what the flush needs around it."""

    event: PreparedEvent
    message: ConversionRequestedMessage
    lead_created_time: int | None = None

    @property
    def lead_id(self) -> str | None:
        value = self.event.server_event.get("user_data", {}).get("lead_id")
        return str(value) if value else None


@dataclass
class Delivery:
    """What happened to the parts of one batch: accepted (with Meta's answer), rejected events, failed parts."""

    accepted: list[tuple[RequestBatch, uuid.UUID, Mapping[str, Any]]] = field(default_factory=list)
    rejected: list[tuple[PreparedEvent, GraphError]] = field(default_factory=list)
    failed: list[tuple[RequestBatch, Exception]] = field(default_factory=list)
    requests: int = 0


class SplitBudgetExhaustedError(Exception):
    """Meta kept rejecting parts of a batch; the rest goes back to the queue instead of costing more requests."""


# -- stored leads ------------------------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if isinstance(value, list):  # a multi-value answer: the first one
        value = value[0] if value else None
    if value is None or isinstance(value, bool | dict):
        return None
    text = str(value).strip()
    return text or None


def stored_lead(leadgen_id: str, created_time: datetime | None, fields: Mapping[str, Any] | None) -> StoredLead:
    """A `leads` row as the customer fields Meta matches on (from Meta's standard question keys)."""
    answers = {str(key).strip().lower(): value for key, value in (fields or {}).items()}
    found: dict[str, str] = {}
    for question, name in LEAD_FIELD_KEYS:
        if name not in found and (text := _text(answers.get(question))):
            found[name] = text
    if ("first_name" not in found or "last_name" not in found) and (full := _text(answers.get("full_name"))):
        words = full.split()
        if len(words) > 1:
            found.setdefault("first_name", " ".join(words[:-1]))
            found.setdefault("last_name", words[-1])
        else:
            found.setdefault("first_name", full)
    return StoredLead(
        lead_id=leadgen_id,
        created_time=int(created_time.timestamp()) if created_time is not None else None,
        **found,
    )


async def fetch_leads(pool: asyncpg.Pool, lead_ids: Sequence[str]) -> dict[str, StoredLead]:
    rows = await pool.fetch(
        "select leadgen_id, created_time, fields from leads where leadgen_id = any($1::text[])", list(lead_ids)
    )
    return {row["leadgen_id"]: stored_lead(row["leadgen_id"], row["created_time"], row["fields"]) for row in rows}


# -- the send log ------------------------------------------------------------------------------------------------


def user_data_hashes(event: PreparedEvent) -> dict[str, Any]:
    """The hashed customer keys only: clear identifiers (IP, user agent, cookies) never reach the log."""
    return {key: value for key, value in event.server_event["user_data"].items() if key in HASHED_KEYS}


async def claim_events(
    conn: asyncpg.Connection, claim_id: uuid.UUID, pixel_id: str, test_event_code: str | None, items: Sequence[Pending]
) -> tuple[set[str], dict[str, str]]:
    """Claim the dedupe keys of a batch before sending it.

    Returns the keys this batch may send, and for the others their current status (`sent` = sent within the
    dedupe window; `sending` = another batch has it in flight).
    """
    claimed = await conn.fetch(
        """
        insert into capi_events as e (dedupe_key, pixel_id, event_name, event_id, event_time, lead_id, status,
                                      batch_id, user_data_hashes, identifiers, dropped_fields, test_event_code)
        select u.k, $2, u.n, u.i, to_timestamp(u.t), u.l, 'sending', $1, u.h,
               string_to_array(u.ids, ','), string_to_array(u.d, ','), $3
        from unnest($4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::jsonb[], $10::text[],
                    $11::text[]) as u(k, n, i, t, l, h, ids, d)
        on conflict (dedupe_key) do update
            set status = 'sending', batch_id = excluded.batch_id, claimed_at = now(), sent_at = null,
                event_time = excluded.event_time, lead_id = excluded.lead_id,
                user_data_hashes = excluded.user_data_hashes, identifiers = excluded.identifiers,
                dropped_fields = excluded.dropped_fields, test_event_code = excluded.test_event_code,
                events_received = null, fbtrace_id = null, error = null
            where e.status in ('rejected', 'failed')
               or (e.status = 'sending' and e.claimed_at < now() - make_interval(secs => $12))
               or (e.status = 'sent' and e.sent_at < now() - make_interval(secs => $13))
        returning dedupe_key
        """,
        claim_id,
        pixel_id,
        test_event_code,
        [p.event.dedupe_key for p in items],
        [p.event.event_name for p in items],
        [p.event.event_id for p in items],
        [p.event.event_time for p in items],
        [p.lead_id for p in items],
        [user_data_hashes(p.event) for p in items],
        [",".join(sorted(p.event.server_event["user_data"])) for p in items],
        [",".join(p.event.dropped) for p in items],
        float(CLAIM_STALE_SECONDS),
        float(DEDUPE_WINDOW_SECONDS),
    )
    mine = {row["dedupe_key"] for row in claimed}
    others = [p.event.dedupe_key for p in items if p.event.dedupe_key not in mine]
    seen: dict[str, str] = {}
    if others:
        rows = await conn.fetch(
            "select dedupe_key, status from capi_events where dedupe_key = any($1::text[])", others
        )
        seen = {row["dedupe_key"]: row["status"] for row in rows}
        for key in others:
            seen.setdefault(key, "sending")  # vanished in between: treat as busy, the retry sorts it out
    return mine, seen


async def record_sent(
    conn: asyncpg.Connection,
    claim_id: uuid.UUID,
    part: RequestBatch,
    part_id: uuid.UUID,
    response: Mapping[str, Any],
    messages: Mapping[str, ConversionRequestedMessage],
) -> None:
    """Mark a part Meta accepted as sent and put its `ConversionSent` in the outbox (one transaction)."""
    received = response.get("events_received")
    trace = response.get("fbtrace_id")
    await conn.execute(
        "update capi_events set status = 'sent', sent_at = now(), batch_id = $2, events_received = $3, "
        "fbtrace_id = $4 where dedupe_key = any($1::text[]) and batch_id = $5",
        [event.dedupe_key for event in part.events],
        part_id,
        int(received) if received is not None else None,
        str(trace) if trace else None,
        claim_id,
    )
    await enqueue(conn, ConversionSentMessage.new(conversions_sent(part, response, messages)))


async def record_rejected(
    conn: asyncpg.Connection, claim_id: uuid.UUID, event: PreparedEvent, error: GraphError
) -> None:
    await conn.execute(
        "update capi_events set status = 'rejected', error = $2 where dedupe_key = $1 and batch_id = $3",
        event.dedupe_key,
        meta_error(error),
        claim_id,
    )


async def record_failed(conn: asyncpg.Connection, claim_id: uuid.UUID, keys: Sequence[str]) -> None:
    """Release keys whose send failed, so the retried message can claim them again at once."""
    await conn.execute(
        "update capi_events set status = 'failed' where dedupe_key = any($1::text[]) and batch_id = $2 "
        "and status = 'sending'",
        list(keys),
        claim_id,
    )


# Rows one pruning statement deletes at most.
PRUNE_CHUNK = 5000
# How often the capi_sender prunes its send log.
PRUNE_INTERVAL_SECONDS = 3600.0

# Sent rows age from `sent_at`; rejected, failed and abandoned claims from `claimed_at`. Both are found through the
# BRIN index on `claimed_at` (a row is sent within minutes of its claim, so `claimed_at` is older than `sent_at`).
_PRUNABLE = (
    "status = 'sent' and claimed_at < now() - make_interval(secs => $1) "
    "and sent_at < now() - make_interval(secs => $1)",
    "status <> 'sent' and claimed_at < now() - make_interval(secs => $1)",
)


async def prune_send_log(
    pool: asyncpg.Pool, *, older_than: float = DEDUPE_WINDOW_SECONDS, chunk: int = PRUNE_CHUNK
) -> int:
    """Delete send-log rows older than the dedupe window, in chunks (no statement holds locks for long).

    A row past the window no longer stops a send (`claim_events` takes its key again), so it only costs space.
    Returns how many rows were deleted.
    """
    deleted = 0
    for condition in _PRUNABLE:
        while True:
            status = await pool.execute(
                f"delete from capi_events where dedupe_key in "  # noqa: S608 - fixed conditions, values are $n
                f"(select dedupe_key from capi_events where {condition} limit $2)",
                float(older_than),
                chunk,
            )
            count = int(status.split()[-1])
            deleted += count
            if count < chunk:
                break
    if deleted:
        logger.info("pruned %s send-log rows older than the dedupe window", deleted)
    return deleted


async def prune_periodically(pool: Callable[[], asyncpg.Pool], interval: float = PRUNE_INTERVAL_SECONDS) -> None:
    """A background job: prune the send log now and then every `interval` seconds."""
    while True:
        await prune_send_log(pool())
        await asyncio.sleep(interval)


def meta_error(error: GraphError) -> dict[str, Any]:
    """Meta's error fields as logged and stored (our events carry only hashes, so Meta cannot echo clear PII)."""
    return {
        "code": error.code,
        "subcode": error.subcode,
        "fbtrace_id": error.fbtrace_id,
        "message": error.message,
        "user_message": error.user_message,
    }


# -- talking to Meta ---------------------------------------------------------------------------------------------


async def post_events(graph: Any, batch: RequestBatch) -> dict[str, Any]:
    """`POST /{pixel_id}/events` through the shared Graph client (pacing, transient retries, typed errors).

    `idempotent=True`: a request lost after sending is retried; Meta discards the repeat of an
    (event_name, event_id) within 48 h (docs/meta-api.md §8.5). The body goes as JSON, which Meta accepts
    (docs/meta-api.md §8.1): form-encoding ~700 KB of events was a tenth of the sender's CPU.
    """
    result: dict[str, Any] = await graph.post(
        f"{batch.pixel_id}/events", batch.body(), max_wait=SEND_MAX_WAIT_SECONDS, idempotent=True, json_body=True
    )
    return result


async def deliver(post: PostFn, batch: RequestBatch, *, max_requests: int = MAX_SPLIT_REQUESTS) -> Delivery:
    """Post a batch; when Meta rejects it as invalid, bisect and resend the halves until each bad event is alone.

    Never raises for Meta's answers: every part ends up accepted, rejected (single events) or failed.
    """
    delivery = Delivery()

    async def attempt(part: RequestBatch) -> None:
        if delivery.requests >= max_requests:
            delivery.failed.append((part, SplitBudgetExhaustedError(f"{max_requests} requests spent on one batch")))
            return
        delivery.requests += 1
        metrics.BATCH_EVENTS.observe(len(part.events))
        try:
            response = await post(part)
        except NotFoundError as exc:  # the pixel itself is wrong: no event's fault, nothing to isolate
            metrics.REQUESTS.labels("failed").inc()
            delivery.failed.append((part, exc))
        except InvalidRequestError as exc:
            metrics.REQUESTS.labels("rejected").inc()
            if len(part.events) == 1:
                delivery.rejected.append((part.events[0], exc))
                return
            logger.warning(
                "meta rejected a request of %s events (code=%s subcode=%s fbtrace_id=%s); splitting it",
                len(part.events), exc.code, exc.subcode, exc.fbtrace_id,
                extra={"pixel_id": part.pixel_id},
            )
            first, second = bisect_batch(part.events)
            await asyncio.gather(
                attempt(RequestBatch(part.pixel_id, part.test_event_code, first)),
                attempt(RequestBatch(part.pixel_id, part.test_event_code, second)),
            )
        except ThrottledError as exc:
            metrics.REQUESTS.labels("throttled").inc()
            delivery.failed.append((part, exc))
        except Exception as exc:  # transient after the client's retries, auth, permission: the queue retries
            metrics.REQUESTS.labels("failed").inc()
            delivery.failed.append((part, exc))
        else:
            metrics.REQUESTS.labels("accepted").inc()
            received = response.get("events_received")
            if received is not None and int(received) != len(part.events):
                logger.warning(
                    "meta reports %s events received for a request of %s", received, len(part.events),
                    extra={"pixel_id": part.pixel_id, "fbtrace_id": response.get("fbtrace_id")},
                )
            delivery.accepted.append((part, uuid.uuid4(), response))

    await attempt(batch)
    return delivery


# -- the sender --------------------------------------------------------------------------------------------------


def parked_error(parked: Parked) -> PermanentError:
    """Count a parked event and the exception that parks its message (reason names fields, never values)."""
    metrics.EVENTS_PARKED.labels(parked.reason.value).inc()
    return PermanentError(f"{parked.reason.value}: {parked.detail}")


def retry_error(exc: Exception, events: int) -> Exception:
    """What a handler raises for a part that failed: a throttle waits out Meta's time, the rest back off."""
    if isinstance(exc, ThrottledError):
        metrics.EVENTS_RETRIED.labels("throttled").inc(events)
        return RetryLater(f"meta throttled the request: {exc}", exc.retry_after or 60.0, counts_attempt=False)
    metrics.EVENTS_RETRIED.labels("failed").inc(events)
    return exc


class CapiSender:
    """Batches prepared events per (pixel, test code) and sends each once.

    Args:
        pool: returns the asyncpg pool (available once the service started).
        post: sends one request (`post_events` bound to the Graph client; tests may wrap it).
        settings: linger, CRM name, default country.
        default_pixel_id: META_PIXEL_ID.
        clock: unix seconds, injectable.
    """

    def __init__(
        self,
        *,
        pool: Callable[[], asyncpg.Pool],
        post: PostFn,
        settings: CapiSettings,
        default_pixel_id: str,
        max_batch: int = MAX_EVENTS_PER_REQUEST,
        concurrency: int = SEND_CONCURRENCY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._post = post
        self.settings = settings
        self.default_pixel_id = default_pixel_id
        self._clock = clock
        self.batcher: Batcher[tuple[str, str | None], Pending] = Batcher(
            self.flush,
            max_size=max_batch,
            linger=settings.capi_linger_ms / 1000,
            max_age=MAX_BATCH_AGE_SECONDS,
            concurrency=concurrency,
        )
        self.leads: Coalescer[str, StoredLead] = Coalescer(lambda ids: fetch_leads(self._pool(), ids))

    async def flush_on_stop(self) -> None:
        """A background job that does nothing until the service stops; then every batch goes out at once.

        `Service.stop` cancels background jobs before the broker drains in-flight handlers, so the handlers that
        still wait for a batch get their answer without waiting out the linger.
        """
        try:
            await asyncio.Event().wait()
        finally:
            self.batcher.flush_all()

    async def process(self, message: ConversionRequestedMessage) -> Outcome:
        """Prepare one conversion and wait until its batch was sent (or found already sent).

        Raises:
            PermanentError: the event must not be sent (too old, no identifiers, Meta rejected it, ...).
            RetryLater: Meta throttled the request, or another batch is sending the same event right now.
        """
        request = message.payload
        lead = await self.leads.load(request.user.lead_id) if request.user.lead_id else None
        prepared = prepare_event(
            request,
            now=int(self._clock()),
            lead=lead,
            default_pixel_id=self.default_pixel_id,
            default_country=self.settings.default_country,
            default_crm_name=self.settings.capi_crm_name,
        )
        if isinstance(prepared, Parked):
            raise parked_error(prepared)
        pending = Pending(prepared, message, lead.created_time if lead else None)
        outcome: Outcome = await self.batcher.submit((prepared.pixel_id, prepared.test_event_code), pending)
        return outcome

    async def process_many(self, messages: Sequence[ConversionRequestedMessage]) -> list[Outcome | BaseException]:
        """Prepare a batch of conversions and wait until each was sent; one outcome or exception per message.

        What `process` does for one message, for many at once: one lookup of their stored leads, and every event
        in the batcher before the first flush, so a full batch of messages fills a full request.
        """
        lead_ids = list({m.payload.user.lead_id for m in messages if m.payload.user.lead_id})
        leads = await fetch_leads(self._pool(), lead_ids) if lead_ids else {}
        now = int(self._clock())
        results: list[Outcome | BaseException] = [FlushIncompleteError("no outcome")] * len(messages)
        waiting: list[tuple[int, asyncio.Future[Any]]] = []
        for index, message in enumerate(messages):
            request = message.payload
            lead = leads.get(request.user.lead_id) if request.user.lead_id else None
            try:
                prepared = prepare_event(
                    request,
                    now=now,
                    lead=lead,
                    default_pixel_id=self.default_pixel_id,
                    default_country=self.settings.default_country,
                    default_crm_name=self.settings.capi_crm_name,
                )
            except Exception as exc:  # a bug on one odd input must not fail the batch: that message retries
                logger.exception("preparing an event failed", extra={"message_id": str(message.message_id)})
                results[index] = exc
                continue
            if isinstance(prepared, Parked):
                results[index] = parked_error(prepared)
                continue
            pending = Pending(prepared, message, lead.created_time if lead else None)
            waiting.append((index, self.batcher.submit((prepared.pixel_id, prepared.test_event_code), pending)))
        if waiting:
            outcomes = await asyncio.gather(*(future for _, future in waiting), return_exceptions=True)
            for (index, _), outcome in zip(waiting, outcomes, strict=True):
                results[index] = outcome
        return results

    async def flush(self, key: tuple[str, str | None], entries: list[Entry[Pending]]) -> None:
        """Check, dedupe, claim, send and record one batch; resolve every entry's future."""
        pixel_id, test_event_code = key
        started = time.perf_counter()
        now = int(self._clock())
        groups: dict[str, list[Entry[Pending]]] = {}
        for entry in entries:
            pending = entry.item
            # Again right before sending: an event may have aged past Meta's 7 days while it waited or retried.
            problem = check_event(
                pending.event.server_event,
                now=now,
                lead_created_time=pending.lead_created_time,
                dropped=pending.event.dropped,
            )
            if problem is not None:
                entry.fail(parked_error(problem))
            else:
                groups.setdefault(pending.event.dedupe_key, []).append(entry)
        copies = sum(len(group) - 1 for group in groups.values())
        if copies:
            metrics.EVENTS_DEDUPED.labels("batch").inc(copies)
        if not groups:
            return

        claim_id = uuid.uuid4()
        async with self._pool().acquire() as conn:
            _, seen = await claim_events(
                conn, claim_id, pixel_id, test_event_code, [group[0].item for group in groups.values()]
            )
        for dedupe_key, status in seen.items():
            group = groups.pop(dedupe_key)
            if status == "sent":
                metrics.EVENTS_DEDUPED.labels("log").inc(len(group))
                _resolve(group, Outcome.DUPLICATE)
            else:
                metrics.EVENTS_RETRIED.labels("in_flight").inc(len(group))
                _fail(group, RetryLater("the same event is being sent by another batch", IN_FLIGHT_RETRY_SECONDS))
        if not groups:
            return

        batch = RequestBatch(pixel_id, test_event_code, [group[0].item.event for group in groups.values()])
        delivery = await deliver(self._post, batch)
        await self._record(claim_id, groups, delivery)
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)

    async def _record(
        self, claim_id: uuid.UUID, groups: dict[str, list[Entry[Pending]]], delivery: Delivery
    ) -> None:
        messages = {key: group[0].item.message for key, group in groups.items()}
        for part, part_id, response in delivery.accepted:
            part_groups = [groups[event.dedupe_key] for event in part.events]
            try:
                async with self._pool().acquire() as conn, conn.transaction():
                    await record_sent(conn, claim_id, part, part_id, response, messages)
            except Exception as exc:
                # Meta has the events but our log does not: the retried messages wait out the claim, then
                # resend, and Meta discards the repeats by event_id (docs/meta-api.md §8.5).
                logger.exception("recording a sent batch failed", extra={"batch_id": str(part_id)})
                for group in part_groups:
                    _fail(group, exc)
                continue
            metrics.EVENTS_SENT.inc(len(part.events))
            logger.info(
                "capi request accepted: %s events", len(part.events),
                extra={"pixel_id": part.pixel_id, "batch_id": str(part_id), "fbtrace_id": response.get("fbtrace_id"),
                       "events_received": response.get("events_received")},
            )
            for group in part_groups:
                _resolve(group[:1], Outcome.SENT)
                _resolve(group[1:], Outcome.DUPLICATE)

        for event, error in delivery.rejected:
            try:
                async with self._pool().acquire() as conn:
                    await record_rejected(conn, claim_id, event, error)
            except Exception:
                logger.exception("recording a rejected event failed", extra={"event_id": event.event_id})
            logger.warning(
                "meta rejected event %s: code=%s subcode=%s fbtrace_id=%s", event.event_id, error.code,
                error.subcode, error.fbtrace_id, extra={"pixel_id": event.pixel_id},
            )
            metrics.EVENTS_PARKED.labels("meta_rejected").inc()
            _fail(groups[event.dedupe_key], PermanentError(f"meta_rejected: {error}"))

        for part, exc in delivery.failed:
            keys = [event.dedupe_key for event in part.events]
            try:
                async with self._pool().acquire() as conn:
                    await record_failed(conn, claim_id, keys)
            except Exception:
                logger.exception("releasing the claim of a failed request failed")
            logger.warning(
                "capi request of %s events failed: %s", len(part.events), exc, extra={"pixel_id": part.pixel_id}
            )
            error = retry_error(exc, len(keys))
            for key in keys:
                _fail(groups[key], error)


def _resolve(group: Sequence[Entry[Pending]], outcome: Outcome) -> None:
    for entry in group:
        entry.resolve(outcome)


def _fail(group: Sequence[Entry[Pending]], exc: BaseException) -> None:
    for entry in group:
        entry.fail(exc)
