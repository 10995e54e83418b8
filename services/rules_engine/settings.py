"""Variables of the rules engine (`RULES_*`); notifications' (`SLACK_WEBHOOK_URL`, `SMTP_*`, `NOTIFY_*`) are
`shared.settings.NotifySettings`, shared with the daily report (services/reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.rules_engine.currency import parse_rates
from services.rules_engine.rules import DEFAULT_RULES_DIR
from shared.settings import CrmOutcomeSettings, NotifySettings

__all__ = ["NotifySettings", "RulesSettings"]


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class RulesSettings(CrmOutcomeSettings):
    """Where the rules are, how often they run, and (inherited from the shared block) what counts as a CRM outcome.

    Args:
        dir: directory of rule files (`*.yaml`); default the packaged rules (the guide's four).
        interval_seconds: period of the scheduled evaluation of every account; 0 turns it off (evaluations
            still run on every `InsightsUpdated`).
        qualified_events / signed_events: CRM event names (case-insensitive) counted as qualified leads and
            signed cases for `qualified_leads`, `signed_cases` and the cost-per metrics.
        lookback_days: most days of insights a snapshot reads (also the horizon of `lifetime` windows).
        dry_run: every rule only records what it would do (nothing is published).
        notify_channels: the operator's channels: where every rule's decisions are announced unless its `notify`
            action names others (log, Slack and e-mail by default; a channel not set up is skipped).
        currency_rates: `FROM/TO=RATE` entries (comma-separated), e.g. `USD/JPY=150`: a rule's amounts (in its
            `currency`) are converted at these rates for accounts in another currency; inverse and cross rates
            through one common currency are derived. Without a rate such accounts are not judged by that rule.
        skipped_retention_days: days a skipped decision (did not match, too little data, nothing to change) is
            kept; older ones are deleted hourly (`store.prune_skipped_decisions`). Every other decision is the audit
            trail and kept. At least 8: the Automation page counts the last 7 days' decisions per rule and status
            (`console_rule_decision_counts`), which stay exact only while no decision of those 7 days is pruned.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="RULES_")

    dir: Path = DEFAULT_RULES_DIR
    interval_seconds: float = Field(default=900.0, ge=0)
    lookback_days: int = Field(default=35, ge=1, le=400)
    dry_run: bool = False
    notify_channels: Annotated[list[Literal["log", "slack", "email"]], NoDecode] = Field(
        default_factory=lambda: ["log", "slack", "email"]
    )
    currency_rates: Annotated[list[str], NoDecode] = Field(default_factory=list)
    skipped_retention_days: int = Field(default=14, ge=8)

    @field_validator("currency_rates", mode="before")
    @classmethod
    def _comma_list_rates(cls, value: object) -> object:
        return _split(value)

    @field_validator("currency_rates")
    @classmethod
    def _rates_parse(cls, value: list[str]) -> list[str]:
        parse_rates(value)
        return value

    def rates(self) -> dict[tuple[str, str], float]:
        return parse_rates(self.currency_rates)

    @field_validator("notify_channels", mode="before")
    @classmethod
    def _comma_list_channels(cls, value: object) -> object:
        return _split(value)
