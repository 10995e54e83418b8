"""Settings of the campaign executor (environment variables `EXECUTOR_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExecutorSettings(BaseSettings):
    """Guardrails the executor applies unless a command sets `force`.

    Args:
        daily_budget_ceiling_minor: optional ceiling on the sum of daily budgets of active campaigns and ad sets
            in one ad account, in that account's minor units (cents for USD, yen for JPY). Unset = no ceiling.
        max_budget_step_pct: largest budget change per command, in percent of the current budget (bigger
            jumps reset Meta's learning phase).
        max_budget_changes_per_hour: budget changes per ad set per rolling hour (Meta blocks the 5th for an
            hour: 613/1487632).
        graph_max_wait_seconds: longest the executor waits inside a handler for a throttled scope; beyond it
            the command goes back to the queue as a delayed retry.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="EXECUTOR_")

    daily_budget_ceiling_minor: int | None = Field(default=None, gt=0)
    max_budget_step_pct: float = Field(default=20.0, gt=0, le=1000)
    max_budget_changes_per_hour: int = Field(default=4, ge=1, le=100)
    graph_max_wait_seconds: float = Field(default=10.0, ge=0, le=300)
