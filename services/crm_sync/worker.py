"""Deliver each captured lead to every configured CRM adapter, at most once per adapter.

Per (lead, adapter) a row of `crm_deliveries` is locked for the duration of the delivery (`for update skip
locked`), so two copies of the same lead handled at once cannot both create a contact; its state commits with the
LeadSynced message through the outbox. A `delivered` row is never delivered again. Concurrent messages share one
transaction (`deliver_group`): the requests are one per lead and adapter, the statements one per group.

Each adapter has a circuit breaker (`shared.retries.CircuitBreaker`): after BREAKER_FAILURES transient failures in
a row it opens, and leads for that adapter wait in the delay queues without a request (their rows untouched)
while one probe at a time tests the CRM. A transient failure is retried until RETRY_HORIZON_HOURS; only a refusal
(4xx) or the horizon ends a delivery as `failed` (the message is parked: that is the alert, one per incident).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from contracts.leads import LeadSynced
from contracts.messages import LeadCapturedMessage, LeadSyncedMessage
from services.crm_sync import metrics, store
from services.crm_sync.adapters import Adapter, DeliveryFailure
from services.crm_sync.logic import (
    NO_ADAPTER,
    DeliveryOutcome,
    LeadNotStored,
    Result,
    raise_for_deliveries,
)
from shared.group_commit import GroupRunner
from shared.leads import StoredLead, load_lead, load_leads
from shared.messaging import PermanentError
from shared.outbox import enqueue_many
from shared.retries import CircuitBreaker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One LeadCaptured message to deliver, with its attempt number; `expired`: its retry horizon has passed (a
    transient failure now ends the delivery as `failed`)."""

    message: LeadCapturedMessage
    attempt: int
    max_attempts: int
    expired: bool = False

    @property
    def leadgen_id(self) -> str:
        return self.message.payload.leadgen_id


# A job's outcome: per adapter, what happened; None when the lead is not stored.
JobOutcome = dict[str, Result] | None

MAX_GROUP = 50  # leads per delivery transaction
GROUPS_IN_FLIGHT = 4  # delivery transactions at once (each holds a pool connection while its requests run)
# CRM requests in flight at once across groups: a CRM sees no bigger bursts than before grouping, when the database
# pool (10) bounded them (GoHighLevel allows 100 requests per 10 s per location).
REQUESTS_IN_FLIGHT = 10


class Worker:
    """Delivers LeadCaptured messages; concurrent ones share their database work (`deliver_group`).

    Each message's handler awaits its own outcome, so it is acknowledged only after its delivery state
    committed. A group that fails as a whole is redone lead by lead (groups of one): one bad lead fails only its
    own message. Requests a failed group already made are then made again with the same `Idempotency-Key`.
    """

    def __init__(self, pool: asyncpg.Pool, adapters: Sequence[Adapter], *,
                 max_group: int = MAX_GROUP, groups_in_flight: int = GROUPS_IN_FLIGHT,
                 breakers: Mapping[str, CircuitBreaker] | None = None) -> None:
        self._pool = pool
        self.adapters = adapters
        self.breakers = dict(breakers or {})  # adapter name -> its circuit breaker
        self._requests = asyncio.Semaphore(REQUESTS_IN_FLIGHT)
        self._groups: GroupRunner[Job, JobOutcome] = GroupRunner(
            self._run_group, max_size=max_group, concurrency=groups_in_flight,
            on_group=metrics.GROUP_SIZE.observe,
        )

    async def __call__(self, message: LeadCapturedMessage, *, attempt: int, max_attempts: int,
                       expired: bool = False) -> None:
        """Deliver the lead of `message` to each adapter not yet delivered.

        Raises:
            CrmUnavailable: a CRM failed transiently (retried with backoff until the horizon).
            DependencyUnavailable: a CRM's circuit breaker is open: the lead waits without a request.
            RetryLater: a CRM asked us to wait (429 Retry-After), or another worker is delivering this lead.
            PermanentError: an adapter failed for good (4xx, or the horizon passed): the message is parked.
        """
        pool = self._pool
        leadgen_id = message.payload.leadgen_id
        ids = {"leadgen_id": leadgen_id, "message_id": str(message.message_id), "attempt": attempt}
        if not self.adapters:
            if await load_lead(pool, leadgen_id) is None:
                await _lead_missing(pool, message, attempt=attempt, max_attempts=max_attempts)
            await store.mark_skipped(pool, leadgen_id)
            metrics.DELIVERIES.labels(NO_ADAPTER, "skipped").inc()
            logger.info("no CRM adapter configured: lead recorded as skipped", extra=ids)
            return
        results = await self._groups.submit(Job(message, attempt, max_attempts, expired))
        if results is None:
            await _lead_missing(pool, message, attempt=attempt, max_attempts=max_attempts)
            return
        raise_for_deliveries(results)

    async def _run_group(self, jobs: Sequence[Job]) -> list[JobOutcome | BaseException]:
        pool = self._pool
        try:
            return await deliver_group(pool, self.adapters, jobs, requests=self._requests, breakers=self.breakers)
        except Exception as exc:
            if len(jobs) == 1:
                raise
            logger.warning("delivering %s leads together failed (%s): delivering them one by one", len(jobs),
                           type(exc).__name__)
            return list(await asyncio.gather(*(self._one(pool, job) for job in jobs), return_exceptions=True))

    async def _one(self, pool: asyncpg.Pool, job: Job) -> JobOutcome:
        [outcome] = await deliver_group(pool, self.adapters, [job], requests=self._requests,
                                        breakers=self.breakers)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def _lead_missing(pool: asyncpg.Pool, message: LeadCapturedMessage, *, attempt: int, max_attempts: int) -> None:
    leadgen_id = message.payload.leadgen_id
    if attempt >= max_attempts:
        raise PermanentError(f"lead {leadgen_id} not found in leads")
    raise LeadNotStored(f"lead {leadgen_id} not found in leads")


@dataclass
class _Send:
    slot: int  # the job's position in its group
    job: Job
    adapter: Adapter
    lead: StoredLead
    reference: str | None = None
    failure: DeliveryFailure | None = None
    error: BaseException | None = None  # not a delivery failure (a bug): fails this job only
    held: float | None = None  # the adapter's breaker is open: no request, wait this long
    seconds: float = 0.0


async def deliver_group(
    pool: asyncpg.Pool, adapters: Sequence[Adapter], jobs: Sequence[Job], *, requests: asyncio.Semaphore | None = None,
    breakers: Mapping[str, CircuitBreaker] | None = None,
) -> list[JobOutcome | BaseException]:
    """Deliver a group of messages' leads in one transaction: load the leads, create and lock their
    delivery rows (`skip locked`, as one lead's rows would be), send every request due at once, record the
    outcomes with their LeadSynced / AlertRaised in the outbox, commit.

    A second copy of a lead in the same group is BUSY (retried shortly, then found delivered).
    """
    outcomes: list[JobOutcome] = []
    sends: list[_Send] = []
    async with pool.acquire() as conn, conn.transaction():
        leads = await load_leads(conn, list(dict.fromkeys(job.leadgen_id for job in jobs)))
        status = await store.claim(conn, [(lid, a.name) for lid in leads for a in adapters])
        claimed: set[str] = set()
        for slot, job in enumerate(jobs):
            lead = leads.get(job.leadgen_id)
            if lead is None:
                outcomes.append(None)
                continue
            results: dict[str, Result] = {}
            for adapter in adapters:
                results[adapter.name] = _precheck(job, adapter, status.get((lead.leadgen_id, adapter.name)),
                                                  first=lead.leadgen_id not in claimed)
                if results[adapter.name].outcome is DeliveryOutcome.RETRY:  # due: replaced by the request's result
                    sends.append(_Send(slot, job, adapter, lead))
            claimed.add(lead.leadgen_id)
            outcomes.append(results)
        breakers = breakers or {}
        await asyncio.gather(*(_send(s, requests, breakers.get(s.adapter.name)) for s in sends))
        done = [s for s in sends if s.error is None and s.held is None]
        await store.record(conn, [_record(s) for s in done])
        await enqueue_many(conn, [m for s in done if (m := _message(s)) is not None])
    errors: dict[int, BaseException] = {}
    for s in sends:
        if s.error is not None:  # its rows stay as they were: the message is retried
            errors[s.slot] = s.error
            continue
        outcome = outcomes[s.slot]
        if outcome is not None:
            outcome[s.adapter.name] = (Result(DeliveryOutcome.HELD, wait=s.held) if s.held is not None
                                       else _result(s))
    return [errors.get(slot, outcome) for slot, outcome in enumerate(outcomes)]


def _precheck(job: Job, adapter: Adapter, status: str | None, *, first: bool) -> Result:
    """What to do for one (lead, adapter) whose row is `status` (None: locked by another worker)."""
    ids = {"leadgen_id": job.leadgen_id, "adapter": adapter.name, "attempt": job.attempt}
    if status is None or not first:
        return Result(DeliveryOutcome.BUSY)
    if status == "delivered":
        logger.info("already delivered to %s: not repeated", adapter.name, extra=ids)
        metrics.DELIVERIES.labels(adapter.name, "duplicate").inc()
        return Result(DeliveryOutcome.ALREADY_DELIVERED)
    if status == "failed" and job.attempt > 1:
        return Result(DeliveryOutcome.FAILED)  # failed earlier in this message's retries; alerted then
    return Result(DeliveryOutcome.RETRY)  # due: replaced by the request's result


async def _send(send: _Send, requests: asyncio.Semaphore | None, breaker: CircuitBreaker | None = None) -> None:
    if breaker is not None and not breaker.allow():  # the CRM is down: wait for the next probe, no request
        send.held = breaker.wait_seconds()
        breaker.hold(send.lead.leadgen_id)
        metrics.DELIVERIES.labels(send.adapter.name, "held").inc()
        return
    try:
        async with requests or contextlib.nullcontext():
            started = time.perf_counter()
            try:
                send.reference = await send.adapter.deliver(send.lead)
            except DeliveryFailure as failure:
                send.failure = failure
            except Exception as exc:
                send.error = exc
            send.seconds = time.perf_counter() - started
    finally:
        if breaker is not None:
            if send.failure is not None and send.failure.transient:
                breaker.failed(send.failure.reason)
            elif send.failure is None and send.error is not None:
                if breaker.is_open:  # a probe that ended in a bug of ours: the CRM is still unknown
                    breaker.failed(type(send.error).__name__)
            else:  # the CRM answered (a 2xx, or a 4xx that retrying cannot fix)
                breaker.succeeded()
    metrics.DELIVERY_SECONDS.labels(send.adapter.name).observe(send.seconds)


def _final(send: _Send) -> bool:
    return send.failure is not None and (not send.failure.transient or send.job.expired)


def _record(send: _Send) -> store.Record:
    if send.failure is None:
        return send.lead.leadgen_id, send.adapter.name, "delivered", None, send.reference
    return (send.lead.leadgen_id, send.adapter.name, "failed" if _final(send) else "retrying",
            send.failure.reason, None)


def _message(send: _Send) -> LeadSyncedMessage | None:
    """The LeadSynced of a delivery. A failed one has no message: its lead is parked, the parking is the alert."""
    if send.failure is None:
        return LeadSyncedMessage.new(
            LeadSynced(leadgen_id=send.lead.leadgen_id, adapter=send.adapter.name, crm_reference=send.reference),
            caused_by=send.job.message,
        )
    return None


def _why(failure: DeliveryFailure, attempt: int) -> str:
    return failure.reason if not failure.transient else f"{failure.reason} after {attempt} attempts"


def _result(send: _Send) -> Result:
    """Log and count one committed request's outcome."""
    name = send.adapter.name
    ids = {"leadgen_id": send.lead.leadgen_id, "adapter": name, "attempt": send.job.attempt}
    if send.failure is None:
        metrics.DELIVERIES.labels(name, "delivered").inc()
        logger.info("delivered to %s", name, extra={**ids, "crm_reference": send.reference})
        return Result(DeliveryOutcome.DELIVERED)
    if _final(send):
        metrics.DELIVERIES.labels(name, "failed").inc()
        logger.error("delivery to %s failed for good: %s", name, _why(send.failure, send.job.attempt), extra=ids)
        return Result(DeliveryOutcome.FAILED, send.failure)
    metrics.DELIVERIES.labels(name, "retry").inc()
    logger.warning("delivery to %s failed, will retry: %s", name, send.failure.reason, extra=ids)
    return Result(DeliveryOutcome.RETRY, send.failure)


