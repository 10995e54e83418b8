"""What the rules read and what they decide: entities, metric rows, snapshot, state, actions and decisions.

Units: every money value here (row spend, budgets, `Action.budget`, money entries of `Decision.metrics`) is an
integer or float in **minor units** of the entity's account currency (cents for USD; offset 1 for JPY and the
other currencies in `shared.money.OFFSET_ONE`). Rule thresholds are major units in YAML and are converted per
entity currency at comparison time. Explanations show major units ("$62.40").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from services.rules_engine.rule_terms import Level
from shared.budget_guardrails import MAX_BUDGET_CHANGES_PER_HOUR, MAX_BUDGET_STEP_PCT

# ---------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class Entity:
    """A campaign, ad set or ad as the rules see it. Budgets in minor units; ``status`` is Meta's status."""

    id: str
    level: Level
    name: str
    status: str
    account_id: str
    campaign_id: str | None = None
    campaign_name: str | None = None
    adset_id: str | None = None
    daily_budget: int | None = None
    lifetime_budget: int | None = None
    currency: str = "USD"
    timezone: str = "UTC"


class MetricRow(NamedTuple):
    """One day of delivery for one object (normally one ``insights_daily`` row per ad per day).

    A NamedTuple rather than a dataclass: 300k of these are grouped and transposed in C per evaluation.

    ``date`` is the day in the ad account's timezone, as Meta reports it. The row is added to each of
    ``ad_id``, ``adset_id`` and ``campaign_id`` that is set, which rolls ads up to ad sets and campaigns.
    CRM numbers (``qualified_leads``, ``signed_cases``) can come in the same row or in separate rows with zero
    delivery; attribute them to the lead's ad and the day the lead was created. ``spend`` is in minor units.
    """

    date: date
    ad_id: str | None = None
    adset_id: str | None = None
    campaign_id: str | None = None
    spend: int = 0
    impressions: int = 0
    reach: int = 0
    clicks: int = 0
    leads: int = 0
    qualified_leads: int = 0
    signed_cases: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the rules read. ``window_reach`` optionally overrides the summed reach for
    ``(entity_id, window)`` with Meta's deduplicated reach for that window (summed daily reach overstates
    unique reach and so understates frequency)."""

    entities: Sequence[Entity]
    rows: Sequence[MetricRow]
    window_reach: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """An action that was executed (or attempted) on an entity. ``rule`` may be e.g. ``"manual"`` for budget
    edits made outside the engine, which still count toward Meta's 4-per-hour limit."""

    rule: str
    entity_id: str
    kind: str
    at: datetime
    resume_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """What the executor's hard budget limits know of one campaign or ad set (view `stored_budget_limits`)."""

    first_seen: int | None = None  # its daily budget when leadwire first saw it (minor units)
    increases_week: int = 0  # budget increases in the last rolling 7 days
    blocked_until: datetime | None = None  # Meta blocks its budget changes until then (613/1487632)


@dataclass(frozen=True, slots=True)
class EngineState:
    """History the guardrails need. The service loads the last few days of actions (at least the longest
    cooldown) and the other maps from its tables; `record_actions` returns an updated copy."""

    actions: Sequence[ActionRecord] = ()
    consecutive_failures: Mapping[str, int] = field(default_factory=dict)
    account_daily_budget_ceiling: Mapping[str, int] = field(default_factory=dict)
    data_as_of: Mapping[str, datetime] = field(default_factory=dict)
    # The operator's consent: the rules allowed to act. The others run in shadow mode (their decisions are
    # `would_act` with `shadow`, nothing is sent to Meta). None = every rule acts (backtests, previews).
    consented: frozenset[str] | None = None
    # The executor's hard limits per object id (empty: none known, e.g. a backtest, which applies its own).
    budget_limits: Mapping[str, BudgetLimit] = field(default_factory=dict)
    # Ads creative rotation took out of delivery (fatigued): never brought back as reserves, whatever their names.
    retired_ads: frozenset[str] = frozenset()


class EngineSettings(BaseModel):
    """Engine-wide limits (per-rule limits live in each rule's ``guardrails``; the spend floor and Meta's hourly
    limit on budget changes come from ``shared.budget_guardrails``)."""

    model_config = ConfigDict(frozen=True)

    dry_run: bool = Field(default=False, description="Preview: every rule yields would_act, nothing acts.")
    max_actions_per_run: int = Field(default=100, ge=0, description="All rules together.")
    budget_changes_per_hour: int = Field(
        default=MAX_BUDGET_CHANGES_PER_HOUR, ge=0, description="Meta: 4 per ad set per hour (docs/meta-api.md §2.3)."
    )
    max_step_pct: float = Field(
        default=MAX_BUDGET_STEP_PCT, gt=0,
        description="The executor's largest change per command (BUDGET_MAX_STEP_PCT): a rule's step and cut "
        "limits are capped by it, so the engine never decides a change the executor refuses.",
    )
    max_multiple_of_first_seen: float = Field(
        default=2.0, ge=1, description="The executor's hard limit (BUDGET_MAX_MULTIPLE_OF_FIRST_SEEN)."
    )
    max_increases_per_week: int = Field(
        default=3, ge=1, description="The executor's hard limit (BUDGET_MAX_INCREASES_PER_WEEK)."
    )
    circuit_breaker_failures: int = Field(default=3, ge=1)
    max_data_age: timedelta = timedelta(hours=3)
    include_not_matched: bool = False
    currency_rates: dict[tuple[str, str], float] = Field(
        default_factory=dict, description="(from, to) -> rate: a rule's amounts in an account's currency."
    )


# ---------------------------------------------------------------------------------------------------------------
# Outputs

DecisionOutcome = Literal["acted", "would_act", "skipped"]
ReasonCode = Literal[
    "not_matched",
    "insufficient_data",
    "stale_data",
    "circuit_open",
    "conflict",
    "cooldown",
    "max_actions",
    "no_change",
    "no_budget",
    "budget_change_rate",
    "guard_budget_step",
    "budget_limit",
    "ceiling",
    "hard_max_budget",
    "budget_increases_per_week",
    "no_reserve",
]
ActionKind = Literal[
    "pause", "unpause", "pause_for_today", "change_budget", "set_budget", "notify", "rotate_creative", "rebalance"
]


class Action(BaseModel):
    """A command for the campaign executor. Budgets are absolute (idempotent on retry), in minor units.

    Maps onto ``contracts.commands``: pause / pause_for_today -> ``PauseCommand`` (the engine itself emits the
    ``unpause`` at the account's midnight), unpause -> ``UnpauseCommand``, change_budget / set_budget ->
    ``SetBudgetCommand(amount_minor=budget, expected_current_minor=previous_budget)``, rotate_creative ->
    ``RotateCreativeCommand(object_id=entity_id, reserve_ad_id=reserve_id, adset_id=adset_id)``, rebalance ->
    ``RebalanceBudgetsCommand`` of ``moves`` (object id, from, to: daily budgets of ``moves_level`` objects whose sum
    is unchanged), notify -> an alert.
    """

    model_config = ConfigDict(frozen=True)

    kind: ActionKind
    rule: str
    entity_id: str
    entity_level: Level
    account_id: str
    reason: str
    idempotency_key: str
    budget_field: Literal["daily_budget", "lifetime_budget"] | None = None
    budget: int | None = None
    previous_budget: int | None = None
    currency: str | None = None
    resume_at: datetime | None = None
    channels: tuple[str, ...] = ()
    email_to: tuple[str, ...] = ()
    reserve_id: str | None = None  # rotate_creative: the paused reserve ad it activates
    adset_id: str | None = None  # rotate_creative: the ad set of both ads
    moves: tuple[tuple[str, int, int], ...] = ()
    moves_level: Level | None = None

    @property
    def command_id(self) -> uuid.UUID:
        """A stable UUID for ``CampaignCommand.command_id``: the same decision always maps to the same command."""
        return uuid.uuid5(uuid.NAMESPACE_URL, f"leadwire:rules_engine:{self.idempotency_key}")


class Decision(BaseModel):
    """What one rule decided about one entity, with the numbers and a one-sentence explanation.

    ``metrics`` maps a window (or ``"entity"`` for budgets) to metric values; money in minor units of
    ``currency``; ``None`` = undefined (e.g. CPL with no leads). ``reason`` is set when skipped, and also on an
    acted budget change that was capped (``guard_budget_step`` / ``budget_limit``, with ``capped`` true).
    ``would_act`` decisions come from dry runs, or from rules in shadow mode (``shadow``: not enabled yet).
    """

    model_config = ConfigDict(frozen=True)

    rule: str
    entity_id: str
    entity_level: Level
    entity_name: str
    account_id: str
    currency: str
    outcome: DecisionOutcome
    reason: ReasonCode | None = None
    capped: bool = False
    actions: tuple[Action, ...] = ()
    metrics: dict[str, dict[str, float | int | None]] = Field(default_factory=dict)
    explanation: str
    evaluated_at: datetime
    shadow: bool = False  # would_act only because the operator has not enabled the rule (shadow mode)



def norm_account(account_id: str) -> str:
    """An ad account id without Meta's ``act_`` prefix: ids are compared in this form, whichever the caller used."""
    return account_id.removeprefix("act_")


def build_decision(
    rule_name: str,
    entity: Entity,
    now: datetime,
    outcome: DecisionOutcome,
    explanation: str,
    *,
    reason: ReasonCode | None = None,
    capped: bool = False,
    actions: tuple[Action, ...] = (),
    metrics: dict[str, dict[str, float | int | None]] | None = None,
    shadow: bool = False,
) -> Decision:
    """A `Decision` from values the engine produced and typed, without re-validating them."""
    # Skipping validation keeps a 10k-entity run fast. This is what Decision.model_construct does for a full set of
    # fields, minus its per-field loop. Measured (bench_rules' inputs, 10k ad sets, CPU median of 8 alternating runs,
    # 2026-12-03): model_construct instead costs +9% (typical, 0.330 -> 0.361 s) and +14% (stress, 0.665 -> 0.756 s),
    # beyond the 10% the rules figure may lose. tests/unit/test_rules_logic.py checks this against model_construct
    # and round-trips decisions through Decision.model_validate to keep it honest.
    decision = _new_decision(Decision)
    _set(
        decision,
        "__dict__",
        {
            "rule": rule_name,
            "entity_id": entity.id,
            "entity_level": entity.level,
            "entity_name": entity.name,
            "account_id": entity.account_id,
            "currency": entity.currency,
            "outcome": outcome,
            "reason": reason,
            "capped": capped,
            "actions": actions,
            "metrics": metrics or {},
            "explanation": explanation,
            "evaluated_at": now,
            "shadow": shadow,
        },
    )
    _set(decision, "__pydantic_fields_set__", set(_DECISION_FIELDS))
    _set(decision, "__pydantic_extra__", None)
    _set(decision, "__pydantic_private__", None)
    return decision


_new_decision = Decision.__new__
_set = object.__setattr__
_DECISION_FIELDS = frozenset(Decision.model_fields)
