"""One module per command family; each applies a command to Meta and returns its `CommandOutcome`.

Every family function takes the same `CommandContext`, the audit-log connection (the worker holds the object's
lock on it), the command and the plan an interrupted earlier attempt committed (None on a first attempt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr

from services.campaign_executor.meta_reads import MetaReads
from shared.graph import GraphClient
from shared.settings import BudgetGuardrailSettings


@dataclass(frozen=True)
class CommandContext:
    """What the command families use besides the database: the Graph client, the reads, the budget limits, the
    audience definitions, the Page token and Pages (lead forms)."""

    graph: GraphClient
    reads: MetaReads
    limits: BudgetGuardrailSettings
    audiences_file: str | None = None  # EXECUTOR_AUDIENCES_FILE: the audience definitions (sync_audience)
    page_token: SecretStr | None = None  # META_PAGE_ACCESS_TOKEN (None when unset): creating lead forms needs it
    page_ids: tuple[str, ...] = ()  # META_PAGE_IDS: the Pages whose leads leadwire captures
    # Account -> its own daily budget ceiling, major units (LEADWIRE_ACCOUNTS_FILE), instead of BUDGET_DAILY_CEILING.
    ceilings: Mapping[str, float] = field(default_factory=dict)

    @property
    def max_wait(self) -> float:
        """Longest wait inside a handler for a throttled scope; beyond it the command is retried later."""
        return self.reads.max_wait
