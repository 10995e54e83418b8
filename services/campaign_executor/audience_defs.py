"""Audience definitions (EXECUTOR_AUDIENCES_FILE, YAML): which leads belong to which audience, and lookalikes.

```yaml
audiences:
  past_leads_180d:              # the name leadwire knows it by (CLI, commands, the `audiences` table)
    account_id: act_1000000001
    page_ids: ["1234567890"]    # optional: only leads from these Pages
    description: Everyone who left a lead in the last 180 days (exclusion)
    leads: {days: 180}          # every lead created in the window
  signed_cases:
    account_id: act_1000000001
    outcomes: [signed]          # leads with one of these CRM outcomes (case-insensitive), optionally `days`
  signed_lookalike_us_1pct:
    account_id: act_1000000001
    lookalike: {seed: signed_cases, country: US, ratio: 0.01}
```

Pure: parsing and validation only; the rows are read by `store.audience_candidates`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The multi-key schema every customer-file upload uses (docs/meta-api.md §12.2); EXTERN_ID is the leadgen id.
SCHEMA = ("EMAIL", "PHONE", "FN", "LN", "CT", "ST", "ZIP", "COUNTRY", "EXTERN_ID")
# Meta's standard lead-form question keys for each column, in order of preference.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "EMAIL": ("email", "work_email"),
    "PHONE": ("phone_number", "work_phone_number"),
    "FN": ("first_name",),
    "LN": ("last_name",),
    "CT": ("city",),
    "ST": ("state", "province"),
    "ZIP": ("zip_code", "post_code", "zip"),
    "COUNTRY": ("country",),
}
MIN_LOOKALIKE_SEED = 100  # matched people in one country (docs/meta-api.md §12.4)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LeadsRule(_Model):
    days: int = Field(ge=1, le=3650, description="Leads created in the last `days` days.")


class LookalikeRule(_Model):
    seed: str = Field(min_length=1, description="Name of the customer-file audience definition used as the seed.")
    country: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    countries: list[str] | None = Field(default=None, min_length=1)
    ratio: float = Field(ge=0.01, le=0.10, description="Share of the country's population, 1 to 10 %.")

    @field_validator("ratio")
    @classmethod
    def _whole_percent(cls, value: float) -> float:
        if abs(round(value * 100) - value * 100) > 1e-9:
            raise ValueError("ratio goes in steps of 0.01 (1 %)")
        return round(value, 2)

    @model_validator(mode="after")
    def _one_place(self) -> LookalikeRule:
        if bool(self.country) == bool(self.countries):
            raise ValueError("a lookalike needs exactly one of country or countries")
        return self

    def spec(self) -> dict[str, Any]:
        """Meta's `lookalike_spec`."""
        if self.country:
            return {"ratio": self.ratio, "country": self.country.upper()}
        return {"ratio": self.ratio,
                "location_spec": {"geo_locations": {"countries": [c.upper() for c in self.countries or []]}}}


class AudienceDefinition(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=200)
    account_id: str = Field(pattern=r"^act_\d+$")
    description: str = Field(default="", max_length=100)
    meta_name: str | None = Field(default=None, max_length=200, description="The name at Meta (default: name).")
    leads: LeadsRule | None = None
    outcomes: list[str] | None = Field(default=None, min_length=1)
    days: int | None = Field(default=None, ge=1, le=3650, description="With `outcomes`: outcomes in the window.")
    lookalike: LookalikeRule | None = None
    page_ids: list[str] | None = Field(default=None, min_length=1,
                                       description="Only leads from these Pages (default: every lead).")
    default_country: str = Field(default="US", pattern=r"^[A-Za-z]{2}$",
                                 description="For phone numbers without a country code and no country answer.")

    @model_validator(mode="after")
    def _one_kind(self) -> AudienceDefinition:
        kinds = [k for k in ("leads", "outcomes", "lookalike") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("an audience is exactly one of: leads, outcomes, lookalike")
        if self.days is not None and self.outcomes is None:
            raise ValueError("`days` goes with `outcomes` (for leads, use leads: {days: N})")
        if self.page_ids is not None and self.lookalike is not None:
            raise ValueError("`page_ids` selects leads: a lookalike takes its seed's")
        return self

    @property
    def is_lookalike(self) -> bool:
        return self.lookalike is not None

    @property
    def display_name(self) -> str:
        return self.meta_name or self.name

    @property
    def event_names(self) -> list[str]:
        return [e.strip().lower() for e in self.outcomes or []]


class AudienceConfigError(ValueError):
    """The audiences file is missing or wrong; the message says where."""


def parse(text: str) -> dict[str, AudienceDefinition]:
    """Definitions by name, checked: every lookalike's seed is a customer-file audience of the same account."""
    data = yaml.safe_load(text) or {}
    block = data.get("audiences") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        raise AudienceConfigError("the audiences file needs a top-level `audiences:` mapping")
    out: dict[str, AudienceDefinition] = {}
    for name, body in block.items():
        try:
            out[str(name)] = AudienceDefinition.model_validate({**(body or {}), "name": str(name)})
        except ValidationError as exc:
            raise AudienceConfigError(f"audience {name}: {exc.errors()[0]['msg']} "
                                      f"({'.'.join(map(str, exc.errors()[0]['loc']))})") from None
    for definition in out.values():
        if definition.lookalike is None:
            continue
        seed = out.get(definition.lookalike.seed)
        if seed is None or seed.is_lookalike:
            raise AudienceConfigError(f"audience {definition.name}: seed {definition.lookalike.seed} is not a "
                                      "customer-file audience of this file")
        if seed.account_id != definition.account_id:
            raise AudienceConfigError(f"audience {definition.name}: its seed is in another ad account")
    return out


def load(path: str | Path | None) -> dict[str, AudienceDefinition]:
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise AudienceConfigError(f"audiences file {file} not found")
    return parse(file.read_text(encoding="utf-8"))


def lead_row(answers: dict[str, str], leadgen_id: str) -> list[str]:
    """A lead's values in SCHEMA order (clear text, normalized and hashed by `audiences.prepare_rows`)."""
    row = []
    for key in SCHEMA:
        if key == "EXTERN_ID":
            row.append(leadgen_id)
            continue
        value = next((answers[q] for q in QUESTIONS[key] if answers.get(q, "").strip()), "")
        if not value and key in ("FN", "LN") and answers.get("full_name", "").strip():
            parts = answers["full_name"].split()
            value = parts[0] if key == "FN" else (parts[-1] if len(parts) > 1 else "")
        row.append(value)
    return row
