"""Reading stored leads: the one read model of lead_fetcher's `leads` table, for every other service.

lead_fetcher writes `leads`; crm_sync, capi_sender and the rules engine read it only through the `stored_leads`
view (migration 0030) with the functions here: one row type, one column list. The answers are PII: kept out of
`repr`, so a traceback or a log line cannot show them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.meta.customer_data import (
    InvalidFieldError,
    is_sha256,
    normalize_country,
    normalize_email,
    normalize_phone,
    sha256_hex,
)

if TYPE_CHECKING:
    import asyncpg

# The columns of `stored_leads`, in the order `StoredLead.from_row` reads them.
LEAD_COLUMNS = (
    "leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform, fields, names"
)
_BY_IDS = f"select {LEAD_COLUMNS} from stored_leads where leadgen_id = any($1::text[])"  # noqa: S608 - constant
_BY_ID = f"select {LEAD_COLUMNS} from stored_leads where leadgen_id = $1"  # noqa: S608 - constant

NAME_KEYS = ("ad_name", "adset_name", "campaign_name", "form_name")

# Meta's standard question keys holding the e-mail and the phone, in order of preference.
EMAIL_QUESTIONS = ("email", "work_email")
PHONE_QUESTIONS = ("phone_number", "work_phone_number")

# Each key's lead, for many keys in one query (`key` beside the lead's columns): a CRM contact id's lowest lead id
# (as crm_sync recorded it); for an e-mail or phone key the newest lead, when one person left several.
_BY_CRM_REFERENCES = (
    f"select key, {LEAD_COLUMNS} from stored_leads join (select distinct on (crm_reference) "  # noqa: S608 - constant
    "crm_reference as key, leadgen_id from stored_crm_contacts where crm_reference = any($1::text[]) "
    "order by crm_reference, leadgen_id) contacts using (leadgen_id)"
)
_BY_EMAIL_KEYS = (
    f"select distinct on (email_key) email_key as key, {LEAD_COLUMNS} from stored_leads "  # noqa: S608 - constant
    "where email_key = any($1::text[]) order by email_key, created_time desc"
)
_BY_PHONE_KEYS = (
    f"select distinct on (phone_key) phone_key as key, {LEAD_COLUMNS} from stored_leads "  # noqa: S608 - constant
    "where phone_key = any($1::text[]) order by phone_key, created_time desc"
)


@dataclass(frozen=True)
class StoredLead:
    """A lead as lead_fetcher stored it.

    `fields`: the answers as stored (question key -> value, a list for multi-value answers); `answers`: the same
    flattened to text (the first non-empty value of each). `names`: the ad / ad set / campaign / form names Meta
    sent with the lead, by `NAME_KEYS`, when it did.
    """

    leadgen_id: str
    page_id: str
    form_id: str | None
    ad_id: str | None
    adset_id: str | None
    campaign_id: str | None
    created_time: datetime
    is_organic: bool
    platform: str | None
    fields: Mapping[str, Any] = field(repr=False)
    answers: Mapping[str, str] = field(repr=False)
    names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | asyncpg.Record) -> StoredLead:
        """From a row of `stored_leads` (`LEAD_COLUMNS`)."""
        fields = row["fields"] if isinstance(row["fields"], Mapping) else {}
        names = row["names"] if isinstance(row["names"], Mapping) else {}
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
            fields=fields,
            answers=flatten_answers(fields),
            names={k: str(names[k]) for k in NAME_KEYS if names.get(k)},
        )

    def label(self, kind: str) -> str | None:
        """The name of the lead's campaign / adset / ad / form if the database has it, else its id."""
        name = self.names.get(f"{kind}_name")
        return name or getattr(self, f"{kind}_id", None)


def flatten_answers(fields: object) -> dict[str, str]:
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


async def load_lead(db: asyncpg.Pool | asyncpg.Connection, leadgen_id: str) -> StoredLead | None:
    """One stored lead, or None when lead_fetcher has not stored it."""
    row = await db.fetchrow(_BY_ID, leadgen_id)
    return StoredLead.from_row(row) if row is not None else None


async def load_leads(db: asyncpg.Pool | asyncpg.Connection, leadgen_ids: Sequence[str]) -> dict[str, StoredLead]:
    """The stored leads among `leadgen_ids`, by id (ids not stored are absent)."""
    return {r["leadgen_id"]: StoredLead.from_row(r) for r in await db.fetch(_BY_IDS, list(leadgen_ids))}


# -- matching an outcome to its lead -----------------------------------------------------------------------------


def email_key(value: str | None) -> str | None:
    """The match key of an e-mail: SHA-256 of the normalized address (a SHA-256 given is taken as is); None when
    absent or not an address."""
    if not value or not value.strip():
        return None
    if is_sha256(value):
        return value.strip().lower()
    try:
        return sha256_hex(normalize_email(value))
    except InvalidFieldError:
        return None


def phone_key(value: str | None, region: str | None = None) -> str | None:
    """The match key of a phone: SHA-256 of its digits with country code (`region` for a national number)."""
    if not value or not value.strip():
        return None
    if is_sha256(value):
        return value.strip().lower()
    try:
        return sha256_hex(normalize_phone(value, region_code(region)))
    except InvalidFieldError:
        return None


def region_code(country: str | None, default: str = "US") -> str:
    """An ISO alpha-2 code for a country as written ("US", "United States"); `default` when unknown."""
    if country and not is_sha256(country):
        try:
            return normalize_country(country).upper()
        except InvalidFieldError:
            pass
    return default


def lead_match_keys(answers: Mapping[str, Any], default_region: str = "US") -> tuple[str | None, str | None]:
    """A lead's (e-mail key, phone key) from its answers, as lead_fetcher stores them."""
    flat = {key.strip().lower(): value for key, value in flatten_answers(answers).items()}
    email = next((k for q in EMAIL_QUESTIONS if (k := email_key(flat.get(q)))), None)
    region = region_code(flat.get("country"), default_region)
    phone = next((k for q in PHONE_QUESTIONS if (k := phone_key(flat.get(q), region))), None)
    return email, phone


class MatchedBy(StrEnum):
    """Which identifier tied an outcome to its stored lead (`UNMATCHED`: none did)."""

    LEAD_ID = "lead_id"
    CRM_REFERENCE = "crm_reference"
    EMAIL = "email"
    PHONE = "phone"
    UNMATCHED = "unmatched"


@dataclass(frozen=True)
class OutcomeIdentifiers:
    """What an outcome says about its person, as the CRM sent it (clear or SHA-256). PII: kept out of `repr`."""

    lead_id: str | None = None
    crm_reference: str | None = field(default=None, repr=False)
    email: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    country: str | None = field(default=None, repr=False)


async def match_lead(
    db: asyncpg.Pool | asyncpg.Connection, who: OutcomeIdentifiers, *, default_region: str = "US"
) -> tuple[StoredLead | None, MatchedBy]:
    """The stored lead an outcome belongs to: by Meta lead id, the CRM's contact id (as crm_sync recorded it), the
    e-mail, then the phone (normalized and hashed as Meta matches them); the first that finds a lead wins."""
    if who.lead_id and (lead := await load_lead(db, who.lead_id)) is not None:
        return lead, MatchedBy.LEAD_ID
    return (await match_leads(db, [who], default_region=default_region))[0]


async def match_leads(
    db: asyncpg.Pool | asyncpg.Connection, whos: Sequence[OutcomeIdentifiers], *, default_region: str = "US"
) -> list[tuple[StoredLead | None, MatchedBy]]:
    """`match_lead` for many outcomes at once, without their Meta lead ids (look those up with `load_leads`): by
    the CRM's contact id, then the e-mail, then the phone, each step one query for the outcomes still unmatched."""
    found: list[tuple[StoredLead | None, MatchedBy]] = [(None, MatchedBy.UNMATCHED)] * len(whos)
    steps = (
        (MatchedBy.CRM_REFERENCE, _BY_CRM_REFERENCES, lambda who: who.crm_reference or None),
        (MatchedBy.EMAIL, _BY_EMAIL_KEYS, lambda who: email_key(who.email)),
        (MatchedBy.PHONE, _BY_PHONE_KEYS, lambda who: phone_key(who.phone, region_code(who.country, default_region))),
    )
    for by, query, key_of in steps:
        keys = {i: key for i, who in enumerate(whos) if found[i][0] is None and (key := key_of(who))}
        if not keys:
            continue
        leads = {row["key"]: StoredLead.from_row(row) for row in await db.fetch(query, list(set(keys.values())))}
        for i, key in keys.items():
            if key in leads:
                found[i] = (leads[key], by)
    return found
