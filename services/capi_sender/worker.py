"""Send conversions to Meta once, in batches of up to 1,000 per pixel, and record what Meta accepted.

The path of one `ConversionRequested`:

1. `Worker.process_many` (a consumer batch of up to 1,000 messages; `process` for one) finds each conversion's
   stored lead (by Meta lead id, one lookup per batch; else by the CRM's contact id, e-mail or phone,
   `shared.leads.match_leads`, counted in `leadwire_capi_outcomes_matched_total{by}`, `unmatched` included), fills
   in what the CRM left out from it (`lead_id` and the lead's answers), builds each server event
   (`events.prepare_event`) or parks it with a reason, and hands it to the batcher. The batch handler awaits the
   outcomes: a message is acked only after Meta accepted the request that carried its event.
2. `Worker.flush` (one batch of one pixel and test code): re-checks every event (it may have aged while it
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
from typing import Any

import asyncpg

from contracts.conversions import ConversionRequested
from contracts.messages import ConversionRequestedMessage
from services.capi_sender import metrics, store
from services.capi_sender.coalescing import Batcher, Coalescer, Entry, FlushIncompleteError
from services.capi_sender.events import (
    MAX_EVENTS_PER_REQUEST,
    LeadContact,
    Parked,
    PreparedEvent,
    RequestBatch,
    bisect_batch,
    check_event,
    prepare_event,
)
from services.capi_sender.logic import (
    IN_FLIGHT_RETRY_SECONDS,
    MAX_BATCH_AGE_SECONDS,
    MAX_SPLIT_REQUESTS,
    SEND_CONCURRENCY,
    SEND_MAX_WAIT_SECONDS,
    Delivery,
    Pending,
    SendOutcome,
    SplitBudgetExhaustedError,
    lead_contact,
    parked_error,
    retry_error,
)
from services.capi_sender.settings import CapiSettings
from shared.graph.errors import GraphError, InvalidRequestError, NotFoundError, ThrottledError, TransientError
from shared.leads import MatchedBy, OutcomeIdentifiers, load_leads, match_leads
from shared.messaging import PermanentError, RetryLater
from shared.poison import PoisonError, describe, isolate
from shared.retries import CircuitBreaker, DependencyUnavailable

logger = logging.getLogger(__name__)

PostFn = Callable[[RequestBatch], Awaitable[Mapping[str, Any]]]


async def fetch_contacts(pool: asyncpg.Pool, lead_ids: Sequence[str]) -> dict[str, LeadContact]:
    """The customer fields of the stored leads among `lead_ids` (read through `shared.leads`)."""
    return {lead_id: lead_contact(lead) for lead_id, lead in (await load_leads(pool, lead_ids)).items()}


def outcome_identifiers(request: ConversionRequested, *, with_lead_id: bool = True) -> OutcomeIdentifiers:
    """What a conversion says about its person, for `match_lead` (`external_id` is the CRM's contact id)."""
    user = request.user
    return OutcomeIdentifiers(lead_id=user.lead_id if with_lead_id else None, crm_reference=user.external_id,
                              email=user.email, phone=user.phone, country=user.country)


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


def guarded(post: PostFn, breaker: CircuitBreaker) -> PostFn:
    """`post` behind Meta's Conversions API circuit breaker: while Meta fails every request (5xx, connection
    errors), events wait in the delay queues and one request at a time probes it; the outage is one incident.

    A refusal, a throttle or an invalid event is Meta answering, not an outage.
    """

    async def post_guarded(batch: RequestBatch) -> dict[str, Any]:
        if not breaker.allow():
            for event in batch.events:
                breaker.hold(event.dedupe_key)
            raise DependencyUnavailable("Meta's Conversions API", breaker.wait_seconds())
        try:
            result = await post(batch)
        except GraphError as exc:
            if isinstance(exc, TransientError):
                breaker.failed(f"{type(exc).__name__} (code {exc.code})")
            else:
                breaker.succeeded()
            raise
        except BaseException:
            breaker.failed()  # an unknown outcome must not hold the breaker half-open
            raise
        breaker.succeeded()
        return result

    return post_guarded


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


class Worker:
    """Batches prepared events per (pixel, test code) and sends each once.

    Args:
        pool: the service's asyncpg pool.
        post: sends one request (`post_events` bound to the Graph client; tests may wrap it).
        settings: linger, CRM name, default country.
        default_pixel_id: META_PIXEL_ID.
        pixels_by_page: Page -> its account's pixel (LEADWIRE_ACCOUNTS_FILE): a conversion naming no pixel goes to
            the pixel of its lead's account, else to `default_pixel_id`.
        clock: unix seconds, injectable.
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        post: PostFn,
        settings: CapiSettings,
        default_pixel_id: str,
        pixels_by_page: Mapping[str, str] | None = None,
        max_batch: int = MAX_EVENTS_PER_REQUEST,
        concurrency: int = SEND_CONCURRENCY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._post = post
        self.settings = settings
        self.default_pixel_id = default_pixel_id
        self.pixels_by_page = dict(pixels_by_page or {})
        self._clock = clock
        self.batcher: Batcher[tuple[str, str | None], Pending] = Batcher(
            self.flush,
            max_size=max_batch,
            linger=settings.capi_linger_ms / 1000,
            max_age=MAX_BATCH_AGE_SECONDS,
            concurrency=concurrency,
        )
        self.leads: Coalescer[str, LeadContact] = Coalescer(lambda ids: fetch_contacts(self._pool, ids))

    async def flush_on_stop(self) -> None:
        """A background job that does nothing until the service stops; then every batch goes out at once.

        `Service.stop` cancels background jobs before the broker drains in-flight handlers, so the handlers that
        still wait for a batch get their answer without waiting out the linger.
        """
        try:
            await asyncio.Event().wait()
        finally:
            self.batcher.flush_all()

    async def process(self, message: ConversionRequestedMessage) -> SendOutcome:
        """Prepare one conversion and wait until its batch was sent (or found already sent).

        Raises:
            PermanentError: the event must not be sent (too old, no identifiers, Meta rejected it, ...).
            RetryLater: Meta throttled the request, or another batch is sending the same event right now.
        """
        request = message.payload
        lead = await self.leads.load(request.user.lead_id) if request.user.lead_id else None
        lead = (await self.find_leads([request], {request.user.lead_id or "": lead} if lead else {}))[0]
        prepared = prepare_event(
            request,
            now=int(self._clock()),
            lead=lead,
            default_pixel_id=self.pixel_for(lead),
            default_country=self.settings.default_country,
            default_crm_name=self.settings.capi_crm_name,
        )
        if isinstance(prepared, Parked):
            raise parked_error(prepared)
        pending = Pending(prepared, message, lead.created_time if lead else None)
        outcome: SendOutcome = await self.batcher.submit((prepared.pixel_id, prepared.test_event_code), pending)
        return outcome

    def pixel_for(self, lead: LeadContact | None) -> str:
        """The pixel of the lead's account (by its Page), else META_PIXEL_ID; a message's own pixel_id wins."""
        page = lead.page_id if lead is not None else None
        return self.pixels_by_page.get(page, self.default_pixel_id) if page else self.default_pixel_id

    async def find_leads(
        self, requests: Sequence[ConversionRequested], by_id: Mapping[str, LeadContact]
    ) -> list[LeadContact | None]:
        """Each conversion's stored lead: the one ``by_id`` has for its Meta lead id, or else matched by the CRM's
        contact id, e-mail or phone (`shared.leads.match_leads`, one query per step for all of them). Counted by
        how it matched, or `unmatched`: an unmatched conversion is still sent, with what the CRM gave."""
        leads: list[LeadContact | None] = [by_id.get(r.user.lead_id or "") for r in requests]
        rest = [i for i, lead in enumerate(leads) if lead is None]
        matched = await match_leads(self._pool, [outcome_identifiers(requests[i], with_lead_id=False) for i in rest],
                                    default_region=self.settings.default_country or "US") if rest else []
        for i, (lead, by) in zip(rest, matched, strict=True):
            metrics.OUTCOMES_MATCHED.labels(by.value).inc()
            if lead is None:
                logger.info("conversion matches no stored lead: sent with what the CRM gave",
                            extra={"event_name": requests[i].event_name})
            else:
                leads[i] = lead_contact(lead)
        if len(rest) < len(requests):
            metrics.OUTCOMES_MATCHED.labels(MatchedBy.LEAD_ID.value).inc(len(requests) - len(rest))
        return leads

    async def process_many(self, messages: Sequence[ConversionRequestedMessage]) -> list[SendOutcome | BaseException]:
        """Prepare a batch of conversions and wait until each was sent; one outcome or exception per message.

        What `process` does for one message, for many at once: one lookup of their stored leads (a query per way of
        matching, for all of them), and every event
        in the batcher before the first flush, so a full batch of messages fills a full request.
        """
        lead_ids = list({m.payload.user.lead_id for m in messages if m.payload.user.lead_id})
        by_id = await fetch_contacts(self._pool, lead_ids) if lead_ids else {}
        found = await self.find_leads([m.payload for m in messages], by_id)
        now = int(self._clock())
        results: list[SendOutcome | BaseException] = [FlushIncompleteError("no outcome")] * len(messages)
        waiting: list[tuple[int, asyncio.Future[Any]]] = []
        for index, message in enumerate(messages):
            request = message.payload
            lead = found[index]
            try:
                prepared = prepare_event(
                    request,
                    now=now,
                    lead=lead,
                    default_pixel_id=self.pixel_for(lead),
                    default_country=self.settings.default_country,
                    default_crm_name=self.settings.capi_crm_name,
                )
            except Exception as exc:  # one odd input (a bug, or a value nothing can send): that message parks alone
                logger.exception("preparing an event failed", extra={"message_id": str(message.message_id)})
                results[index] = PoisonError(f"could not prepare the event: {describe(exc)}")
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

        async def claim(items: Sequence[Pending]) -> dict[str, str]:
            async with self._pool.acquire() as conn:
                _, seen = await store.claim_events(conn, claim_id, pixel_id, test_event_code, items)
            return seen

        # One event the send log refuses (a value PostgreSQL cannot store) must not hold back the others: the
        # claim is split until it is alone, and only it parks.
        claimed, refused = await isolate([group[0].item for group in groups.values()], claim)
        for pending, exc in refused:
            metrics.EVENTS_PARKED.labels("unstorable").inc()
            _fail(groups.pop(pending.event.dedupe_key), PoisonError(f"the send log refused the event: {describe(exc)}"))
        seen = {key: status for part in claimed for key, status in part.items()}
        for dedupe_key, status in seen.items():
            group = groups.pop(dedupe_key)
            if status == "sent":
                metrics.EVENTS_DEDUPED.labels("log").inc(len(group))
                _resolve(group, SendOutcome.DUPLICATE)
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

            async def record(events: Sequence[PreparedEvent], part: RequestBatch = part, part_id: uuid.UUID = part_id,
                             response: Mapping[str, Any] = response) -> Sequence[PreparedEvent]:
                async with self._pool.acquire() as conn, conn.transaction():
                    await store.record_sent(conn, claim_id, RequestBatch(part.pixel_id, part.test_event_code,
                                                                         list(events)), part_id, response, messages)
                return events

            try:  # split until the events our log refuses are alone (is_poison); they park, the others are recorded
                recorded, refused = await isolate(part.events, record)
            except Exception as exc:
                # Meta has the events but our log does not: the retried messages wait out the claim, then
                # resend, and Meta discards the repeats by event_id (docs/meta-api.md §8.5).
                logger.exception("recording a sent batch failed", extra={"batch_id": str(part_id)})
                for event in part.events:
                    _fail(groups[event.dedupe_key], exc)
                continue
            for event, error in refused:
                metrics.EVENTS_PARKED.labels("unstorable").inc()
                _fail(groups[event.dedupe_key], PoisonError(f"the send log refused the event: {describe(error)}"))
            sent = [event for events in recorded for event in events]
            metrics.EVENTS_SENT.inc(len(sent))
            logger.info(
                "capi request accepted: %s events", len(part.events),
                extra={"pixel_id": part.pixel_id, "batch_id": str(part_id), "fbtrace_id": response.get("fbtrace_id"),
                       "events_received": response.get("events_received")},
            )
            for event in sent:
                group = groups[event.dedupe_key]
                _resolve(group[:1], SendOutcome.SENT)
                _resolve(group[1:], SendOutcome.DUPLICATE)

        for event, error in delivery.rejected:
            try:
                async with self._pool.acquire() as conn:
                    await store.record_rejected(conn, claim_id, event, error)
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
                async with self._pool.acquire() as conn:
                    await store.record_failed(conn, claim_id, keys)
            except Exception:
                logger.exception("releasing the claim of a failed request failed")
            logger.warning(
                "capi request of %s events failed: %s", len(part.events), exc, extra={"pixel_id": part.pixel_id}
            )
            error = retry_error(exc, len(keys))
            for key in keys:
                _fail(groups[key], error)


def _resolve(group: Sequence[Entry[Pending]], outcome: SendOutcome) -> None:
    for entry in group:
        entry.resolve(outcome)


def _fail(group: Sequence[Entry[Pending]], exc: BaseException) -> None:
    for entry in group:
        entry.fail(exc)
