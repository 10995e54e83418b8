"""Plain decisions of crm_sync: what a lead's per-adapter results mean for its message.

A lead that cannot be delivered raises no alert of its own (one failing CRM would raise one per lead): its message
is parked, and the parking is the incident (`shared.incidents`); a CRM that is down opens its adapter's circuit
breaker, which is the incident of that outage.

Nothing here talks to the broker, the database or a CRM; `worker.py` orchestrates, `store.py` holds the SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.messaging import PermanentError, RetryLater
from shared.retries import DependencyUnavailable, Transient

if TYPE_CHECKING:
    from services.crm_sync.adapters import DeliveryFailure

NO_ADAPTER = "none"
BUSY_RETRY_SECONDS = 2.0
BREAKER_FIX = {
    "webhook": "Check the CRM at CRM_WEBHOOK_URL (its status page, CRM_WEBHOOK_SECRET); leads wait and go out once it "
               "answers (retried for RETRY_HORIZON_HOURS). Any that gave up: `leadwire parked list --queue "
               "crm_sync/lead_captured`.",
    "gohighlevel": "Check GoHighLevel (status.gohighlevel.com, GHL_API_TOKEN, GHL_LOCATION_ID); leads wait and go out "
                   "once it answers (retried for RETRY_HORIZON_HOURS). Any that gave up: `leadwire parked list "
                   "--queue crm_sync/lead_captured`.",
}


class DeliveryOutcome(enum.Enum):
    """What happened to one (lead, adapter) delivery in one attempt."""

    DELIVERED = "delivered"
    ALREADY_DELIVERED = "already_delivered"
    BUSY = "busy"  # another worker holds the row right now
    HELD = "held"  # the adapter's circuit breaker is open: not called, the lead waits
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Result:
    outcome: DeliveryOutcome
    failure: DeliveryFailure | None = None
    wait: float = 0.0  # HELD: seconds until the breaker's next probe


class CrmUnavailable(Transient):
    """A CRM failed in a way a retry may fix; retried with backoff until RETRY_HORIZON_HOURS."""


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
    held = {name: r.wait for name, r in results.items() if r.outcome is DeliveryOutcome.HELD}
    if held:
        raise DependencyUnavailable(f"the CRM ({', '.join(held)})", max(held.values()))
    if any(r.outcome is DeliveryOutcome.BUSY for r in results.values()):
        raise RetryLater("another worker is delivering this lead", delay=BUSY_RETRY_SECONDS)
    failed = [f"{name} ({r.failure.reason})" if r.failure else name
              for name, r in results.items() if r.outcome is DeliveryOutcome.FAILED]
    if failed:
        raise PermanentError(f"CRM delivery failed for good: {', '.join(failed)}")
