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
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from shared.budget_guardrails import MAX_BUDGET_STEP_PCT

logger = logging.getLogger(__name__)

DEFAULT_RULES_DIR = Path(__file__).parent / "default_rules"

Level = Literal["adset", "campaign", "ad"]

# Metrics read from insights (summed over a window) or derived from those sums.
InsightMetric = Literal[
    "spend",
    "impressions",
    "reach",
    "clicks",
    "ctr",
    "cpm",
    "frequency",
    "leads",
    "cpl",
    "qualified_leads",
    "signed_cases",
    "cost_per_qualified_lead",
    "cost_per_signed_case",
]
# Attributes of the entity itself (no window); useful on the right of a metric-vs-metric comparison.
AttributeMetric = Literal["daily_budget", "lifetime_budget"]
MetricName = Literal[InsightMetric, AttributeMetric]

INSIGHT_METRICS: frozenset[str] = frozenset(InsightMetric.__args__)  # type: ignore[attr-defined]
ATTRIBUTE_METRICS: frozenset[str] = frozenset(AttributeMetric.__args__)  # type: ignore[attr-defined]
MONEY_METRICS: frozenset[str] = frozenset(
    {"spend", "cpm", "cpl", "cost_per_qualified_lead", "cost_per_signed_case", "daily_budget", "lifetime_budget"}
)
# Spend divided by a count: undefined when the count is zero unless the condition says otherwise
# (`infinite_above_spend`).
COST_METRICS: frozenset[str] = frozenset({"cpl", "cost_per_qualified_lead", "cost_per_signed_case"})
# Metrics that are not defined when their denominator is zero (e.g. CPL with no leads).
DERIVED_METRICS: frozenset[str] = frozenset(
    {"ctr", "cpm", "frequency", "cpl", "cost_per_qualified_lead", "cost_per_signed_case"}
)

# Accepted spellings -> canonical operator.
_OPERATORS: dict[str, str] = {
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "gte": ">=",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "lte": "<=",
    "==": "==",
    "=": "==",
    "eq": "==",
    "!=": "!=",
    "ne": "!=",
}
Operator = Literal[">", ">=", "<", "<=", "==", "!="]


_WINDOW_RE = re.compile(r"^(today|yesterday|lifetime|(last|previous)_([1-9][0-9]{0,2})_days?)$")


def window_bounds(window: str) -> tuple[int, int | None]:
    """Day offsets (0 = today in the account's timezone) covered by a window, inclusive; None = unbounded.

    ``last_N_days`` includes today, like Meta rules' ``LAST_N_DAYS`` presets (docs/meta-api.md §10.2);
    ``previous_N_days`` is the N whole days before today (Meta's ``LAST_ND``).
    """
    if window == "today":
        return 0, 0
    if window == "yesterday":
        return 1, 1
    if window == "lifetime":
        return 0, None
    match = _WINDOW_RE.match(window)
    if match is None:
        raise ValueError(f"unknown window {window!r}")
    n = int(match.group(3))
    return (0, n - 1) if match.group(2) == "last" else (1, n)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricRef(_Model):
    """The right-hand side of a metric-vs-metric comparison: ``factor`` × ``metric`` over ``window``."""

    metric: MetricName
    window: str | None = Field(default=None, description="Defaults to the left-hand side's window.")
    factor: float = 1.0

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str | None) -> str | None:
        if value is not None:
            window_bounds(value)
        return value


class Condition(_Model):
    """``metric`` over ``window`` compared with a number (``value``) or with another metric (``compare_to``)."""

    metric: MetricName
    window: str = "today"
    op: Operator
    value: float | None = Field(default=None, description="Money in major units of the rule's currency.")
    compare_to: MetricRef | None = None
    infinite_above_spend: float | None = Field(
        default=None, ge=0,
        description="Cost-per metrics (cpl, cost_per_qualified_lead, cost_per_signed_case): with none of what is "
                    "paid for (0 leads, ...), the cost counts as infinite once the window's spend reaches this "
                    "amount (major units of the rule's currency). Without it, or below it, the cost is undefined "
                    "and the condition does not match.",
    )

    @field_validator("op", mode="before")
    @classmethod
    def _normalise_op(cls, value: Any) -> Any:
        if isinstance(value, str):
            canonical = _OPERATORS.get(value.strip().lower())
            if canonical is None:
                raise ValueError(f"unknown operator {value!r}; use one of > >= < <= == !=")
            return canonical
        return value

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        try:
            window_bounds(value)
        except ValueError:
            raise ValueError(
                f"unknown window {value!r}; use today, yesterday, lifetime, last_N_days or previous_N_days"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_right_hand_side(self) -> Condition:
        if (self.value is None) == (self.compare_to is None):
            raise ValueError("give exactly one of 'value' or 'compare_to'")
        if self.infinite_above_spend is not None and self.metric not in COST_METRICS:
            raise ValueError(f"infinite_above_spend applies to {', '.join(sorted(COST_METRICS))}, not {self.metric}")
        if self.compare_to is not None and (
            (self.metric in MONEY_METRICS) != (self.compare_to.metric in MONEY_METRICS)
        ):
            raise ValueError(
                f"cannot compare {self.metric} with {self.compare_to.metric}: one is money and the other is not"
            )
        return self

    @property
    def right_window(self) -> str:
        return (self.compare_to.window if self.compare_to else None) or self.window


def _node_kind(value: Any) -> str:
    if isinstance(value, dict) and ("all" in value or "any" in value):
        return "group"
    if isinstance(value, Group):
        return "group"
    return "condition"


class Group(_Model):
    """``all`` (AND) or ``any`` (OR) of conditions and nested groups."""

    all_: list[Node] | None = Field(default=None, alias="all", min_length=1)
    any_: list[Node] | None = Field(default=None, alias="any", min_length=1)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _list_means_all(cls, value: Any) -> Any:
        return {"all": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> Group:
        if (self.all_ is None) == (self.any_ is None):
            raise ValueError("a group has exactly one of 'all' or 'any'")
        return self

    @property
    def mode(self) -> Literal["all", "any"]:
        return "all" if self.all_ is not None else "any"

    @property
    def children(self) -> list[Condition | Group]:
        return self.all_ if self.all_ is not None else (self.any_ or [])

    def leaves(self) -> Iterator[Condition]:
        for child in self.children:
            if isinstance(child, Group):
                yield from child.leaves()
            else:
                yield child


Node = Annotated[
    Annotated[Condition, Tag("condition")] | Annotated[Group, Tag("group")],
    Discriminator(_node_kind),
]


Group.model_rebuild()


class TextFilter(_Model):
    """Filter on a name: every given test must pass. Case-insensitive unless ``case_sensitive``."""

    contains: str | None = None
    not_contains: str | None = None
    regex: str | None = None
    case_sensitive: bool = False

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return value


class Scope(_Model):
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


class PauseAction(_Model):
    type: Literal["pause"] = "pause"


class UnpauseAction(_Model):
    type: Literal["unpause"] = "unpause"


class PauseForTodayAction(_Model):
    """Pause now; the engine unpauses at the next midnight in the account's timezone."""

    type: Literal["pause_for_today"] = "pause_for_today"


class ChangeBudgetAction(_Model):
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


class SetBudgetAction(_Model):
    """Set the budget to ``amount`` (major units of the account currency)."""

    type: Literal["set_budget"] = "set_budget"
    amount: float = Field(gt=0)
    budget: Literal["daily_budget", "lifetime_budget"] = "daily_budget"


class RotateCreativeAction(_Model):
    """Ad-level rules: pause the ad and activate the next paused reserve ad of its ad set (an ad whose name contains
    ``[reserve]``, shared/creatives.py). With no reserve left, the ad is not paused: an ad set is never left
    without an active ad."""

    type: Literal["rotate_creative"] = "rotate_creative"


class NotifyAction(_Model):
    """Send the decision's explanation. Webhook URLs and SMTP settings live in the service settings, not here.

    Without ``channels``, the operator's channels (RULES_NOTIFY_CHANNELS: log, Slack and e-mail, each when set up).
    """

    type: Literal["notify"] = "notify"
    channels: list[Literal["log", "slack", "email"]] | None = Field(default=None, min_length=1)
    email_to: list[str] = Field(default_factory=list)


class RebalanceAction(_Model):
    """Move daily budget toward a target cost per lead or qualified lead, within the group's total (guide §7.3).

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
    target: float = Field(gt=0, description="Target cost per lead / qualified lead, major units (rule currency).")
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


class Guardrails(_Model):
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


class Rule(_Model):
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
