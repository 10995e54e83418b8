"""Conversion feedback messages: a CRM outcome for Meta's Conversions API, and the receipt once Meta took it.

Payload models only; their envelopes (and routing keys) are in contracts/messages.py.

Payloads use ``extra="ignore"``: a consumer tolerates fields added by newer producers, and a field nobody
modelled (a CRM typo such as ``emial``) never travels on to Meta. ``custom_data`` is the exception
(``extra="allow"``): free keys there are the point (Meta accepts arbitrary custom properties).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from contracts.values import check_finite

__all__ = [
    "ActionSource",
    "ConversionCustomData",
    "ConversionRequested",
    "ConversionSent",
    "ConversionUser",
    "SentEvent",
    "derive_event_id",
    "to_unix_seconds",
]

# Unix seconds at or above this are almost surely milliseconds (year 5138 in seconds); Meta wants seconds.
_MILLISECONDS_THRESHOLD = 100_000_000_000


class ActionSource(StrEnum):
    """Where the conversion happened (Meta's `action_source` enum, docs/meta-api.md §8.2)."""

    EMAIL = "email"
    WEBSITE = "website"
    APP = "app"
    PHONE_CALL = "phone_call"
    CHAT = "chat"
    PHYSICAL_STORE = "physical_store"
    SYSTEM_GENERATED = "system_generated"
    BUSINESS_MESSAGING = "business_messaging"
    OTHER = "other"


def to_unix_seconds(value: object) -> int:
    """Turn unix seconds (int, float, digit string), ISO 8601 text or an aware datetime into int seconds.

    Raises:
        ValueError: naive datetimes (no offset: the zone would be a guess), values that look like
            milliseconds, non-positive values, booleans and anything unparseable.
    """
    if isinstance(value, bool):
        raise ValueError("must be unix seconds or an ISO 8601 timestamp, not a boolean")
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite unix time in seconds")
        return _checked_seconds(int(value))
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():  # str.isdigit() also accepts Arabic-Indic and fullwidth digits
            return _checked_seconds(int(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("must be unix seconds or an ISO 8601 timestamp") from None
    else:
        raise ValueError("must be unix seconds or an ISO 8601 timestamp")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("ISO 8601 timestamp needs a UTC offset (Z or +HH:MM); a naive time is ambiguous")
    return _checked_seconds(int(moment.timestamp()))


def _checked_seconds(seconds: int) -> int:
    if seconds <= 0:
        raise ValueError("must be a positive unix time in seconds")
    if seconds >= _MILLISECONDS_THRESHOLD:
        raise ValueError("looks like milliseconds; send unix seconds")
    return seconds


def _loose_str(value: object) -> object:
    """CRMs send zip codes, phones and ids as numbers and blanks as ""; keep the model forgiving."""
    if isinstance(value, bool):
        return value  # let pydantic reject it: "true" is never a customer value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    return value


LooseStr = Annotated[str | None, BeforeValidator(_loose_str)]


class ConversionUser(BaseModel):
    """Who converted, clear text or already SHA-256 hashed; the sender normalizes and hashes as Meta matches.

    A malformed value here does not reject the message: the sender drops that field (reporting its name) and
    sends the rest, because one bad e-mail must not cost the match on `lead_id`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    lead_id: LooseStr = Field(
        default=None,
        description="Meta lead id (the leadgen webhook's `leadgen_id`), sent unhashed; the best identifier.",
        examples=["1234567890123456"],
    )
    email: LooseStr = Field(
        default=None,
        description="E-mail address, clear text or SHA-256 hex of the trimmed lowercase address.",
        examples=["John_Smith@gmail.com"],
    )
    phone: LooseStr = Field(
        default=None,
        description="Phone in any common format; a national number takes its country from `country`.",
        examples=["+1 (312) 555-1234", "(650)555-1212"],
    )
    first_name: LooseStr = Field(default=None, description="Given name.", examples=["Mary"])
    last_name: LooseStr = Field(default=None, description="Family name.", examples=["Smith"])
    city: LooseStr = Field(default=None, description="City.", examples=["New York"])
    state: LooseStr = Field(
        default=None,
        description="State or region; US full names are mapped to codes.",
        examples=["CA", "California"],
    )
    zip: LooseStr = Field(
        default=None, description="Postal code; US ZIP+4 is cut to 5 digits.", examples=["94035-1234"]
    )
    country: LooseStr = Field(
        default=None,
        description="ISO 3166-1 alpha-2 code or a common English name.",
        examples=["US", "United States"],
    )
    gender: LooseStr = Field(default=None, description="`m`/`f` or `male`/`female`.", examples=["female"])
    date_of_birth: LooseStr = Field(
        default=None,
        description="Date of birth: YYYY-MM-DD, YYYYMMDD or US-order M/D/YYYY.",
        examples=["1997-02-16", "2/16/1997"],
    )
    external_id: LooseStr = Field(
        default=None,
        description="Your stable id for this person (e.g. the CRM contact id); hashed before sending.",
        examples=["crm-contact-48213"],
    )
    fbc: LooseStr = Field(
        default=None,
        description="Click id cookie `_fbc`: fb.<subdomainIndex>.<creationTimeMs>.<fbclid>; sent unchanged.",
        examples=["fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"],
    )
    fbp: LooseStr = Field(
        default=None,
        description="Browser id cookie `_fbp`: fb.<subdomainIndex>.<creationTimeMs>.<random>; sent as is.",
        examples=["fb.1.1596403881668.1116446470"],
    )
    client_ip_address: LooseStr = Field(
        default=None, description="The person's IPv4 or IPv6 address; never hashed.", examples=["2001:db8::1"]
    )
    client_user_agent: LooseStr = Field(
        default=None,
        description="The person's browser user agent; never hashed. Required for website events.",
        examples=["Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"],
    )


class ConversionCustomData(BaseModel):
    """Meta `custom_data`: value and currency, plus any free keys, passed through."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    value: float | None = Field(
        default=None, ge=0, description="Monetary value of the conversion (major units).", examples=[25000.0]
    )
    currency: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{3}$",
        description="ISO 4217 currency code; required by Meta with `value` on Purchase.",
        examples=["USD"],
    )

    @field_validator("currency")
    @classmethod
    def _upper_currency(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @model_validator(mode="after")
    def _finite_extra(self) -> ConversionCustomData:
        check_finite(self.model_extra or {}, "custom_data")  # free keys are passed to Meta as they are
        return self


class ConversionRequested(BaseModel):
    """Routing key ``conversion.requested``: something happened to a lead that Meta should learn about.

    Typically a CRM stage change (QualifiedLead, SignedCase) sent as a Conversion Leads event.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "event_name": "SignedCase",
                    "event_time": 1795208645,
                    "user": {"lead_id": "1234567890123456"},
                    "crm_name": "Litify",
                },
                {
                    "event_name": "Purchase",
                    "event_time": "2026-11-20T15:04:05Z",
                    "event_id": "case-8812-signed",
                    "action_source": "system_generated",
                    "user": {"email": "mary@example.com", "phone": "(650)555-1212", "country": "US"},
                    "custom_data": {"value": 25000, "currency": "USD", "case_type": "auto"},
                },
            ]
        },
    )


    event_name: str = Field(
        min_length=1,
        max_length=100,
        description="Standard event (`Lead`, `Purchase`, ...) or a custom CRM stage (`SignedCase`).",
        examples=["SignedCase", "QualifiedLead", "Lead"],
    )
    event_time: Annotated[
        int,
        WithJsonSchema(
            {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "format": "date-time"}]},
            mode="validation",
        ),
    ] = Field(
        description="When it happened: unix seconds or ISO 8601 with offset; stored as unix seconds (UTC).",
        examples=[1795208645, "2026-11-20T15:04:05Z"],
    )
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Dedupe key shared with the Pixel/CRM; derived from the person, name and time if absent.",
        examples=["case-8812-signed"],
    )
    action_source: ActionSource = Field(
        default=ActionSource.SYSTEM_GENERATED,
        description="Meta's action_source; `system_generated` (default) = CRM-stage Conversion Leads event.",
        examples=["system_generated", "website"],
    )
    pixel_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]+$",
        description="Pixel / dataset id; the sender falls back to META_PIXEL_ID.",
        examples=["123456789012345"],
    )
    event_source_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        max_length=2048,
        description="Page where the event happened; required for `website` events.",
        examples=["https://example-law.com/free-case-review"],
    )
    user: ConversionUser = Field(
        default_factory=ConversionUser, description="Customer information used to match the person."
    )
    custom_data: ConversionCustomData | None = Field(
        default=None,
        description="Value, currency and free custom properties.",
        examples=[{"value": 25000, "currency": "USD", "case_type": "auto"}],
    )
    test_event_code: str | None = Field(
        default=None,
        min_length=1,
        description="Events Manager test code: routes to Test Events (still counted, not for production).",
        examples=["TEST12345"],
    )
    data_processing_options: list[Literal["LDU"]] | None = Field(
        default=None,
        description='Limited Data Use: `["LDU"]`, or `[]` to state explicitly that it is off.',
        examples=[["LDU"], []],
    )
    data_processing_options_country: Literal[0, 1] | None = Field(
        default=None, description="With LDU: 1 = United States, 0 = let Meta geolocate.", examples=[1]
    )
    data_processing_options_state: Literal[0, 1000] | None = Field(
        default=None, description="With LDU: 1000 = California, 0 = let Meta geolocate.", examples=[1000]
    )
    crm_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Name of the CRM the stage comes from; sent as `custom_data.lead_event_source`.",
        examples=["Litify", "Clio", "HighLevel"],
    )

    @field_validator("event_name", "event_id", "crm_name", "test_event_code", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return value.strip() if isinstance(value, str) else value

    @field_validator("pixel_id", mode="before")
    @classmethod
    def _pixel_str(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("event_time", mode="before")
    @classmethod
    def _event_time(cls, value: object) -> int:
        return to_unix_seconds(value)

    @model_validator(mode="after")
    def _ldu_consistent(self) -> ConversionRequested:
        country, state = self.data_processing_options_country, self.data_processing_options_state
        if (country is not None or state is not None) and "LDU" not in (self.data_processing_options or []):
            raise ValueError("data_processing_options_country/_state only apply with data_processing_options=['LDU']")
        if (country is None) != (state is None):
            raise ValueError("set data_processing_options_country and data_processing_options_state together")
        return self

    def resolved_event_id(self) -> str:
        """The event id to send: the producer's, or one derived deterministically (see `derive_event_id`)."""
        return self.event_id or derive_event_id(self.event_name, self.event_time, self.user)


def _email_anchor(email: str) -> str:
    """SHA-256 of the trimmed lowercase address, or the given hash: clear and hashed give the same id."""
    text = email.strip().lower()
    if len(text) == 64 and all(char in "0123456789abcdef" for char in text):
        return text
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def derive_event_id(event_name: str, event_time: int, user: ConversionUser) -> str:
    """A stable event id for a CRM event that came without one.

    The person is anchored on the strongest identifier present: `lead_id`, then `external_id`, then the
    e-mail (as its SHA-256, so the id carries no clear-text PII and is the same whether the CRM sent the
    address clear or hashed), then the phone's digits (hashed too), then a hash of every other field. A
    redelivered message therefore gets the same id, while a different stage or time gets a new one.

    Raises:
        ValueError: the user block is empty (such an event could not be matched anyway).
    """
    if user.lead_id:
        anchor = f"lead:{user.lead_id.strip()}"
    elif user.external_id:
        anchor = f"ext:{user.external_id.strip()}"
    elif user.email:
        anchor = f"em:{_email_anchor(user.email)}"
    elif user.phone and any(char.isdigit() for char in user.phone):
        digits = "".join(char for char in user.phone if char.isdigit())
        anchor = "ph:" + hashlib.sha256(digits.encode("ascii")).hexdigest()
    elif fields := user.model_dump(exclude_none=True):
        material = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        anchor = "user:" + hashlib.sha256(material.encode("utf-8")).hexdigest()
    else:
        raise ValueError("cannot derive event_id: the user block is empty")
    key = f"{anchor}|{event_name}|{event_time}".encode()
    return "lw-" + hashlib.sha256(key).hexdigest()[:32]


class SentEvent(BaseModel):
    """One event of a request Meta accepted, and the message that asked for it."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    event_name: str = Field(description="Event name as sent.", examples=["SignedCase"])
    event_id: str = Field(description="Event id as sent (dedupe key with event_name).", examples=["case-8812-signed"])
    requested_by: uuid.UUID = Field(
        description="`message_id` of the ConversionRequested this event came from (the first copy, if repeated).",
        examples=["6f1c3e0a-3f7e-4f7e-9a51-8a3b2b0c9d11"],
    )
    correlation_id: uuid.UUID = Field(
        description="`correlation_id` of that ConversionRequested: the story this event belongs to.",
        examples=["6f1c3e0a-3f7e-4f7e-9a51-8a3b2b0c9d11"],
    )
    dropped_fields: list[str] = Field(
        default_factory=list,
        description="Customer fields left out because they were invalid (names only, never values).",
        examples=[["phone"]],
    )


class ConversionSent(BaseModel):
    """Routing key ``conversion.sent.v2``: Meta accepted one Conversions API request; the events it carried.

    One message per request (up to 1,000 events), not per event: Meta's receipt (`events_received`, `fbtrace_id`)
    is per request, and a message per event cost the sender a fifth of its CPU at full rate.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    pixel_id: str = Field(description="Pixel / dataset the events went to.", examples=["123456789012345"])
    events_received: int = Field(
        ge=0, description="Meta's `events_received` for the request (0 if Meta's answer lacked it).", examples=[1]
    )
    fbtrace_id: str | None = Field(
        default=None,
        description="Meta's trace id for the request, for support tickets.",
        examples=["AbCdEf123"],
    )
    test_event: bool = Field(default=False, description="True when sent with a test_event_code.", examples=[False])
    events: list[SentEvent] = Field(min_length=1, description="The events of the request, in the order sent.")
