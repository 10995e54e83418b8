"""Variables of the capi_sender service."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import iso_country


class CapiSettings(BaseSettings):
    """Batching and defaults of the Conversions API sender."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    capi_linger_ms: int = Field(
        default=500,
        ge=0,
        le=1000,
        description="How long a partly filled batch waits for more events before it is sent (at most 1 s).",
    )
    capi_workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Processes of `leadwire run capi_sender` consuming the queue side by side (one per core at high "
        "rates: one Python process tops out near one core).",
    )
    capi_crm_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="`lead_event_source` of CRM-stage events whose message names no CRM (default `leadwire`).",
    )
    capi_send_lead_stage: bool = Field(
        default=True,
        description="Send each captured lead to the Conversions API as the CRM stage `Lead` (Conversion Leads wants "
        "every stage, starting from the lead).",
    )
    default_country: str = Field(
        default="US",
        description="ISO alpha-2 country for national phone numbers, states and ZIPs without a country.",
    )

    @field_validator("default_country")
    @classmethod
    def _iso_country(cls, value: str) -> str:
        return iso_country(value)
