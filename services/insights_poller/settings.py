"""Variables of the insights_poller service (INSIGHTS_*)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.insights_poller.logic import DEFAULT_REACH_WINDOWS, reach_window


class InsightsSettings(BaseSettings):
    """Schedule, restatement windows and report-run knobs of the insights poller."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="INSIGHTS_")

    interval_seconds: float = Field(
        default=900.0, ge=0, description="Period of the background refresh; 0 turns the background job off."
    )
    trailing_days: int = Field(
        default=3, ge=1, le=90, description="Days (today included) every scheduled refresh re-reads."
    )
    # Meta's numbers stop changing 28 days after being reported (docs/meta-api.md §9.5).
    full_days: int = Field(
        default=28, ge=1, le=90, description="Days re-read by the once-a-day full refresh (restatement window)."
    )
    full_every_seconds: float = Field(
        default=86400.0, gt=0, description="How often a scheduled refresh widens to INSIGHTS_FULL_DAYS."
    )
    max_jobs_in_flight: int = Field(
        default=3, ge=1, le=50, description="Async report runs running at once per ad account."
    )
    sync_max_rows: int = Field(
        default=5000, ge=0,
        description="Read synchronously when ads x days is at most this; larger windows use async report runs.",
    )
    page_size: int = Field(default=500, ge=1, le=5000, description="`limit` when paging insights and objects.")
    poll_seconds: float = Field(
        default=5.0, gt=0, description="First wait between report-run status polls (grows x1.5 up to 30 s)."
    )
    job_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="A report run not done after this is treated as failed (split/retried)."
    )
    reach_windows: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_REACH_WINDOWS),
        description=("Windows (rules vocabulary: today, yesterday, last_N_days, previous_N_days; comma-separated) "
                     "whose deduplicated reach per ad set, campaign and ad each refresh reads (3 Graph calls each); "
                     "empty: none."),
    )

    @field_validator("reach_windows", mode="before")
    @classmethod
    def _split_windows(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("reach_windows")
    @classmethod
    def _check_windows(cls, value: list[str]) -> list[str]:
        for label in value:
            reach_window(label, date(2000, 1, 1))  # any day: only the label is checked (ValueError)
        return list(dict.fromkeys(value))
