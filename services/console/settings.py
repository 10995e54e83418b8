"""Variables of the operator's console (`CONSOLE_*`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import iana_zone


class ConsoleSettings(BaseSettings):
    """Where the console listens, who may log in, and how sessions behave. (Performance's cost targets,
    `CONSOLE_TARGET_*`, are shared with the daily report: shared.settings.TargetSettings and the accounts file.)

    Args:
        host / port: the console's address; localhost unless configured (it shows personal data).
        users: operator accounts, whitespace-separated `name:argon2-hash` entries, as printed by
            `leadwire console add-user NAME`. No account: nobody can log in.
        session_hours: how long a login lasts.
        trust_proxy: trust `X-Forwarded-Proto` from a TLS-terminating proxy in front (cookies then get `Secure`).
        login_attempts / login_window_seconds: failed logins allowed per client address and per user name within
            the window before further attempts are refused (429).
        timezone: IANA zone the console's "today" is in; empty = the first ad account's zone, else UTC.
        outcome_lag_days: how long a lead's outcomes keep coming in (signings lag by weeks): costs per qualified
            lead and signed case of leads younger than this are shaded as still maturing.
        parked_refresh_seconds: the parking queues are counted (in RabbitMQ) at most this often, when Today is shown.
        meta_check_seconds: how often the console asks Meta for the health strip's token, Page subscription, lead
            access and usage (the checks of `leadwire doctor`); 0 = never (the strip then leaves them out).
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="CONSOLE_")

    host: str = "127.0.0.1"
    port: int = Field(default=8087, ge=0, le=65535)
    users: SecretStr = SecretStr("")
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    trust_proxy: bool = False
    login_attempts: int = Field(default=5, ge=1, le=1000)
    login_window_seconds: float = Field(default=900.0, gt=0)
    timezone: str = ""
    outcome_lag_days: int = Field(default=30, ge=0, le=365)
    parked_refresh_seconds: float = Field(default=10.0, gt=0)
    meta_check_seconds: float = Field(default=300.0, ge=0)

    @field_validator("users")
    @classmethod
    def _users_well_formed(cls, value: SecretStr) -> SecretStr:
        for entry in value.get_secret_value().split():
            name, _, hashed = entry.partition(":")
            if not name or not hashed.startswith("$argon2"):
                raise ValueError("each entry must be name:$argon2id$... (from `leadwire console add-user NAME`)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return iana_zone(value)

    def accounts(self) -> dict[str, str]:
        """Operator name -> argon2 hash."""
        return dict(entry.split(":", 1) for entry in self.users.get_secret_value().split())
