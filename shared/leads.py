"""Reading stored leads: the one read model of lead_fetcher's `leads` table, for every other service.

lead_fetcher writes `leads`; crm_sync, capi_sender and the rules engine read it only through the `stored_leads`
view (migration 0030) with the functions here: one row type, one column list. The answers are PII: kept out of
`repr`, so a traceback or a log line cannot show them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

# The columns of `stored_leads`, in the order `StoredLead.from_row` reads them.
LEAD_COLUMNS = (
    "leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform, fields, names"
)
_BY_IDS = f"select {LEAD_COLUMNS} from stored_leads where leadgen_id = any($1::text[])"  # noqa: S608 - constant
_BY_ID = f"select {LEAD_COLUMNS} from stored_leads where leadgen_id = $1"  # noqa: S608 - constant

NAME_KEYS = ("ad_name", "adset_name", "campaign_name", "form_name")


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
