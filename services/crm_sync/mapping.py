"""A stored lead and what each CRM receives for it. Plain functions, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.ghl import LEADWIRE_FIELD_KEYS
from shared.leads import NAME_KEYS, StoredLead
from shared.meta.customer_data import InvalidFieldError, normalize_country, normalize_date_of_birth, normalize_gender

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


# Meta question keys -> GoHighLevel contact fields (`UpsertContactDto`). Names: Meta's own first and last name when
# the form asked for them; the full name split only when it did not.
GHL_STANDARD_FIELDS: dict[str, str] = {
    "first_name": "firstName",
    "last_name": "lastName",
    "full_name": "name",
    "email": "email",
    "work_email": "email",
    "phone_number": "phone",
    "work_phone_number": "phone",
    "street_address": "address1",
    "city": "city",
    "state": "state",
    "province": "state",
    "zip_code": "postalCode",
    "post_code": "postalCode",
    "company_name": "companyName",
}
# Answers GoHighLevel takes only in its own form: converted, or kept with the unmapped answers when they cannot be.
GHL_CONVERTED = ("country", "date_of_birth", "gender")
GHL_GENDERS = {"m": "male", "f": "female"}


@dataclass(frozen=True)
class GhlContact:
    """What GoHighLevel receives for one lead.

    `body`: the `POST /contacts/upsert` body (`UpsertContactDto`: custom fields by id, no `tags`, which would replace
    the contact's tags); `tags`: for `POST /contacts/{id}/tags` (added, existing tags stay); `unmapped`: the answers
    no standard or custom field took, as "question: answer" lines, sent in the "Meta Lead Answers" custom field
    (`body`) when the location has it, else as `note`; `missing`: configured custom field targets the location does
    not have (their answers are among the unmapped).
    """

    body: dict[str, Any] = field(repr=False)
    tags: list[str]
    unmapped: str | None = field(default=None, repr=False)
    note: str | None = field(default=None, repr=False)
    missing: list[str] = field(default_factory=list)

    @property
    def matchable(self) -> bool:
        """GoHighLevel's upsert finds an existing contact by e-mail or phone: without both it always creates one."""
        return bool(self.body.get("email") or self.body.get("phone"))


def ghl_tags(lead: StoredLead) -> list[str]:
    tags = ["meta lead ads", "organic" if lead.is_organic else "paid"]
    for kind, title in (("campaign", "campaign"), ("adset", "ad set"), ("ad", "ad"), ("form", "form")):
        if value := lead.label(kind):
            tags.append(f"{title}: {value}")
    return tags


def ghl_contact(lead: StoredLead, location_id: str, resolve: Callable[[str], str | None],
                custom_fields: Mapping[str, str | None]) -> GhlContact:
    """The lead as GoHighLevel API v2 wants it. `resolve` turns a custom field target (id, key or bare key) into the
    location's field id, or None when the location has no such field."""
    answers = lead.answers
    contact: dict[str, Any] = {"locationId": location_id}
    used: set[str] = set()
    for key, target in GHL_STANDARD_FIELDS.items():
        if key in answers and target not in contact:
            contact[target] = answers[key]
            used.add(key)
    for key in ("work_email", "work_phone_number"):  # the second e-mail or phone of a form is an answer, not lost
        if key in used and contact.get(GHL_STANDARD_FIELDS[key]) != answers[key]:
            used.discard(key)
    if "name" in contact and "firstName" not in contact and "lastName" not in contact:
        first, _, last = contact["name"].strip().partition(" ")
        contact["firstName"] = first
        if last.strip():
            contact["lastName"] = last.strip()
    if "country" in answers:
        try:
            contact["country"] = normalize_country(answers["country"]).upper()  # GoHighLevel's country list: ISO
            used.add("country")
        except InvalidFieldError:
            pass
    if "date_of_birth" in answers:
        try:
            dob = normalize_date_of_birth(answers["date_of_birth"])
            contact["dateOfBirth"] = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
            used.add("date_of_birth")
        except InvalidFieldError:
            pass
    if "gender" in answers:
        try:
            contact["gender"] = GHL_GENDERS[normalize_gender(answers["gender"])]
            used.add("gender")
        except InvalidFieldError:
            pass
    campaign = lead.label("campaign")
    contact["source"] = f"Meta Lead Ads: {campaign}" if campaign else "Meta Lead Ads"

    custom: dict[str, str] = {}  # field id -> value
    missing: list[str] = []
    for key, target in custom_fields.items():
        if not target or key not in answers:
            continue
        field_id = resolve(target)
        if field_id is None:
            missing.append(target)
            continue
        custom[field_id] = answers[key]
        used.add(key)
    own = {"lead_id": lead.leadgen_id, "form": lead.label("form"), "campaign": campaign}
    for purpose, value in own.items():
        field_id = resolve(LEADWIRE_FIELD_KEYS[purpose])
        if field_id is not None and value:
            custom.setdefault(field_id, value)
    rest = [f"{key}: {value}" for key, value in answers.items() if key not in used]
    unmapped = "\n".join(rest) if rest else None
    note = None
    if unmapped:
        answers_field = resolve(LEADWIRE_FIELD_KEYS["answers"])
        if answers_field is not None:
            custom.setdefault(answers_field, unmapped)
        else:
            note = f"Meta lead {lead.leadgen_id}: answers without a GoHighLevel field\n{unmapped}"
    if custom:
        contact["customFields"] = [{"id": field_id, "field_value": value} for field_id, value in custom.items()]
    return GhlContact(contact, ghl_tags(lead), unmapped, note, missing)
