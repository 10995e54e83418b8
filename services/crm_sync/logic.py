"""Plain decisions of crm_sync: what a lead's per-adapter results mean for its message, and the alert it raises.

Nothing here talks to the broker, the database or a CRM; `worker.py` orchestrates, `store.py` holds the SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.alerts import AlertRaised
from contracts.messages import AlertRaisedMessage, LeadCapturedMessage
from shared.messaging import PermanentError, RetryLater

if TYPE_CHECKING:
    from services.crm_sync.adapters import DeliveryFailure

NO_ADAPTER = "none"
BUSY_RETRY_SECONDS = 2.0
PARKED_FIX = (
    "Check the CRM (status page, credentials, field mapping), then replay the message from "
    "leadwire.crm_sync.lead_captured.parked; delivered adapters are not repeated."
)


class DeliveryOutcome(enum.Enum):
    """What happened to one (lead, adapter) delivery in one attempt."""

    DELIVERED = "delivered"
    ALREADY_DELIVERED = "already_delivered"
    BUSY = "busy"  # another worker holds the row right now
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Result:
    outcome: DeliveryOutcome
    failure: DeliveryFailure | None = None


class CrmUnavailable(Exception):
    """A CRM failed in a way a retry may fix; the messaging middleware retries with backoff."""


class LeadNotStored(Exception):
    """LeadCaptured arrived but the lead's row is not (yet) readable."""


def raise_for_deliveries(results: dict[str, Result]) -> None:
    """Turn one lead's per-adapter results into the handler's outcome (return, or the exception to raise)."""
    retry = {name: r.failure for name, r in results.items() if r.outcome is DeliveryOutcome.RETRY and r.failure}
    if retry:
        waits = [f.retry_after for f in retry.values() if f.retry_after is not None]
        reason = "; ".join(f"{name}: {f.reason}" for name, f in retry.items())
        if waits:
            raise RetryLater(f"CRM asked to wait ({reason})", delay=min(max(waits), 600.0), counts_attempt=True)
        raise CrmUnavailable(reason)
    if any(r.outcome is DeliveryOutcome.BUSY for r in results.values()):
        raise RetryLater("another worker is delivering this lead", delay=BUSY_RETRY_SECONDS)
    failed = [name for name, r in results.items() if r.outcome is DeliveryOutcome.FAILED]
    if failed:
        raise PermanentError(f"CRM delivery failed for good: {', '.join(failed)}")


def delivery_alert(message: LeadCapturedMessage, reason: str, adapter: str | None) -> AlertRaisedMessage:
    """The AlertRaised for a lead that could not be delivered to `adapter` (None: to the CRM at all)."""
    target = adapter or "the CRM"
    return AlertRaisedMessage.new(
        AlertRaised(
            severity="critical",
            code="crm_delivery_failed",
            summary=f"Lead {message.payload.leadgen_id} was not delivered to {target}: {reason}.",
            service="crm_sync",
            subject=message.payload.leadgen_id,
            fix=PARKED_FIX,
        ),
        caused_by=message,
    )
