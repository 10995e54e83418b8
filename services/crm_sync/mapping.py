"""A stored lead and what each CRM receives for it. Plain functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.leads import NAME_KEYS, StoredLead

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
