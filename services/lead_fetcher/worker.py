"""The orchestration of one message. LeadgenReceived (`Worker`): skip if stored, read from Meta (batched),
store with its LeadCaptured. RedeliverLead (`redeliver`): the stored lead's LeadCaptured again.

Concurrent messages share their database work: the "already stored?" check of every message waiting at the same
time is one query, and their new leads are inserted, with their LeadCaptured, in one transaction (`GroupRunner`).
Each handler still awaits its own lead's outcome, so a message is acknowledged only after its lead committed. A
group whose statement fails is redone lead by lead, so one bad lead fails only its own message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from services.lead_fetcher import metrics, store
from services.lead_fetcher.logic import (
    HELD_FIX,
    HELD_KIND,
    Lead,
    access_alert,
    access_alert_code,
    held_dependency,
    held_reason,
    held_resolved_summary,
    held_summary,
    lead_is_expired,
    parse_lead,
    read_failure,
    read_outcome,
)
from shared.graph import GraphError, ThrottledError
from shared.graph.errors import GraphConnectionError, TransientError
from shared.group_commit import GroupRunner
from shared.messaging import PermanentError
from shared.retries import CircuitBreaker, DependencyUnavailable

if TYPE_CHECKING:
    import asyncpg

    from contracts.messages import LeadgenReceivedMessage, RedeliverLeadMessage
    from services.lead_fetcher.reader import LeadReader
    from services.lead_fetcher.settings import LeadFetcherSettings
    from shared.incidents import Incidents

logger = logging.getLogger(__name__)

# Most leads per lookup query or insert transaction (the prefetch bounds what can wait at once anyway).
MAX_GROUP = 200

StoreItem = tuple[Lead, "LeadgenReceivedMessage"]
# A held Page with no throttled read for this long (or LEAD_HELD_ALERT_SECONDS if shorter) past its expected resume
# time is no longer held (its leads flowed through another process, or none are waiting).
HELD_GRACE_SECONDS = 120.0


@dataclass
class Held:
    """Lead reads of one Page held back since `since` (monotonic), for `reason`, until about `until`.

    One episode lasts while reads keep being throttled: a lead let through between them (a probe, pacing near
    the limit) does not end it; a grace period with no throttled read after `until` does.
    """

    since: float
    until: float
    reason: str
    alerted: bool = False


@dataclass
class Worker:
    """The handler's dependencies; `__call__` handles one message."""

    pool: asyncpg.Pool
    reader: LeadReader
    settings: LeadFetcherSettings
    # Meta's Graph API as a whole: when every read fails (5xx, connection errors), leads wait in the delay queues
    # and one read at a time probes it (`shared.retries`); throttles are the Graph client's pacer's business.
    graph_breaker: CircuitBreaker | None = None
    # Where held capture opens and resolves its incident (the service's; None: not watched).
    incidents: Incidents | None = None
    _lookups: GroupRunner[str, bool | None] = field(init=False, repr=False)
    _stores: GroupRunner[StoreItem, bool] = field(init=False, repr=False)
    held: dict[str, Held] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._lookups = GroupRunner(self.lookup_group, max_size=MAX_GROUP,
                                    on_group=metrics.BATCH_SIZE.labels("lookup").observe)
        self._stores = GroupRunner(self.store_group, max_size=MAX_GROUP,
                                   on_group=metrics.BATCH_SIZE.labels("store").observe)

    async def __call__(self, message: LeadgenReceivedMessage) -> None:
        p = message.payload
        ids = {"leadgen_id": p.leadgen_id, "page_id": p.page_id, "message_id": str(message.message_id)}
        emitted = await self._lookups.submit(p.leadgen_id)
        if emitted is True:  # duplicate webhook or a lead the backfill got first: no Graph call
            metrics.DUPLICATES_SKIPPED.labels("stored").inc()
            logger.info("lead already stored", extra=ids)
            return
        if emitted is False:  # stored by other means (an import) without its LeadCaptured: emit it, locked
            enqueued = await store.ensure_captured(self.pool, p.leadgen_id, caused_by=message)
            if enqueued is not None:
                metrics.DUPLICATES_SKIPPED.labels("reemitted" if enqueued else "stored").inc()
                logger.info("lead already stored%s", "; LeadCaptured re-enqueued" if enqueued else "", extra=ids)
                return
        breaker = self.graph_breaker
        if breaker is not None and not breaker.allow():
            breaker.hold(p.leadgen_id)
            raise DependencyUnavailable("Meta's Graph API", breaker.wait_seconds())
        try:
            raw = await self.reader.read(p.leadgen_id, p.page_id)
        except GraphError as exc:
            if breaker is not None:
                if isinstance(exc, TransientError | GraphConnectionError):
                    breaker.failed(f"{type(exc).__name__} (code {exc.code})")
                else:
                    breaker.succeeded()  # Meta answered (a refusal or a throttle is not an outage)
            metrics.READS.labels(read_outcome(exc)).inc()
            await self._alert_if_access(exc, message)
            if isinstance(exc, ThrottledError):
                self._note_held(p.page_id, exc)
            raise read_failure(exc, p.leadgen_id, access_retry_seconds=self.settings.access_retry_seconds,
                               expired=lead_is_expired(p.created_time, datetime.now(UTC))) from None
        try:
            lead = parse_lead(raw, page_id=p.page_id, source=p.source, leadgen_id=p.leadgen_id)
        except ValueError as exc:
            metrics.READS.labels("unusable").inc()
            raise PermanentError(f"lead {p.leadgen_id}: Meta's answer is unusable: {exc}") from None
        if breaker is not None:
            breaker.succeeded()
        metrics.READS.labels("ok").inc()
        lead = replace(lead, form_name=await self.reader.form_name(lead.form_id, p.page_id))
        new = await self._stores.submit((lead, message))
        if new:
            metrics.LEADS_CAPTURED.labels(lead.source).inc()
        else:
            metrics.DUPLICATES_SKIPPED.labels("concurrent").inc()
        logger.info("lead captured" if new else "lead already stored (concurrent copy)",
                    extra={**ids, "form_id": lead.form_id, "source": p.source})

    async def lookup_group(self, leadgen_ids: Sequence[str]) -> list[bool | None]:
        """True: stored with its LeadCaptured; False: stored without; None: not stored. A failed read fails every
        message of the group, each retried on its own."""
        found = await store.lookup(self.pool, leadgen_ids)
        return [found.get(i) for i in leadgen_ids]

    async def store_group(self, items: Sequence[StoreItem]) -> list[bool | BaseException]:
        """Insert the group's leads and their LeadCaptured in one transaction; on failure, each on its own."""
        try:
            async with self.pool.acquire() as conn:
                new = await store.store_leads(conn, items)
        except Exception as exc:
            if len(items) == 1:
                raise
            logger.warning("storing %s leads together failed (%s): storing them one by one", len(items),
                           type(exc).__name__)
            outcomes: list[bool | BaseException] = []
            for lead, message in items:  # in order: of two copies of a lead, the first is the new one
                try:
                    outcomes.append(await self._store_one(lead, message))
                except Exception as one:
                    outcomes.append(one)
            return outcomes
        outcomes = []
        for lead, _ in items:  # a second copy of a lead in the same group was not new
            outcomes.append(lead.leadgen_id in new)
            new.discard(lead.leadgen_id)
        return outcomes

    async def _store_one(self, lead: Lead, message: LeadgenReceivedMessage) -> bool:
        async with self.pool.acquire() as conn:
            return lead.leadgen_id in await store.store_leads(conn, [(lead, message)])

    def _note_held(self, page_id: str, error: ThrottledError) -> None:
        now = time.monotonic()
        until = now + (error.retry_after or 0.0)
        held = self.held.get(page_id)
        if held is None or now > held.until + HELD_GRACE_SECONDS:
            self.held[page_id] = Held(since=now, until=until, reason=held_reason(error))
        else:
            held.until, held.reason = until, held_reason(error)

    def check_held(self) -> list[str]:
        """Open one incident for each Page whose lead reads have been held back longer than the setting, and
        resolve it when they flow again; returns the Pages whose incident opened now. Called periodically (the
        handlers' background job); the alerts go out through the service's `Incidents`."""
        now = time.monotonic()
        grace = min(HELD_GRACE_SECONDS, self.settings.held_alert_seconds)
        opened: list[str] = []
        for page_id, held in list(self.held.items()):
            if now > held.until + grace:
                del self.held[page_id]  # no throttled read since its expected end: not held any more
                if held.alerted and self.incidents is not None:
                    self.incidents.resolve(held_dependency(page_id), HELD_KIND,
                                           held_resolved_summary(page_id, held_seconds=held.until - held.since))
                continue
            if held.alerted or now - held.since < self.settings.held_alert_seconds or self.incidents is None:
                continue
            held.alerted = True

            def summary(held: Held = held, page_id: str = page_id) -> str:
                left = max(0.0, held.until - time.monotonic())
                return held_summary(page_id, held.reason, held_seconds=time.monotonic() - held.since,
                                    expected=datetime.now(UTC) + timedelta(seconds=left))

            if self.incidents.open(held_dependency(page_id), HELD_KIND, summary=summary, fix=HELD_FIX,
                                   severity="warning"):
                opened.append(page_id)
        return opened

    async def _alert_if_access(self, exc: GraphError, message: LeadgenReceivedMessage) -> None:
        code = access_alert_code(exc)
        if code is None:
            return
        page_id = message.payload.page_id
        await store.raise_alert_once(self.pool, access_alert(code, page_id, exc),
                                     repeat_seconds=self.settings.alert_repeat_seconds, caused_by=message)


async def redeliver(pool: asyncpg.Pool, command: RedeliverLeadMessage) -> None:
    """Emit a stored lead's LeadCaptured again (crm_sync's `leadwire crm redeliver`), through the outbox.

    Raises:
        PermanentError: the lead is not stored (parked: there is nothing to redeliver).
    """
    leadgen_id = command.payload.leadgen_id
    ids = {"leadgen_id": leadgen_id, "message_id": str(command.message_id), "reason": command.payload.reason}
    enqueued = await store.redeliver_captured(pool, command)
    if enqueued is None:
        raise PermanentError(f"lead {leadgen_id} is not stored: nothing to redeliver")
    logger.info("LeadCaptured emitted again" if enqueued else "redelivery already emitted", extra=ids)
