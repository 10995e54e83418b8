"""Variables of the daily report (`REPORT_*`). Where it goes is the notifications' settings
(`SLACK_WEBHOOK_URL`, `SMTP_*`, `NOTIFY_EMAIL_TO`: shared.settings.NotifySettings)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.settings import iana_zone


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ReportSettings(BaseSettings):
    """When the daily report is sent, and to whom.

    Args:
        enabled: send the report every day (`leadwire report daily` works either way).
        time: local time of day (HH:MM) it is sent, in each ad account's time zone (or `timezone`).
        timezone: IANA zone REPORT_TIME is read in for every account, instead of the account's own; the report's
            days stay the account's days (Meta's insights days).
        channels: where it goes (`slack`, `email`; comma-separated); a channel without settings is skipped.
        email_to: recipients (comma-separated); empty = NOTIFY_EMAIL_TO.
        check_seconds: how often the service looks whether a report is due (and retries a failed channel).
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="REPORT_")

    enabled: bool = True
    time: str = "08:00"
    timezone: str = ""
    channels: Annotated[list[Literal["slack", "email"]], NoDecode] = Field(default_factory=lambda: ["slack", "email"])
    email_to: Annotated[list[str], NoDecode] = Field(default_factory=list)
    check_seconds: float = Field(default=60.0, gt=0)

    @field_validator("channels", "email_to", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("time")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        from services.reports.logic import parse_time_of_day

        parse_time_of_day(value)  # raises ValueError with the reason
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return iana_zone(value)
