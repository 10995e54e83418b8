"""Decisions of the campaign executor as plain functions: targets, guardrails, Graph parameters, outcomes.

Everything here takes what Meta and the audit log said as arguments, so it is tested without a broker, a
database or the sandbox. `worker.py` and the command modules (`commands/`) do the I/O around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contracts.commands import (
    ChangeBudgetCommand,
    CreateCampaignCommand,
    CreateLeadFormCommand,
    MetaErrorInfo,
    RebalanceBudgetsCommand,
    RotateCreativeCommand,
    SetBudgetCommand,
    SyncAudienceCommand,
)
from shared import budget_guardrails
from shared.budget_guardrails import daily_ceiling_minor, spend_floor
from shared.graph.errors import GraphError
from shared.money import apply_percent, format_money, parse_minor
from shared.settings import BudgetGuardrailSettings

STATUS_OF_KIND = {"pause": "PAUSED", "unpause": "ACTIVE", "archive": "ARCHIVED", "delete": "DELETED"}
BUDGET_KINDS = frozenset({"set_budget", "change_budget"})


@dataclass
class CommandOutcome:
    """What applying one command came to; becomes the `CommandResult`."""

    status: str
    detail: str = ""
    guardrail: str | None = None
    error: GraphError | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    created_ids: dict[str, str] = field(default_factory=dict)
    rolled_back: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    currency: str | None = None
    account_id: str | None = None
    forced: bool = False  # applied with `force`: the soft guardrails were skipped (never the hard limits)


class CommandFailed(Exception):
    """Meta refused the change for a reason retrying cannot fix: the result is `failed`."""

    def __init__(self, error: GraphError, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or str(error))
        self.error = error
        self.detail = detail
        self.extra = extra


def meta_error_info(error: GraphError | None) -> MetaErrorInfo | None:
    """Meta's error as `CommandResult.meta_error` carries it (message cut to 1,000 characters)."""
    if error is None:
        return None
    return MetaErrorInfo(code=error.code, subcode=error.subcode, fbtrace_id=error.fbtrace_id,
                         message=error.message[:1000], user_title=error.user_title, user_message=error.user_message)


def audit_payload(command: Any) -> dict[str, Any]:
    """The command as stored in the audit log (no command carries personal data: audiences are read from the
    database by the executor, `sync_audience`)."""
    return dict(command.model_dump(mode="json"))


def lock_key(command: Any) -> str:
    """What a command's advisory lock serializes on: its audience definition, its object, its ad set's ads (a
    rotation), a Page's form name, or (a create) itself."""
    if isinstance(command, CreateCampaignCommand):
        return f"command:{command.command_id}"
    if isinstance(command, SyncAudienceCommand):
        return f"audience-definition:{command.audience}"
    if isinstance(command, RotateCreativeCommand):
        return f"adset-ads:{command.adset_id}"  # two rotations in one ad set never pick the same reserve at once
    if isinstance(command, CreateLeadFormCommand):
        return f"lead-form:{command.page_id}:{command.form.name}"
    if isinstance(command, RebalanceBudgetsCommand):  # then each of its objects, sorted (commands/rebalance.py)
        return f"rebalance:{command.account_id}"
    return f"object:{command.object_id}"


def object_id_of(command: Any) -> str | None:
    """The object a command acts on: its object or (a lead form) the Page."""
    return getattr(command, "object_id", None) or getattr(command, "page_id", None)


@dataclass(frozen=True)
class ObjectState:
    """A campaign, ad set or ad as just re-read from Meta."""

    object_id: str
    account_id: str
    status: str
    effective_status: str
    daily_budget: int | None
    lifetime_budget: int | None
    name: str = ""

    @classmethod
    def from_graph(cls, body: Mapping[str, Any]) -> ObjectState:
        account = str(body.get("account_id") or "")
        return cls(
            object_id=str(body["id"]),
            account_id=account if account.startswith("act_") or not account else f"act_{account}",
            status=str(body.get("status") or body.get("configured_status") or ""),
            effective_status=str(body.get("effective_status") or body.get("status") or ""),
            daily_budget=parse_minor(body.get("daily_budget")),
            lifetime_budget=parse_minor(body.get("lifetime_budget")),
            name=str(body.get("name") or ""),
        )

    def budget(self, kind: str) -> int | None:
        return self.daily_budget if kind == "daily" else self.lifetime_budget


@dataclass(frozen=True)
class Refusal:
    guardrail: str
    detail: str


def refused(refusal: Refusal, **kw: Any) -> CommandOutcome:
    return CommandOutcome("refused", refusal.detail, guardrail=refusal.guardrail, **kw)


def object_status_refusal(kind: str, obj: ObjectState) -> Refusal | None:
    """Deleted objects cannot change; archived ones can only be deleted (docs/meta-api.md §11.2)."""
    if obj.status == "DELETED":
        return Refusal("object_status", f"object {obj.object_id} is DELETED")
    if obj.status == "ARCHIVED" and kind != "delete":
        return Refusal("object_status", f"object {obj.object_id} is ARCHIVED (only deleting is possible)")
    return None


def is_budget_block(error: GraphError) -> bool:
    """Meta's "too many budget changes on this ad set" (613/1487632): budget changes are blocked for an hour."""
    return (error.code, error.subcode) == (613, 1487632)


def changed_elsewhere(
    field_name: str, plan: Mapping[str, Any], now: Any, currency: str | None = None
) -> Refusal | None:
    """An earlier attempt planned ``plan[field_name]`` from ``plan["from"]``; Meta now has ``now``.

    Meta showing the value the attempt started from (it did not apply) or its target (it did) is ours to finish
    or re-check; anything else means someone changed the object since (a human in Ads Manager, another tool):
    the command is abandoned, never re-applied from the old plan. A plan without "from" (written before it was
    recorded) cannot tell and is re-checked like a new decision.
    """
    if "from" not in plan or now in (plan["from"], plan.get(field_name)):
        return None

    def shown(value: Any) -> str:
        if currency is not None and isinstance(value, int):
            return format_money(value, currency)
        return str(value)

    return Refusal(
        "changed_elsewhere",
        f"abandoned: {field_name} is {shown(now)} at Meta, neither the {shown(plan['from'])} an earlier attempt "
        f"started from nor its target {shown(plan.get(field_name))}; it was changed elsewhere (Ads Manager?) "
        "since, so the old plan is not applied",
    )


def budget_target(command: SetBudgetCommand | ChangeBudgetCommand, current: int) -> int:
    """The absolute budget a command asks for, from the current one. Computed once and stored (plan)."""
    if isinstance(command, SetBudgetCommand):
        return command.amount_minor
    if command.percent is not None:
        return apply_percent(current, command.percent)
    assert command.amount_minor is not None
    return current + command.amount_minor


@dataclass(frozen=True)
class BudgetFacts:
    """What the guardrails need to know besides the command and the object."""

    current: int
    target: int
    currency: str
    changes_last_hour: int = 0
    spent: int | None = None  # minor units spent in the budget's period (today / lifetime); None = unknown
    account_daily_total: int | None = None  # active daily budgets in the account, before this change
    ceiling: int | None = None  # the account's daily ceiling in minor units (`account_ceiling`); None = not read
    ceiling_basis: str = ""  # where the ceiling comes from, for the refusal's sentence
    first_seen: int | None = None  # the object's daily budget when leadwire first saw it; None = not read
    increases_last_week: int = 0  # budget increases applied on the object in the last 7 days, other commands
    # Meta answered a budget change on the object with 613/1487632 and blocks budget changes until then (UTC);
    # None = no block known. Meta counts edits made in Ads Manager, which leadwire's audit log cannot see.
    meta_blocked_until: datetime | None = None


LEVEL_NAMES = {"adset": "ad set", "campaign": "campaign"}


def budget_refusal(
    command: SetBudgetCommand | ChangeBudgetCommand, facts: BudgetFacts, limits: BudgetGuardrailSettings
) -> Refusal | None:
    """The first soft guardrail a budget change breaks, or None. `force` skips these (the caller decides)."""
    cur, target, ccy = facts.current, facts.target, facts.currency
    if target <= 0:
        return Refusal("budget_step", f"target budget {target} is not positive")
    if command.expected_current_minor is not None and command.expected_current_minor != cur:
        return Refusal(
            "stale_decision",
            f"budget is {format_money(cur, ccy)} at Meta, the command expected "
            f"{format_money(command.expected_current_minor, ccy)}",
        )
    step = abs(target - cur) / cur * 100
    if step > limits.max_step_pct + 1e-9:
        return Refusal(
            "budget_step",
            f"change {format_money(cur, ccy)} -> {format_money(target, ccy)} is {step:.1f}%, above the "
            f"{limits.max_step_pct:g}% per change that keeps the learning phase",
        )
    if facts.meta_blocked_until is not None:
        return Refusal(
            "budget_changes_per_hour",
            f"Meta refused a budget change on this {LEVEL_NAMES.get(command.level, command.level)} (613/1487632: "
            "too many budget changes in an hour, edits in Ads Manager included) and blocks budget changes until "
            f"{facts.meta_blocked_until.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        )
    if command.level == "adset" and facts.changes_last_hour >= limits.max_changes_per_hour:
        return Refusal(
            "budget_changes_per_hour",
            f"{facts.changes_last_hour} budget changes on this ad set in the last hour "
            f"(at most {limits.max_changes_per_hour}; Meta blocks more for an hour)",
        )
    if target < cur and facts.spent is not None:
        floor = spend_floor(facts.spent)
        if target < floor:
            return Refusal(
                "spend_floor",
                f"{format_money(target, ccy)} is below 110% of the {format_money(facts.spent, ccy)} already "
                f"spent ({format_money(floor, ccy)})",
            )
    return None


def hard_budget_refusal(
    command: SetBudgetCommand | ChangeBudgetCommand, facts: BudgetFacts, limits: BudgetGuardrailSettings
) -> Refusal | None:
    """The first hard limit a budget increase breaks, or None. No flag passes these; lowering always may.

    * hard_max_budget: a daily budget above `max_multiple_of_first_seen` times the one leadwire first saw;
    * daily_ceiling: the account's active daily budgets above its ceiling (`account_ceiling`);
    * budget_increases_per_week: more than `max_increases_per_week` increases on the object in 7 days.
    """
    cur, target, ccy = facts.current, facts.target, facts.currency
    if target <= cur:
        return None
    this = f"this {LEVEL_NAMES.get(command.level, command.level)}"
    daily = command.budget == "daily"
    if daily and facts.first_seen is not None:
        limit = max_daily_budget(facts.first_seen, limits)
        if target > limit:
            return Refusal(
                "hard_max_budget",
                f"{format_money(target, ccy)} is above {this}'s limit of {format_money(limit, ccy)} "
                f"({limits.max_multiple_of_first_seen:g}× the {format_money(facts.first_seen, ccy)} leadwire "
                "first saw)",
            )
    if daily and facts.ceiling is not None and facts.account_daily_total is not None:
        after = facts.account_daily_total - cur + target
        if after > facts.ceiling:
            return Refusal(
                "daily_ceiling",
                f"active daily budgets in the account would reach {format_money(after, ccy)}, above the "
                f"ceiling of {format_money(facts.ceiling, ccy)}{facts.ceiling_basis}",
            )
    if facts.increases_last_week >= limits.max_increases_per_week:
        return Refusal(
            "budget_increases_per_week",
            f"{facts.increases_last_week} budget increases on {this} in the last 7 days "
            f"(at most {limits.max_increases_per_week} a week)",
        )
    return None


def max_daily_budget(first_seen: int, limits: BudgetGuardrailSettings) -> int:
    """The largest daily budget an object may get: the multiple of its first-seen budget, rounded down."""
    return budget_guardrails.max_daily_budget(first_seen, limits.max_multiple_of_first_seen)


def account_ceiling(
    limits: BudgetGuardrailSettings, currency: str, first_seen_total: int, own: float | None = None
) -> tuple[int, str]:
    """The account's daily ceiling in minor units and where it comes from (a clause for the refusal's sentence):
    its own (`own`, LEADWIRE_ACCOUNTS_FILE) when set, else BUDGET_DAILY_CEILING when set, else the multiple of the
    active daily total leadwire first saw."""
    mine = daily_ceiling_minor(own, currency)
    if mine is not None:
        return mine, " (the account's daily_budget_ceiling, LEADWIRE_ACCOUNTS_FILE)"
    ceiling = daily_ceiling_minor(limits.daily_ceiling, currency)
    if ceiling is not None:
        return ceiling, " (BUDGET_DAILY_CEILING)"
    ceiling = max_daily_budget(first_seen_total, limits)
    return ceiling, (f" ({limits.max_multiple_of_first_seen:g}× the {format_money(first_seen_total, currency)} "
                     "leadwire first saw; set BUDGET_DAILY_CEILING to change it)")


def forced(outcome: CommandOutcome, reason: str) -> CommandOutcome:
    """Announce a command applied with `force` (soft guards skipped) as forced, with its reason."""
    outcome.detail = f"FORCED ({reason}): {outcome.detail}"
    outcome.forced = True
    return outcome


def unpause_ceiling_refusal(
    obj: ObjectState, account_daily_total: int, currency: str, ceiling: int, basis: str = ""
) -> Refusal | None:
    """Unpausing a campaign or ad set adds its daily budget to the account's active total: it must fit under the
    ``ceiling`` (a hard limit). Objects whose budget lives elsewhere (or on ads) are not counted here."""
    if obj.daily_budget is None or obj.effective_status == "ACTIVE":
        return None
    after = account_daily_total + obj.daily_budget
    if after > ceiling:
        return Refusal(
            "daily_ceiling",
            f"active daily budgets in the account would reach {format_money(after, currency)}, above the "
            f"ceiling of {format_money(ceiling, currency)}{basis}",
        )
    return None


def create_ceiling_refusal(
    command: CreateCampaignCommand, account_daily_total: int | None, currency: str, ceiling: int | None,
    basis: str = "",
) -> Refusal | None:
    """An ACTIVE create with a daily budget must fit under the account's daily ``ceiling`` (minor units)."""
    budget = command.campaign.budget or command.ad_set.budget
    if (
        command.status != "ACTIVE"
        or budget is None
        or budget.kind != "daily"
        or ceiling is None
        or account_daily_total is None
    ):
        return None
    after = account_daily_total + budget.amount_minor
    if after > ceiling:
        return Refusal(
            "daily_ceiling",
            f"active daily budgets in the account would reach {format_money(after, currency)}, above the "
            f"ceiling of {format_money(ceiling, currency)}{basis}",
        )
    return None


# ---------------------------------------------------------------------------------------------------------------
# create_campaign: one batch of four dependent operations (docs/meta-api.md §3, §11.4).

CREATE_STEPS = ("campaign", "adset", "creative", "ad")


def create_operations(command: CreateCampaignCommand) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, path, params) per step. Later steps refer to earlier ids with `{result=<name>:$.id}`."""
    act = command.account_id
    c, s, cr = command.campaign, command.ad_set, command.creative
    campaign: dict[str, Any] = {
        "name": c.name,
        "objective": c.objective,
        "status": command.status,
        "special_ad_categories": list(c.special_ad_categories),
        "buying_type": "AUCTION",
    }
    if c.special_ad_category_country:
        campaign["special_ad_category_country"] = list(c.special_ad_category_country)
    if c.budget is not None:
        campaign[f"{c.budget.kind}_budget"] = c.budget.amount_minor
        campaign["bid_strategy"] = c.bid_strategy or "LOWEST_COST_WITHOUT_CAP"
        if c.stop_time:
            campaign["stop_time"] = c.stop_time
    else:
        # Budgets on ad sets: Meta requires an explicit choice since v24 (docs/meta-api.md §11.4).
        campaign["is_adset_budget_sharing_enabled"] = c.is_adset_budget_sharing_enabled
    adset: dict[str, Any] = {
        "name": s.name,
        "campaign_id": "{result=campaign:$.id}",
        "status": command.status,
        "billing_event": s.billing_event,
        "optimization_goal": s.optimization_goal,
        "targeting": s.targeting,
        "promoted_object": {"page_id": s.page_id},
    }
    if s.budget is not None:
        adset[f"{s.budget.kind}_budget"] = s.budget.amount_minor
    for key, value in (("bid_strategy", s.bid_strategy), ("bid_amount", s.bid_amount_minor),
                       ("start_time", s.start_time), ("end_time", s.end_time)):
        if value is not None:
            adset[key] = value
    link_data: dict[str, Any] = {
        "message": cr.message,
        "link": cr.link,
        "call_to_action": {"type": cr.call_to_action, "value": {"lead_gen_form_id": cr.lead_form_id}},
    }
    if cr.headline:
        link_data["name"] = cr.headline
    if cr.image_hash:
        link_data["image_hash"] = cr.image_hash
    else:
        link_data["picture"] = cr.image_url
    creative = {"name": cr.name, "object_story_spec": {"page_id": cr.page_id, "link_data": link_data}}
    ad = {
        "name": command.ad.name,
        "adset_id": "{result=adset:$.id}",
        "creative": {"creative_id": "{result=creative:$.id}"},
        "status": command.status,
    }
    return [
        ("campaign", f"{act}/campaigns", campaign),
        ("adset", f"{act}/adsets", adset),
        ("creative", f"{act}/adcreatives", creative),
        ("ad", f"{act}/ads", ad),
    ]
