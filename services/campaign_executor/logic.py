"""Decisions of the campaign executor as plain functions: targets, guardrails, Graph parameters.

Everything here takes what Meta and the audit log said as arguments, so it is tested without a broker, a
database or the sandbox. `executor.py` does the I/O around it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contracts.commands import (
    ChangeBudgetCommand,
    CreateCampaignCommand,
    SetBudgetCommand,
)
from shared.money import apply_percent, format_money, parse_minor

STATUS_OF_KIND = {"pause": "PAUSED", "unpause": "ACTIVE", "archive": "ARCHIVED", "delete": "DELETED"}
BUDGET_KINDS = frozenset({"set_budget", "change_budget"})
# Lowering a budget: the new value must be >= 110 % of what was already spent (meta-api-facts §11.1).
SPEND_FLOOR_FACTOR = 1.10


@dataclass(frozen=True)
class Guardrails:
    max_budget_step_pct: float = 20.0
    max_budget_changes_per_hour: int = 4
    daily_budget_ceiling_minor: int | None = None


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


def object_status_refusal(kind: str, obj: ObjectState) -> Refusal | None:
    """Deleted objects cannot change; archived ones can only be deleted (meta-api-facts §11.2)."""
    if obj.status == "DELETED":
        return Refusal("object_status", f"object {obj.object_id} is DELETED")
    if obj.status == "ARCHIVED" and kind != "delete":
        return Refusal("object_status", f"object {obj.object_id} is ARCHIVED (only deleting is possible)")
    return None


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
    changes_last_hour: int
    spent: int | None = None  # minor units spent in the budget's period (today / lifetime); None = unknown
    account_daily_total: int | None = None  # active daily budgets in the account, before this change


def budget_refusal(
    command: SetBudgetCommand | ChangeBudgetCommand, facts: BudgetFacts, guards: Guardrails
) -> Refusal | None:
    """The first guardrail a budget change breaks, or None. `force` is handled by the caller."""
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
    if step > guards.max_budget_step_pct + 1e-9:
        return Refusal(
            "budget_step",
            f"change {format_money(cur, ccy)} -> {format_money(target, ccy)} is {step:.1f}%, above the "
            f"{guards.max_budget_step_pct:g}% per change that keeps the learning phase",
        )
    if command.level == "adset" and facts.changes_last_hour >= guards.max_budget_changes_per_hour:
        return Refusal(
            "budget_changes_per_hour",
            f"{facts.changes_last_hour} budget changes on this ad set in the last hour "
            f"(at most {guards.max_budget_changes_per_hour}; Meta blocks more for an hour)",
        )
    if target < cur and facts.spent is not None:
        floor = math.ceil(facts.spent * SPEND_FLOOR_FACTOR)
        if target < floor:
            return Refusal(
                "spend_floor",
                f"{format_money(target, ccy)} is below 110% of the {format_money(facts.spent, ccy)} already "
                f"spent ({format_money(floor, ccy)})",
            )
    if (
        command.budget == "daily"
        and target > cur
        and guards.daily_budget_ceiling_minor is not None
        and facts.account_daily_total is not None
    ):
        after = facts.account_daily_total - cur + target
        if after > guards.daily_budget_ceiling_minor:
            return Refusal(
                "daily_ceiling",
                f"active daily budgets in the account would reach {format_money(after, ccy)}, above the "
                f"ceiling of {format_money(guards.daily_budget_ceiling_minor, ccy)}",
            )
    return None


def create_ceiling_refusal(
    command: CreateCampaignCommand, account_daily_total: int | None, currency: str, guards: Guardrails
) -> Refusal | None:
    """An ACTIVE create with a daily budget must fit under the account's daily ceiling."""
    budget = command.campaign.budget or command.ad_set.budget
    if (
        command.status != "ACTIVE"
        or budget is None
        or budget.kind != "daily"
        or guards.daily_budget_ceiling_minor is None
        or account_daily_total is None
    ):
        return None
    after = account_daily_total + budget.amount_minor
    if after > guards.daily_budget_ceiling_minor:
        return Refusal(
            "daily_ceiling",
            f"active daily budgets in the account would reach {format_money(after, currency)}, above the "
            f"ceiling of {format_money(guards.daily_budget_ceiling_minor, currency)}",
        )
    return None


# ---------------------------------------------------------------------------------------------------------------
# create_campaign: one batch of four dependent operations (meta-api-facts §3, §11.4).

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
        # Budgets on ad sets: Meta requires an explicit choice since v24 (meta-api-facts §11.4).
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
