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
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_prefix="EXECUTOR_")

    graph_max_wait_seconds: float = Field(default=10.0, ge=0, le=300)
