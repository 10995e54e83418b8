"""One incident, one alert: alerts keyed by (service, dependency, kind), not one per failing message.

An incident opens when a dependency's circuit breaker opens (`shared.retries.CircuitBreaker`: a CRM adapter, the
database) or when a consumer parks a message. Its alert goes out once when it opens, at most once per
`ALERT_REMINDER_MINUTES` while it lasts (with counts: "37 leads waiting for the CRM (webhook) since 09:12 UTC"),
and once when it resolves (the breaker closed; the parking queue is empty again, replayed or dropped). Each alert's
fix line is a `leadwire` command or a setting.

Alerts are published straight to the broker (an `AlertRaised` with `incident` set), not through the outbox: the
database may be the dependency that is down. A publish that fails is kept and tried again on the next tick.
The rules engine's `alerts` consumer turns them into log lines, Slack and e-mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from contracts.alerts import AlertRaised, Incident

if TYPE_CHECKING:
    from shared.retries import CircuitBreaker
    from shared.topology import Consumer

logger = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
State = Literal["opened", "reminder", "resolved"]
# Publishes one alert and returns once the broker confirmed it (raises otherwise).
Publish = Callable[[AlertRaised], Awaitable[None]]
# Messages in a parking queue right now (raises when the broker cannot tell).
CountParked = Callable[[str], Awaitable[int]]

# What the messages of each consumer are, for the alert's sentence.
WHAT_PARKED = {
    "lead_fetcher/leadgen_received": "lead reads",
    "lead_fetcher/redeliver_lead": "lead redeliveries",
    "crm_sync/lead_captured": "leads (CRM delivery)",
    "capi_sender/conversion_requested": "conversions (CRM outcomes for Meta, /crm/events included)",
    "rules_engine/insights_updated": "insights updates",
    "rules_engine/crm_outcomes": "CRM outcomes (for the rules)",
    "rules_engine/command_results": "command results",
    "rules_engine/alerts": "alerts",
    "campaign_executor/campaign_command": "campaign commands",
}


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def _printable(text: str) -> str:
    """A reason fit for an alert: a validation message may quote the bad character it found (NUL, a lone
    surrogate), which no alert may carry (the alert itself would be poison)."""
    return _UNPRINTABLE.sub("?", text)


def _hhmm(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M UTC")


@dataclass
class _Open:
    dependency: str
    kind: str
    since: float  # wall clock
    severity: Severity
    summary: Callable[[], str]
    waiting: Callable[[], int | None]
    fix: str
    parking_queue: str | None = None  # a `parked` incident resolves when this queue is empty
    last_sent: float = 0.0  # monotonic: when the last alert of this incident went out (0: queued)
    announced: bool = False  # its opening alert was published
    last_event: float = 0.0  # monotonic: when it opened, or a message was last parked


@dataclass
class Incidents:
    """The open incidents of one service (one process); `run()` sends their alerts."""

    service: str
    reminder_seconds: float = 3600.0
    tick_seconds: float = 15.0
    # A parking queue must read empty this long after the last message parked before its incident resolves (a
    # quorum queue's count can be a few seconds old).
    settle_seconds: float = 10.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _open: dict[tuple[str, str], _Open] = field(default_factory=dict)
    # Rendered when sent, with the counts of that moment.
    _queued: list[tuple[_Open, State, Callable[[], AlertRaised]]] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _parked_counts: dict[str, int] = field(default_factory=dict)
    _parked_reason: dict[str, str] = field(default_factory=dict)

    # -- what opens and resolves incidents --------------------------------------------------------------------

    def open(self, dependency: str, kind: str, *, summary: Callable[[], str], fix: str,
             waiting: Callable[[], int | None] = lambda: None, severity: Severity = "critical",
             parking_queue: str | None = None) -> bool:
        """Open an incident (its alert is queued); False if it is open already (nothing is sent)."""
        key = (dependency, kind)
        if key in self._open:
            return False
        incident = _Open(dependency, kind, self.wall(), severity, summary, waiting, fix, parking_queue)
        incident.last_event = self.clock()
        self._open[key] = incident
        self._queue(incident, "opened", incident.summary)
        incident.last_sent = self.clock()
        return True

    def resolve(self, dependency: str, kind: str, summary: str) -> bool:
        """Close an open incident (its alert is queued); False if none was open."""
        incident = self._open.pop((dependency, kind), None)
        if incident is None:
            return False
        self._queue(incident, "resolved", lambda: summary, severity="info")
        return True

    def is_open(self, dependency: str, kind: str) -> bool:
        return (dependency, kind) in self._open

    def breaker_opened(self, breaker: CircuitBreaker, *, label: str, what: str, fix: str) -> None:
        """A dependency's breaker opened: "<n> <what> waiting for <label> since 09:12 UTC"."""

        def summary() -> str:
            since = _hhmm(breaker.opened_at or self.wall())
            error = f"; last error: {breaker.last_error}" if breaker.last_error else ""
            return (f"{breaker.waiting} {what} waiting for {label} since {since} ({breaker.probes} probe calls "
                    f"so far{error}); they are retried, not lost.")

        self.open(breaker.name, "unavailable", summary=summary, fix=fix, waiting=lambda: breaker.waiting)

    def breaker_closed(self, breaker: CircuitBreaker, *, label: str, what: str) -> None:
        since = _hhmm(breaker.opened_at or self.wall())
        minutes = (self.wall() - (breaker.opened_at or self.wall())) / 60
        self.resolve(breaker.name, "unavailable",
                     f"{label} answers again (down since {since}, {minutes:.0f} min, {breaker.probes} probe calls); "
                     f"the {breaker.waiting} {what} that waited are being delivered.")

    def parked(self, consumer: Consumer, reason: str) -> None:
        """A consumer parked a message (`shared.messaging.Guards.on_parked`): open or count its `parked` incident."""
        name = f"{consumer.service}/{consumer.name}"
        if (name, "parked") not in self._open:
            self._parked_counts[name] = 0
        else:
            self._open[(name, "parked")].last_event = self.clock()
        self._parked_counts[name] = self._parked_counts.get(name, 0) + 1
        self._parked_reason[name] = _printable(reason)[:300]
        what = WHAT_PARKED.get(name, "messages")

        def summary() -> str:
            incident = self._open.get((name, "parked"))
            since = _hhmm(incident.since if incident else self.wall())
            count = self._parked_counts.get(name, 0)
            return (f"{count} {what} parked by {consumer.service} ({name}) since {since}; "
                    f"last reason: {self._parked_reason.get(name, '?')}.")

        self.open(
            name, "parked", summary=summary, waiting=lambda: self._parked_counts.get(name),
            fix=(f"See why with `leadwire parked list --queue {name}`; once the cause is fixed, "
                 f"`leadwire parked replay --queue {name}` (replay is idempotent), or `leadwire parked drop "
                 f"--queue {name}`."),
            parking_queue=consumer.parking_queue_name,
        )

    # -- sending ----------------------------------------------------------------------------------------------

    def _queue(self, incident: _Open, state: State, summary: Callable[[], str], *,
               severity: Severity | None = None) -> None:
        code = {"unavailable": "dependency_unavailable", "parked": "messages_parked"}.get(incident.kind, incident.kind)
        waiting = incident.waiting() if state == "resolved" else None

        def render() -> AlertRaised:
            return AlertRaised(
                severity=severity or incident.severity,
                code=f"{code}_{state}",
                summary=summary(),
                service=self.service,
                subject=incident.dependency,
                fix=incident.fix if state != "resolved" else None,
                incident=Incident(dependency=incident.dependency, kind=incident.kind, state=state,
                                  since=datetime.fromtimestamp(incident.since, UTC),
                                  waiting=waiting if state == "resolved" else incident.waiting()),
            )

        self._queued.append((incident, state, render))
        self._wake.set()

    async def run(self, publish: Publish, count_parked: CountParked | None = None) -> None:
        """Send queued alerts, reminders of long incidents, and resolve `parked` incidents whose queue emptied."""
        while True:
            await self.tick(publish, count_parked)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick_seconds)

    async def tick(self, publish: Publish, count_parked: CountParked | None = None) -> None:
        if count_parked is not None:
            await self._check_parked(count_parked)
        now = self.clock()
        for incident in list(self._open.values()):
            if now - incident.last_sent >= self.reminder_seconds:
                self._queue(incident, "reminder", incident.summary)
                incident.last_sent = now
        while self._queued:
            incident, state, render = self._queued[0]
            alert = render()
            try:
                await publish(alert)
            except Exception as exc:  # the broker is down too: kept, tried again next tick
                logger.warning("incident alert not sent yet (%s); retrying", type(exc).__name__,
                               extra={"alert_code": alert.code})
                return
            self._queued.pop(0)
            if state == "opened":
                incident.announced = True
            log = logger.warning if alert.severity != "info" else logger.info
            log("incident %s: %s", alert.code, alert.summary,
                extra={"alert_code": alert.code, "dependency": alert.subject})

    async def _check_parked(self, count_parked: CountParked) -> None:
        now = self.clock()
        for incident in [i for i in self._open.values() if i.parking_queue is not None and i.announced]:
            assert incident.parking_queue is not None
            try:
                count = await count_parked(incident.parking_queue)
            except Exception as exc:
                logger.debug("cannot count %s (%s)", incident.parking_queue, type(exc).__name__)
                continue
            if count or now - incident.last_event >= self.settle_seconds:
                self._parked_counts[incident.dependency] = count
            if count == 0 and now - incident.last_event >= self.settle_seconds:
                self.resolve(incident.dependency, "parked",
                             f"the parking queue of {incident.dependency} is empty again (replayed or dropped).")
