"""Variables of the lead_fetcher service (LEAD_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Meta keeps leads readable through the API for about 90 days (docs/meta-api.md §7.4); a scan reaching further
# back finds nothing and only spends the Page's leadgen quota.
MAX_BACKFILL_DAYS = 90


class LeadFetcherSettings(BaseSettings):
    """Batching, backfill and alerting knobs of the lead fetcher."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="LEAD_")

    fetch_batch_window_ms: float = Field(
        default=5.0, ge=0, le=1000,
        description="How long the first lead read waits for others to share one Graph batch call.",
    )
    prefetch: int = Field(
        default=100, ge=1, le=1000,
        description="Most LeadgenReceived messages per consumed batch (twice that may be unacknowledged at once): "
                    "what can share one Graph batch call, one stored-check query and one insert transaction.",
    )
    backfill_interval_seconds: float = Field(
        default=300.0, ge=0, description="Period of the background backfill; 0 turns the background job off."
    )
    backfill_initial_days: int = Field(
        default=30, ge=1, le=MAX_BACKFILL_DAYS, description="How far back a form without a watermark is scanned."
    )
    backfill_overlap_seconds: float = Field(
        default=600.0, ge=0, description="Re-scan this much before each form's watermark (webhooks and listing lag)."
    )
    access_retry_seconds: float = Field(
        default=300.0, gt=0, description="Retry delay of a lead read refused for a token or permission problem."
    )
    alert_repeat_seconds: float = Field(
        default=3600.0, gt=0, description="At most one access alert per Page and code in this period."
    )
    held_alert_seconds: float = Field(
        default=300.0, gt=0,
        description="Lead reads of a Page held back (throttled, or paced near Meta's quota) this long raise one "
                    "alert with the reason and the expected time.",
    )
