"""Plain decisions of the capi_sender: the stored lead's customer fields, what a batch's outcome is, the errors a
message fails with. Nothing here talks to the broker, the database or Meta (`worker.py` orchestrates the send,
`store.py` holds the SQL, `events.py` builds and checks the server events).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from contracts.messages import ConversionRequestedMessage
from services.capi_sender import metrics
from services.capi_sender.events import LeadContact, Parked, PreparedEvent, RequestBatch
from shared.graph.errors import GraphError, ThrottledError
from shared.leads import StoredLead
from shared.messaging import PermanentError, RetryLater
from shared.meta.customer_data import HASHED_KEYS

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


class SendOutcome(StrEnum):
    """How a conversion's message ends well: its event was sent, or was found already sent."""

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


def lead_contact(lead: StoredLead) -> LeadContact:
    """A stored lead as the customer fields Meta matches on (from Meta's standard question keys)."""
    answers = {str(key).strip().lower(): value for key, value in lead.fields.items()}
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
    return LeadContact(
        lead_id=lead.leadgen_id,
        created_time=int(lead.created_time.timestamp()),
        page_id=lead.page_id,
        **found,
    )


def user_data_hashes(event: PreparedEvent) -> dict[str, Any]:
    """The hashed customer keys only: clear identifiers (IP, user agent, cookies) never reach the log."""
    return {key: value for key, value in event.server_event["user_data"].items() if key in HASHED_KEYS}


def meta_error_fields(error: GraphError) -> dict[str, Any]:
    """Meta's error fields as logged and stored (our events carry only hashes, so Meta cannot echo clear PII)."""
    return {
        "code": error.code,
        "subcode": error.subcode,
        "fbtrace_id": error.fbtrace_id,
        "message": error.message,
        "user_message": error.user_message,
    }


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
