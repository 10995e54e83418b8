"""Lead capture: Meta's webhook → stored lead → CRM.

Lead PII (names, phones, emails) never travels on the broker: `LeadCaptured` carries ids and metadata, and
consumers read the answers from the `leads` table. A parked message therefore holds no PII.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from contracts.envelope import Payload
from contracts.values import DIGITS, MAX_UNIX_SECONDS

MetaId = str


def _id_to_str(value: object) -> object:
    # Meta sends ids as JSON numbers in webhooks and as strings from the Graph API; keep them as strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class LeadgenReceived(Payload):
    """A lead exists at Meta and has not been fetched yet (from a webhook or a backfill scan)."""

    leadgen_id: MetaId = Field(pattern=DIGITS, description="Meta lead id; the dedupe key.",
                               examples=["1234567890123456"])
    page_id: MetaId = Field(pattern=DIGITS, description="Page the lead form belongs to.")
    form_id: MetaId | None = Field(default=None, pattern=DIGITS)
    ad_id: MetaId | None = Field(default=None, pattern=DIGITS)
    adgroup_id: MetaId | None = Field(default=None, pattern=DIGITS,
                                      description="Legacy name of ad_id, as Meta sends it.")
    created_time: int | None = Field(default=None, ge=0, le=MAX_UNIX_SECONDS,
                                     description="Unix seconds, from the webhook.")
    source: Literal["webhook", "backfill"] = "webhook"

    _ids = field_validator("leadgen_id", "page_id", "form_id", "ad_id", "adgroup_id", mode="before")(
        _id_to_str
    )


class LeadCaptured(Payload):
    """A lead was fetched from Meta and stored; its answers are in the `leads` table."""

    leadgen_id: MetaId
    page_id: MetaId
    form_id: MetaId | None = None
    ad_id: MetaId | None = None
    adset_id: MetaId | None = None
    campaign_id: MetaId | None = None
    created_time: datetime
    is_organic: bool = False
    platform: str | None = None


class RedeliverLead(Payload):
    """Command to lead_fetcher: emit the stored lead's `LeadCaptured` again (a CRM delivery is redriven).

    Sent by crm_sync (`leadwire crm redeliver`); lead_fetcher, which owns the `leads` table, answers with a new
    `LeadCaptured` for the lead, which every consumer handles as usual (crm_sync delivers each adapter at most once).
    """

    leadgen_id: MetaId = Field(pattern=DIGITS, description="Meta lead id of a stored lead.",
                               examples=["1234567890123456"])
    reason: str | None = Field(default=None, max_length=200, description="Why it is redriven (ids, never PII).")


class LeadSynced(Payload):
    """A lead was delivered to one CRM adapter."""

    leadgen_id: MetaId
    adapter: str = Field(description="CRM adapter name, e.g. webhook or gohighlevel.")
    crm_reference: str | None = Field(default=None, description="The CRM's id for the contact, if any.")


_CAPTURED_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://leadwire/messages/LeadCaptured")


def captured_message_id(leadgen_id: str) -> uuid.UUID:
    """The one message id of a lead's `LeadCaptured`, derived from its lead id: a re-emission is recognisable as
    the same message, and anyone (the console's trail) can find it."""
    return uuid.uuid5(_CAPTURED_NAMESPACE, str(leadgen_id))
