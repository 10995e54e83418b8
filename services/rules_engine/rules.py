"""Rule definitions: the YAML format and its pydantic models (loading files: `rule_files.py`).

A rule file holds one rule (a mapping), a list of rules, or several YAML documents. Money in YAML is always in
**major units** of the rule's `currency` (default USD: dollars); the engine converts to minor units with the
currency's offset (Meta, docs/meta-api.md §11.1) when it compares or writes budgets. An account in another currency
is judged with the rule's amounts converted at a configured rate (RULES_CURRENCY_RATES, `currency.py`), or not at
all: a rule never compares dollars with yen.

Example::

    name: kill-underperformers
    currency: USD                   # every amount below is in dollars
    enabled: true
    dry_run: false
    scope: {level: adset, status: [ACTIVE]}
    min_data:                       # not enough data -> skipped "insufficient_data", never acted on
      - {metric: impressions, window: last_3_days, op: ">", value: 1000}
    conditions:
      all:
        - {metric: cpl, window: last_3_days, op: ">", value: 50,          # $50; with 0 leads, infinite
           infinite_above_spend: 100}                                     # once $100 is spent
        - metric: spend                                                   # metric vs metric x factor
          window: last_7_days
          op: ">"
          compare_to: {metric: daily_budget, factor: 2}
    actions:
      - pause
      - {type: notify, channels: [log, slack]}
    guardrails: {cooldown_hours: 24}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from services.rules_engine.rule_terms import (
    INSIGHT_METRICS,
    Condition,
    Group,
    Level,
    RuleModel,
    TextFilter,
    window_bounds,
)
from shared.budget_guardrails import MAX_BUDGET_STEP_PCT

logger = logging.getLogger(__name__)

DEFAULT_RULES_DIR = Path(__file__).parent / "default_rules"


class Scope(RuleModel):
    """Which entities a rule looks at."""

    level: Level = "adset"
    accounts: list[str] = Field(default_factory=list, description="Ad account ids; empty = all.")
    status: list[str] | None = Field(
        default=None, description="Entity statuses; default ACTIVE (PAUSED for unpause rules)."
    )
    name: TextFilter | None = None
    campaign_ids: list[str] = Field(default_factory=list)
    campaign_name: TextFilter | None = None
    entity_ids: list[str] = Field(default_factory=list)
    paused_by: list[str] = Field(
        default_factory=list, description="Only entities whose latest pause came from one of these rules."
    )
    paused_within_hours: float | None = Field(default=None, gt=0)

    @field_validator("status")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        return [s.upper() for s in value] if value is not None else None


class PauseAction(RuleModel):
    type: Literal["pause"] = "pause"


class UnpauseAction(RuleModel):
    type: Literal["unpause"] = "unpause"


class PauseForTodayAction(RuleModel):
    """Pause now; the engine unpauses at the next midnight in the account's timezone."""

    type: Literal["pause_for_today"] = "pause_for_today"


class ChangeBudgetAction(RuleModel):
    """Change the budget by ``percent`` (+20 = raise by 20 %, -15 = lower by 15 %)."""

    type: Literal["change_budget"] = "change_budget"
    percent: float
    budget: Literal["daily_budget", "lifetime_budget"] = "daily_budget"

    @field_validator("percent")
    @classmethod
    def _not_zero(cls, value: float) -> float:
        if value == 0 or value <= -100:
            raise ValueError("percent must be non-zero and above -100")
        return value


class SetBudgetAction(RuleModel):
    """Set the budget to ``amount`` (major units of the account currency)."""

    type: Literal["set_budget"] = "set_budget"
    amount: float = Field(gt=0)
    budget: Literal["daily_budget", "lifetime_budget"] = "daily_budget"


class RotateCreativeAction(RuleModel):
    """Ad-level rules: pause the ad and activate the next paused reserve ad of its ad set (an ad whose name contains
    ``[reserve]``, shared/creatives.py). With no reserve left, the ad is not paused: an ad set is never left
    without an active ad."""

    type: Literal["rotate_creative"] = "rotate_creative"


class NotifyAction(RuleModel):
    """Send the decision's explanation. Webhook URLs and SMTP settings live in the service settings, not here.

    Without ``channels``, the operator's channels (RULES_NOTIFY_CHANNELS: log, Slack and e-mail, each when set up).
    """

    type: Literal["notify"] = "notify"
    channels: list[Literal["log", "slack", "email"]] | None = Field(default=None, min_length=1)
    email_to: list[str] = Field(default_factory=list)


class RebalanceAction(RuleModel):
    """Move daily budget toward a target cost per lead or qualified lead (or the group's own average), within the
    group's total (guide §7.3).

    The group is each campaign's ad sets (scope level ``adset``; a campaign with a campaign budget has none to
    move) or each account's campaign budgets (level ``campaign``: CBO campaigns). Objects that match the rule's
    conditions and ``min_data``, with ``min_events`` in the window (or, with fewer, a spend of ``min_events`` ×
    ``target``), are judged on their cost shrunk toward the target by ``prior_events`` (services/rules_engine/
    rebalance.py); dearer than the target by more than ``deadband_pct`` gives, cheaper receives, each by at most
    ``step_pct`` (and the executor's BUDGET_MAX_STEP_PCT) and within the hard limits. The sum is unchanged to the
    cent.
    """

    type: Literal["rebalance"] = "rebalance"
    metric: Literal["cpl", "cost_per_qualified_lead"] = "cost_per_qualified_lead"
    target: Annotated[float, Field(gt=0)] | Literal["average"] = Field(
        description="Target cost per lead / qualified lead, major units (rule currency); or `average`: the group's "
                    "own cost over the window (its spend ÷ its events), so budget moves from the dearer objects to "
                    "the cheaper ones whatever the firm's typical cost.")
    window: str = "last_14_days"
    min_events: int = Field(default=3, ge=1, description="Leads / qualified leads an object needs to be judged.")
    prior_events: float = Field(default=3, ge=0, description="Shrinkage: events at the target cost added to each.")
    deadband_pct: float = Field(default=10, ge=0, lt=100, description="Within this of the target: left alone.")
    step_pct: float = Field(default=MAX_BUDGET_STEP_PCT, gt=0, le=100, description="Largest change per object.")
    min_move: float = Field(default=1, gt=0, description="Smallest total move worth making, major units.")

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        window_bounds(value)
        return value

    @property
    def events_metric(self) -> str:
        return "leads" if self.metric == "cpl" else "qualified_leads"


ActionSpec = Annotated[
    PauseAction | UnpauseAction | PauseForTodayAction | ChangeBudgetAction | SetBudgetAction | NotifyAction
    | RotateCreativeAction
    | RebalanceAction,
    Field(discriminator="type"),
]
MUTATING_ACTIONS: frozenset[str] = frozenset(
    {"pause", "unpause", "pause_for_today", "change_budget", "set_budget", "rotate_creative", "rebalance"}
)
BUDGET_ACTIONS: frozenset[str] = frozenset({"change_budget", "set_budget"})


class Guardrails(RuleModel):
    """Safety limits; the defaults are the safe ones."""

    cooldown_hours: float = Field(default=24, ge=0, description="Per rule × entity.")
    max_budget_step_pct: float = Field(
        default=MAX_BUDGET_STEP_PCT, gt=0, le=100, description="Largest raise per change (as the executor's)."
    )
    max_budget_decrease_pct: float = Field(default=50, gt=0, le=100, description="Largest cut per change.")
    max_actions_per_run: int = Field(default=25, ge=0)
    max_actions_per_day: int = Field(default=50, ge=0, description="Per rule, rolling 24 hours.")
    min_budget: float | None = Field(default=None, gt=0, description="Floor for cuts, major units.")
    max_budget: float | None = Field(default=None, gt=0, description="Cap for raises, major units.")


class Rule(RuleModel):
    """One automation rule."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
    description: str = ""
    enabled: bool = True
    dry_run: bool = False
    priority: int = Field(default=100, description="Lower runs first; pauses run before raises at equal priority.")
    currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$",
        description="ISO 4217 currency of every amount in the rule. An account in another currency is judged with "
                    "the amounts converted at RULES_CURRENCY_RATES, or not at all when no rate is set.",
    )
    scope: Scope = Field(default_factory=Scope)
    min_data: list[Condition] = Field(default_factory=list)
    conditions: Group
    actions: list[ActionSpec] = Field(min_length=1)
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @field_validator("currency", mode="before")
    @classmethod
    def _upper_currency(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("actions", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"type": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        mutating = [a.type for a in self.actions if a.type in MUTATING_ACTIONS]
        if len(mutating) > 1:
            raise ValueError(f"at most one of pause/unpause/budget actions per rule, got {mutating}")
        if self.scope.level == "ad" and any(a.type in BUDGET_ACTIONS | {"rebalance"} for a in self.actions):
            raise ValueError("ads have no budget: use level adset or campaign for budget actions")
        if self.scope.level != "ad" and "rotate_creative" in mutating:
            raise ValueError("rotate_creative rotates ads: use scope level ad")
        return self

    @property
    def main_action(self) -> str:
        """The mutating action's type, or ``notify`` for notify-only rules."""
        for action in self.actions:
            if action.type in MUTATING_ACTIONS:
                return action.type
        return "notify"

    @property
    def notify_only(self) -> bool:
        """Whether the rule only tells the operator: it changes nothing on Meta, so it needs no consent."""
        return self.main_action == "notify"

    def statuses(self) -> frozenset[str]:
        if self.scope.status is not None:
            return frozenset(self.scope.status)
        return frozenset({"PAUSED"}) if self.main_action == "unpause" else frozenset({"ACTIVE"})

    @property
    def rebalance(self) -> RebalanceAction | None:
        return next((a for a in self.actions if isinstance(a, RebalanceAction)), None)

    def reads(self) -> list[Condition]:
        """Every condition the rule reads: ``min_data``, ``conditions``, and what a rebalance judges by (spend and
        events over its window), so the snapshot covers them."""
        found = [*self.min_data, *self.conditions.leaves()]
        action = self.rebalance
        if action is not None:
            found += [Condition(metric="spend", window=action.window, op=">=", value=0),
                      Condition(metric=action.events_metric, window=action.window, op=">=", value=0)]  # type: ignore[arg-type]
        return found

    def windows(self) -> set[str]:
        found: set[str] = set()
        for cond in self.reads():
            if cond.metric in INSIGHT_METRICS:
                found.add(cond.window)
            if cond.compare_to is not None and cond.compare_to.metric in INSIGHT_METRICS:
                found.add(cond.right_window)
        return found
