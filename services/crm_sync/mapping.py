"""A stored lead and what each CRM receives for it. Plain functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Meta's standard question keys (field_data[].name) -> generic webhook field names. Keys not listed pass through
# under their own name, so custom questions ("were_you_injured") reach the CRM too; CRM_FIELD_MAP overrides.
DEFAULT_FIELD_MAP: dict[str, str | None] = {
    "full_name": "name",
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "phone_number": "phone",
    "street_address": "address",
    "city": "city",
    "state": "state",
    "province": "state",
    "zip_code": "postal_code",
    "post_code": "postal_code",
    "country": "country",
    "company_name": "company",
    "job_title": "job_title",
}

# Meta question keys -> GoHighLevel contact fields (LeadConnector API v2 contacts/upsert).
GHL_STANDARD_FIELDS: dict[str, str] = {
    "first_name": "firstName",
    "last_name": "lastName",
    "full_name": "name",
    "email": "email",
    "phone_number": "phone",
    "street_address": "address1",
    "city": "city",
    "state": "state",
    "province": "state",
    "zip_code": "postalCode",
    "post_code": "postalCode",
    "country": "country",
    "company_name": "companyName",
}

NAME_KEYS = ("ad_name", "adset_name", "campaign_name", "form_name")


@dataclass(frozen=True)
class StoredLead:
    """A row of `leads`. `answers` are PII: kept out of repr, so a traceback or a log line cannot show them."""

    leadgen_id: str
    page_id: str
    form_id: str | None
    ad_id: str | None
    adset_id: str | None
    campaign_id: str | None
    created_time: datetime
    is_organic: bool
    platform: str | None
    answers: Mapping[str, str] = field(repr=False)
    names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StoredLead:
        raw = row["raw"] if isinstance(row["raw"], dict) else {}
        names = {k: str(raw[k]) for k in NAME_KEYS if raw.get(k)}
        return cls(
            leadgen_id=row["leadgen_id"],
            page_id=row["page_id"],
            form_id=row["form_id"],
            ad_id=row["ad_id"],
            adset_id=row["adset_id"],
            campaign_id=row["campaign_id"],
            created_time=row["created_time"],
            is_organic=row["is_organic"],
            platform=row["platform"],
            answers=_flatten(row["fields"]),
            names=names,
        )

    def label(self, kind: str) -> str | None:
        """The name of the lead's campaign / adset / ad / form if the database has it, else its id."""
        return self.names.get(f"{kind}_name") or getattr(self, f"{kind}_id", None)


def _flatten(fields: object) -> dict[str, str]:
    """Answers as question key -> text (Meta returns lists of values; the first non-empty one counts)."""
    if not isinstance(fields, Mapping):
        return {}
    flat: dict[str, str] = {}
    for key, value in fields.items():
        if isinstance(value, list):
            value = next((v for v in value if v not in (None, "")), None)
        if value is not None and value != "":
            flat[str(key)] = str(value)
    return flat


def field_map(overrides: Mapping[str, str | None]) -> dict[str, str | None]:
    return {**DEFAULT_FIELD_MAP, **overrides}


def webhook_body(lead: StoredLead, mapping: Mapping[str, str | None]) -> dict[str, Any]:
    """The generic webhook's JSON: lead metadata plus the answers under the CRM's field names."""
    fields: dict[str, str] = {}
    for key, value in lead.answers.items():
        target = mapping.get(key, key)
        if target:  # a null mapping drops the answer
            fields[target] = value
    return {
        "leadgen_id": lead.leadgen_id,
        "page_id": lead.page_id,
        "form_id": lead.form_id,
        "ad_id": lead.ad_id,
        "adset_id": lead.adset_id,
        "campaign_id": lead.campaign_id,
        **{k: lead.names.get(k) for k in NAME_KEYS},
        "created_time": lead.created_time.isoformat(),
        "is_organic": lead.is_organic,
        "platform": lead.platform,
        "source": "meta_lead_ads",
        "fields": fields,
    }


def ghl_contact(lead: StoredLead, location_id: str, custom_fields: Mapping[str, str | None]) -> dict[str, Any]:
    """The body of `POST /contacts/upsert`: standard fields, source and tags from the ad, custom fields."""
    contact: dict[str, Any] = {"locationId": location_id}
    for key, target in GHL_STANDARD_FIELDS.items():
        if key in lead.answers and target not in contact:
            contact[target] = lead.answers[key]
    if "name" in contact and "firstName" not in contact and "lastName" not in contact:
        first, _, last = contact["name"].strip().partition(" ")
        contact["firstName"] = first
        if last.strip():
            contact["lastName"] = last.strip()
    campaign = lead.label("campaign")
    contact["source"] = f"Meta Lead Ads: {campaign}" if campaign else "Meta Lead Ads"
    tags = ["meta lead ads", "organic" if lead.is_organic else "paid"]
    for kind, title in (("campaign", "campaign"), ("adset", "ad set"), ("ad", "ad"), ("form", "form")):
        if value := lead.label(kind):
            tags.append(f"{title}: {value}")
    contact["tags"] = tags
    custom = [
        {"key": target, "field_value": lead.answers[key]}
        for key, target in custom_fields.items()
        if target and key in lead.answers
    ]
    if custom:
        contact["customFields"] = custom
    return contact
