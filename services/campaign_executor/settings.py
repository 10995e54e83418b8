"""Settings of the campaign executor (environment variables `EXECUTOR_*`).

The budget guardrails it applies unless a command sets `force` are shared with the rules engine:
`shared.settings.BudgetGuardrailSettings` (`BUDGET_*`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExecutorSettings(BaseSettings):
    """How long the executor waits for Meta.

    Args:
        graph_max_wait_seconds: longest the executor waits inside a handler for a throttled scope; beyond it
            the command goes back to the queue as a delayed retry.
        audiences_file: YAML file of audience definitions kept in sync with the CRM (`leadwire audiences`);
            empty: none.
        audiences_sync_interval_seconds: how often the executor syncs every defined audience (a `sync_audience`
            command each, through the outbox); 0: only on demand (`leadwire audiences sync`).
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="EXECUTOR_")

    graph_max_wait_seconds: float = Field(default=10.0, ge=0, le=300)
    audiences_file: str = ""
    audiences_sync_interval_seconds: float = Field(default=0.0, ge=0)
