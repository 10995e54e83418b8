"""Build Conversions API server events from `ConversionRequested`, and decide before sending what must be parked.

Pure functions: time comes in as `now`, the stored lead as an argument. Meta rejects a whole request (up to 1000
events) for one bad event (docs/meta-api.md §8.1), so everything Meta is known to reject is caught here first and
parked with a reason that names fields, never customer values.

CRM-stage events (`action_source == system_generated`, the contract default) take Meta's Conversion Leads form
(docs/meta-api.md §8.7): `custom_data.event_source = "crm"` and `custom_data.lead_event_source = <CRM name>`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, TypeVar

from contracts.conversions import (
    ActionSource,
    ConversionRequested,
    ConversionSent,
    ConversionUser,
    SentEvent,
    derive_event_id,
    to_unix_seconds,
)
from contracts.envelope import Envelope
from shared.meta.customer_data import normalize_user

__all__ = [
    "DEFAULT_CRM_NAME",
    "MAX_EVENTS_PER_REQUEST",
    "MAX_EVENT_AGE_SECONDS",
    "LeadContact",
    "ParkReason",
    "Parked",
    "PreparedEvent",
    "RequestBatch",
    "bisect_batch",
    "check_event",
    "chunk",
    "conversions_sent",
    "dedupe_key",
    "is_crm_stage",
    "plan_requests",
    "prepare_event",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_EVENTS_PER_REQUEST = 1000
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
# Parked a little before Meta's 7-day limit: the event still has to cross the queue and the network, and one
# event over the limit makes Meta reject the whole request.
DEFAULT_AGE_SAFETY_SECONDS = 300
DEFAULT_FUTURE_SKEW_SECONDS = 60
# Used as `lead_event_source` when neither the message nor the caller names the CRM.
DEFAULT_CRM_NAME = "leadwire"

# Meta rejects an event whose user_data holds only a subset of one of these (best practices, docs/meta-api.md §8.2).
REJECTED_COMBINATIONS: tuple[frozenset[str], ...] = (
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
)


class ParkReason(StrEnum):
    """Why an event was not sent. Values are stable: they go to the parking queue and the DB log."""

    NO_PIXEL_ID = "no_pixel_id"
    NO_IDENTIFIERS = "no_identifiers"
    REJECTED_COMBINATION = "rejected_identifier_combination"
    WEBSITE_MISSING_FIELDS = "website_missing_fields"
    APP_EVENT_UNSUPPORTED = "app_event_unsupported"
    EVENT_TOO_OLD = "event_too_old"
    EVENT_IN_FUTURE = "event_in_future"
    BEFORE_LEAD_CREATED = "event_before_lead_created"
    PURCHASE_WITHOUT_VALUE = "purchase_without_value_or_currency"


@dataclass(frozen=True)
class Parked:
    """An event that must not be sent; `detail` names fields and limits, never customer values."""

    reason: ParkReason
    detail: str
    event_id: str | None = None
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LeadContact:
    """The customer fields of a stored lead, used to fill in a CRM event that sent only `lead_id`."""

    lead_id: str | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    gender: str | None = None
    date_of_birth: str | None = None
    created_time: int | None = None  # unix seconds
    page_id: str | None = None  # the lead's Page: its account's pixel receives the conversions (LEADWIRE_ACCOUNTS_FILE)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LeadContact:
        """From a DB row or dict; `created_time` may be unix seconds, ISO 8601 (Meta's "+0000" too) or datetime."""
        created = data.get("created_time")
        return cls(
            lead_id=_text(data.get("lead_id")),
            email=_text(data.get("email")),
            phone=_text(data.get("phone")),
            first_name=_text(data.get("first_name")),
            last_name=_text(data.get("last_name")),
            city=_text(data.get("city")),
            state=_text(data.get("state")),
            zip=_text(data.get("zip")),
            country=_text(data.get("country")),
            gender=_text(data.get("gender")),
            date_of_birth=_text(data.get("date_of_birth")),
            created_time=to_unix_seconds(created) if created not in (None, "") else None,
            page_id=_text(data.get("page_id")),
        )


@dataclass(frozen=True)
class PreparedEvent:
    """A server event ready for `POST /{pixel_id}/events`, with what the sender needs around it."""

    pixel_id: str
    event_name: str
    event_id: str
    event_time: int
    test_event_code: str | None
    server_event: dict[str, Any]
    dropped: list[str] = field(default_factory=list)

    @functools.cached_property
    def dedupe_key(self) -> str:
        return dedupe_key(self.pixel_id, self.event_name, self.event_id)


@dataclass(frozen=True)
class RequestBatch:
    """Events for one Conversions API request: one pixel, one test_event_code (it is a request-level field)."""

    pixel_id: str
    test_event_code: str | None
    events: list[PreparedEvent]

    def body(self) -> dict[str, Any]:
        """The JSON body (without access_token / appsecret_proof, which the HTTP layer adds)."""
        body: dict[str, Any] = {"data": [event.server_event for event in self.events]}
        if self.test_event_code:
            body["test_event_code"] = self.test_event_code
        return body


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def dedupe_key(pixel_id: str, event_name: str, event_id: str) -> str:
    """Idempotency key for the send log: Meta dedupes on event_name + event_id, per pixel (docs/meta-api.md §8.5).

    SHA-256 hex of the JSON triple, so no separator inside a name or id can make two keys collide.
    """
    material = json.dumps([pixel_id, event_name, event_id], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def is_crm_stage(request: ConversionRequested) -> bool:
    """CRM-stage events are the `system_generated` ones: they are sent in Conversion Leads form."""
    return request.action_source is ActionSource.SYSTEM_GENERATED


def _merged_user(request: ConversionRequested, lead: LeadContact | None) -> ConversionUser:
    if lead is None:
        return request.user
    stored = {
        "lead_id": lead.lead_id,
        "email": lead.email,
        "phone": lead.phone,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "city": lead.city,
        "state": lead.state,
        "zip": lead.zip,
        "country": lead.country,
        "gender": lead.gender,
        "date_of_birth": lead.date_of_birth,
    }
    crm = request.user.model_dump(exclude_none=True)
    merged = {name: value for name, value in stored.items() if value is not None} | crm  # CRM wins
    return ConversionUser.model_validate(merged)


def _resolve_event_id(request: ConversionRequested, merged: ConversionUser) -> str | None:
    if request.event_id:
        return request.event_id
    # Derive from what the CRM itself sent first: the stored lead may be found on one delivery and not on a
    # redelivery, and the id must not change between the two.
    for user in (request.user, merged):
        try:
            return derive_event_id(request.event_name, request.event_time, user)
        except ValueError:
            continue
    return None


def _custom_data(request: ConversionRequested, crm_name: str | None) -> dict[str, Any]:
    custom: dict[str, Any] = request.custom_data.model_dump(exclude_none=True) if request.custom_data else {}
    if is_crm_stage(request):
        # Ours last: a free key from the CRM must not override the Conversion Leads markers Meta requires.
        custom["event_source"] = "crm"
        custom["lead_event_source"] = request.crm_name or crm_name or DEFAULT_CRM_NAME
    return custom


def prepare_event(
    request: ConversionRequested,
    *,
    now: int | datetime,
    lead: LeadContact | Mapping[str, Any] | None = None,
    default_pixel_id: str | None = None,
    default_country: str = "US",
    default_crm_name: str | None = None,
    today: date | None = None,
) -> PreparedEvent | Parked:
    """Normalize, hash and assemble one server event, or say why it must be parked.

    Args:
        request: the CRM's conversion.
        now: current time (unix seconds or aware datetime), injected.
        lead: the stored lead, used for identifiers the CRM left out and for the creation-time check.
        default_pixel_id: META_PIXEL_ID, used when the message names no pixel.
        default_country: country for national phone numbers and US-style state/ZIP handling.
        default_crm_name: `lead_event_source` when the message has no `crm_name`.
        today: reference date for date-of-birth checks; defaults to `now`'s UTC date.
    """
    now_seconds = to_unix_seconds(now)
    stored = LeadContact.from_mapping(lead) if isinstance(lead, Mapping) else lead
    merged = _merged_user(request, stored)
    event_id = _resolve_event_id(request, merged)

    pixel_id = request.pixel_id or (default_pixel_id or "").strip()
    if not pixel_id:
        return Parked(ParkReason.NO_PIXEL_ID, "no pixel_id in the message and no META_PIXEL_ID", event_id)

    reference_day = today or datetime.fromtimestamp(now_seconds, tz=UTC).date()
    normalized = normalize_user(merged, default_country=default_country, today=reference_day)

    server_event: dict[str, Any] = {
        "event_name": request.event_name,
        "event_time": request.event_time,
        "action_source": request.action_source.value,
        "user_data": normalized.user_data,
    }
    if event_id:
        server_event["event_id"] = event_id
    if request.event_source_url:
        server_event["event_source_url"] = request.event_source_url
    custom = _custom_data(request, default_crm_name)
    if custom:
        server_event["custom_data"] = custom
    if request.data_processing_options is not None:
        server_event["data_processing_options"] = list(request.data_processing_options)
        if request.data_processing_options_country is not None:
            server_event["data_processing_options_country"] = request.data_processing_options_country
            server_event["data_processing_options_state"] = request.data_processing_options_state

    problem = check_event(
        server_event,
        now=now_seconds,
        lead_created_time=stored.created_time if stored else None,
        dropped=normalized.dropped,
    )
    if problem is not None:
        return problem
    if event_id is None:  # only when the user block is empty, which check_event parks; for the type checker
        return Parked(ParkReason.NO_IDENTIFIERS, "no customer information to match on", None, normalized.dropped)
    return PreparedEvent(
        pixel_id=pixel_id,
        event_name=request.event_name,
        event_id=event_id,
        event_time=request.event_time,
        test_event_code=request.test_event_code,
        server_event=server_event,
        dropped=normalized.dropped,
    )


def check_event(
    server_event: Mapping[str, Any],
    *,
    now: int,
    lead_created_time: int | None = None,
    dropped: Sequence[str] = (),
    age_safety_seconds: int = DEFAULT_AGE_SAFETY_SECONDS,
    future_skew_seconds: int = DEFAULT_FUTURE_SKEW_SECONDS,
) -> Parked | None:
    """Return why Meta would reject this server event (so it is parked, not sent), or None if it may go.

    Run it again right before sending: an event that was fine when built can age past the 7-day limit in a retry.
    """
    event_id = server_event.get("event_id")
    dropped_list = list(dropped)

    def park(reason: ParkReason, detail: str) -> Parked:
        return Parked(reason, detail, event_id, dropped_list)

    user_keys = {key for key, value in (server_event.get("user_data") or {}).items() if value}
    if not user_keys:
        suffix = f"; dropped as invalid: {', '.join(dropped_list)}" if dropped_list else ""
        return park(ParkReason.NO_IDENTIFIERS, "no customer information left to match on" + suffix)
    for combination in REJECTED_COMBINATIONS:
        if user_keys <= combination:
            return park(
                ParkReason.REJECTED_COMBINATION,
                f"user_data has only {'+'.join(sorted(user_keys))}, a subset of "
                f"{'+'.join(sorted(combination))} which Meta rejects",
            )

    action_source = server_event.get("action_source")
    if action_source == ActionSource.WEBSITE.value:
        missing = [name for name in ("event_source_url",) if not server_event.get(name)]
        missing += [name for name in ("client_user_agent",) if name not in user_keys]
        if missing:
            return park(ParkReason.WEBSITE_MISSING_FIELDS, f"website event without {', '.join(missing)}")
    if action_source == ActionSource.APP.value and not server_event.get("app_data"):
        return park(ParkReason.APP_EVENT_UNSUPPORTED, "app events need app_data, which this contract cannot carry")

    event_time = int(server_event["event_time"])
    age = now - event_time
    if age > MAX_EVENT_AGE_SECONDS - age_safety_seconds:
        return park(
            ParkReason.EVENT_TOO_OLD,
            f"event_time is {age} s old; Meta accepts at most {MAX_EVENT_AGE_SECONDS} s "
            f"(parked {age_safety_seconds} s early for transit)",
        )
    if -age > future_skew_seconds:
        return park(
            ParkReason.EVENT_IN_FUTURE,
            f"event_time is {-age} s in the future (allowed clock skew {future_skew_seconds} s)",
        )

    custom = server_event.get("custom_data") or {}
    crm_stage = custom.get("event_source") == "crm"
    if crm_stage and lead_created_time is not None and event_time < lead_created_time:
        return park(
            ParkReason.BEFORE_LEAD_CREATED,
            f"CRM event is {lead_created_time - event_time} s before the lead's created_time",
        )
    if server_event.get("event_name") == "Purchase" and (custom.get("value") is None or not custom.get("currency")):
        return park(ParkReason.PURCHASE_WITHOUT_VALUE, "Purchase events need custom_data.value and currency")
    return None


def chunk(items: Sequence[T], size: int = MAX_EVENTS_PER_REQUEST) -> list[list[T]]:
    """Split into consecutive chunks of at most `size` (Meta takes at most 1000 events per request)."""
    if not 1 <= size <= MAX_EVENTS_PER_REQUEST:
        raise ValueError(f"chunk size must be 1..{MAX_EVENTS_PER_REQUEST}")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def bisect_batch(batch: Sequence[T]) -> tuple[list[T], list[T]]:
    """Halves of a batch Meta rejected, to retry separately until the bad event stands alone.

    The first half gets the extra item of an odd batch. A single event cannot be split: it is the culprit, park it.

    Raises:
        ValueError: the batch has fewer than two events.
    """
    if len(batch) < 2:
        raise ValueError("a batch of fewer than two events cannot be bisected; park the event instead")
    middle = (len(batch) + 1) // 2
    return list(batch[:middle]), list(batch[middle:])


def plan_requests(events: Iterable[PreparedEvent], size: int = MAX_EVENTS_PER_REQUEST) -> list[RequestBatch]:
    """Group by (pixel_id, test_event_code), drop repeats of the same dedupe key, and chunk to `size`.

    Order of first appearance is kept within and across groups.
    """
    groups: dict[tuple[str, str | None], list[PreparedEvent]] = {}
    seen: set[str] = set()
    for event in events:
        if event.dedupe_key in seen:
            continue
        seen.add(event.dedupe_key)
        groups.setdefault((event.pixel_id, event.test_event_code), []).append(event)
    return [
        RequestBatch(pixel_id=pixel_id, test_event_code=test_code, events=part)
        for (pixel_id, test_code), grouped in groups.items()
        for part in chunk(grouped, size)
    ]


def conversions_sent(
    batch: RequestBatch, response: Mapping[str, Any], requested_by: Mapping[str, Envelope[Any]]
) -> ConversionSent:
    """The `conversion.sent` payload of a request Meta accepted (`events_received`, `fbtrace_id`) and its events.

    `requested_by` maps each event's dedupe key to the message it came from. `events_received` is 0 when Meta's
    answer lacked it (seen on some error paths, docs/prior-art.md §3).
    """
    received = response.get("events_received")
    trace = response.get("fbtrace_id")
    return ConversionSent(
        pixel_id=batch.pixel_id,
        events_received=int(received) if received is not None else 0,
        fbtrace_id=str(trace) if trace else None,
        test_event=bool(batch.test_event_code),
        events=[
            SentEvent(
                event_name=event.event_name,
                event_id=event.event_id,
                requested_by=requested_by[event.dedupe_key].message_id,
                correlation_id=requested_by[event.dedupe_key].correlation_id,
                dropped_fields=list(event.dropped),
            )
            for event in batch.events
        ],
    )
