"""Creating campaigns, ad sets, ads, creatives and images (BUC `ads_management`), as strict as Meta."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from . import delivery, review, schema
from .core import GraphRequest, Sandbox, bool_param, json_param
from .errors import GraphError, invalid_param, missing_param
from .state import Node
from .views import NODE_TYPE

ODAX_OBJECTIVES = (
    "OUTCOME_APP_PROMOTION",
    "OUTCOME_AWARENESS",
    "OUTCOME_ENGAGEMENT",
    "OUTCOME_LEADS",
    "OUTCOME_SALES",
    "OUTCOME_TRAFFIC",
)
# Enum values from Meta's SDK (schema.py), not from memory.
_CAMPAIGN, _ADSET = schema.node_type("Campaign"), schema.node_type("AdSet")
SPECIAL_AD_CATEGORIES = tuple(sorted(_CAMPAIGN.enums["SpecialAdCategories"]))
BID_STRATEGIES = tuple(sorted(_ADSET.enums["BidStrategy"]))
BILLING_EVENTS = tuple(sorted(_ADSET.enums["BillingEvent"]))
OPTIMIZATION_GOALS = tuple(sorted(_ADSET.enums["OptimizationGoal"]))
STATUSES = tuple(sorted(_ADSET.enums["Status"]))
CREATE_STATUSES = ("ACTIVE", "PAUSED")  # only these on create (docs/meta-api.md §11.2)

# ---------------------------------------------------------------------- validation helpers


def _money(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    text = str(value)
    if isinstance(value, bool) or not text.lstrip("-").isdigit():
        raise invalid_param(
            f"Param {name} must be an integer in the account currency's minor unit",
            blame=[name],
            user_title="Invalid budget",
            user_msg="Budgets are integers in the smallest currency unit (cents for USD, yen for JPY).",
        )
    amount = int(text)
    if amount <= 0:
        raise invalid_param(f"Param {name} must be positive", blame=[name])
    return amount


def _check_min_daily(sb: Sandbox, account: str | None, daily: int | None) -> None:
    """Meta refuses daily budgets below the account's `min_daily_budget` (per currency)."""
    node = sb.state.get(account or "")
    minimum = int(node.fields.get("min_daily_budget") or 0) if node else 0
    if daily is not None and daily < minimum:
        currency = node.fields["currency"] if node else ""
        raise GraphError(
            "(#100) Invalid parameter",
            code=100,
            subcode=1885272,
            user_title="Your Budget Is Too Low",
            user_msg=f"The minimum daily budget for this ad account is {minimum} ({currency} minor units).",
            error_data={"blame_field_specs": [["daily_budget"]]},
        )


def _enum(params: dict[str, Any], name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    value = params.get(name, default)
    if value is None or value == "":
        return default
    if str(value) not in allowed:
        raise invalid_param(f"Param {name} must be one of {{{', '.join(allowed)}}}", blame=[name])
    return str(value)


def _required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise missing_param(name)
    return value


def _same_account(sb: Sandbox, obj_id: str, kind: str, account: str, name: str) -> Node:
    node = sb.state.get(str(obj_id))
    if node is None or node.kind != kind or node.account != account:
        raise invalid_param(
            f"Param {name} does not refer to a valid {NODE_TYPE[kind]} in this ad account", blame=[name]
        )
    if node.fields.get("status") == "DELETED":
        raise invalid_param(f"The {NODE_TYPE[kind]} {obj_id} is deleted", blame=[name])
    return node


# ---------------------------------------------------------------------- creates


async def create_campaign(sb: Sandbox, req: GraphRequest, account: Node | None) -> dict[str, Any]:
    assert account is not None
    p = req.params
    name = _required(p, "name")
    objective = _required(p, "objective")
    if objective not in ODAX_OBJECTIVES:
        # Only ODAX objectives for new campaigns since v17 (docs/meta-api.md §11.4).
        raise invalid_param(
            f"Param objective must be one of {{{', '.join(ODAX_OBJECTIVES)}}}",
            blame=["objective"],
            user_title="Objective is invalid",
            user_msg=f"The objective {objective} is no longer supported; use an outcome-based (ODAX) objective.",
        )
    status = _enum(p, "status", CREATE_STATUSES, "ACTIVE")
    if p.get("special_ad_categories") in (None, ""):
        raise GraphError(
            "(#100) The parameter special_ad_categories is required",
            code=100,
            user_title="Special ad categories required",
            user_msg='Declare special_ad_categories (use [] or ["NONE"] if none apply).',
            error_data={"blame_field_specs": [["special_ad_categories"]]},
        )
    categories = json_param(p, "special_ad_categories")
    if not isinstance(categories, list) or any(c not in SPECIAL_AD_CATEGORIES for c in categories):
        raise invalid_param(
            f"Param special_ad_categories[0] must be one of {{{', '.join(SPECIAL_AD_CATEGORIES)}}}",
            blame=["special_ad_categories"],
        )
    real = [c for c in categories if c != "NONE"]
    countries = json_param(p, "special_ad_category_country")
    if real and not countries:
        raise missing_param("special_ad_category_country")
    daily, lifetime = _money(p, "daily_budget"), _money(p, "lifetime_budget")
    if daily and lifetime:
        raise invalid_param("Only one of daily_budget and lifetime_budget may be set", blame=["daily_budget"])
    _check_min_daily(sb, account.id, daily)
    if lifetime and not p.get("stop_time"):
        raise missing_param("stop_time")
    sharing = bool_param(p, "is_adset_budget_sharing_enabled")
    if not daily and not lifetime and sharing is None:
        # v24+: budgets on ad sets require an explicit choice (docs/meta-api.md §11.4, S58).
        raise GraphError(
            "(#100) Invalid parameter",
            code=100,
            subcode=4834011,
            user_title="Budget sharing setting required",
            user_msg="Must specify True or False in is_adset_budget_sharing_enabled field if you are not using "
            "campaign budget.",
            error_data={"blame_field_specs": [["is_adset_budget_sharing_enabled"]]},
        )
    bid_strategy = _enum(p, "bid_strategy", BID_STRATEGIES)
    now = sb.state.now()
    node = sb.state.add(
        Node(
            sb.state.new_id(),
            "campaign",
            {
                "name": str(name),
                "objective": objective,
                "status": status,
                "special_ad_categories": categories,
                "special_ad_category_country": countries,
                "daily_budget": daily,
                "lifetime_budget": lifetime,
                "bid_strategy": bid_strategy or ("LOWEST_COST_WITHOUT_CAP" if daily or lifetime else None),
                "is_adset_budget_sharing_enabled": sharing,
                "buying_type": p.get("buying_type", "AUCTION"),
                "created_time": now,
                "updated_time": now,
                "start_time": now,
                "stop_time": _time_param(p, "stop_time"),
            },
            account=account.id,
        )
    )
    return {"id": node.id}


def _time_param(p: dict[str, Any], name: str) -> float | str | None:
    value = p.get(name)
    if value in (None, ""):
        return None
    text = str(value)
    return float(text) if text.isdigit() else text


async def create_adset(sb: Sandbox, req: GraphRequest, account: Node | None) -> dict[str, Any]:
    assert account is not None
    p = req.params
    name = _required(p, "name")
    campaign = _same_account(sb, _required(p, "campaign_id"), "campaign", account.id, "campaign_id")
    if campaign.fields["objective"] not in ODAX_OBJECTIVES:
        raise invalid_param("New ad sets can't be created in legacy-objective campaigns", blame=["campaign_id"])
    status = _enum(p, "status", CREATE_STATUSES, "ACTIVE")
    billing = _enum(p, "billing_event", BILLING_EVENTS) or _required(p, "billing_event")
    goal = _enum(p, "optimization_goal", OPTIMIZATION_GOALS) or _required(p, "optimization_goal")
    targeting = json_param(p, "targeting")
    if not isinstance(targeting, dict):
        raise missing_param("targeting")
    if "geo_locations" not in targeting:
        raise invalid_param(
            "Targeting spec must include geo_locations",
            blame=["targeting"],
            user_title="Location required",
            user_msg="Choose at least one location.",
        )
    promoted = json_param(p, "promoted_object")
    if goal in ("LEAD_GENERATION", "QUALITY_LEAD") and not (isinstance(promoted, dict) and promoted.get("page_id")):
        raise invalid_param(
            "promoted_object.page_id is required for lead generation ad sets", blame=["promoted_object"]
        )
    daily, lifetime = _money(p, "daily_budget"), _money(p, "lifetime_budget")
    cbo = campaign.fields.get("daily_budget") or campaign.fields.get("lifetime_budget")
    if cbo and (daily or lifetime):
        raise invalid_param(
            "Ad set budgets can't be set when the campaign uses a campaign budget", blame=["daily_budget"]
        )
    if not cbo and not (daily or lifetime):
        raise invalid_param(
            "Either daily_budget or lifetime_budget must be set",
            blame=["daily_budget"],
            user_title="Budget required",
            user_msg="Set a daily or lifetime budget.",
        )
    if daily and lifetime:
        raise invalid_param("Only one of daily_budget and lifetime_budget may be set", blame=["daily_budget"])
    _check_min_daily(sb, account.id, daily)
    if lifetime and not p.get("end_time"):
        raise missing_param("end_time")
    bid_strategy = _enum(p, "bid_strategy", BID_STRATEGIES)
    bid_amount = _money(p, "bid_amount")
    if bid_strategy in ("LOWEST_COST_WITH_BID_CAP", "COST_CAP") and not bid_amount:
        raise missing_param("bid_amount")
    now = sb.state.now()
    node = sb.state.add(
        Node(
            sb.state.new_id(),
            "adset",
            {
                "name": str(name),
                "status": status,
                "campaign_id": campaign.id,
                "billing_event": billing,
                "optimization_goal": goal,
                "targeting": targeting,
                "promoted_object": promoted,
                "daily_budget": daily,
                "lifetime_budget": lifetime,
                "bid_amount": bid_amount,
                "bid_strategy": bid_strategy
                or ("LOWEST_COST_WITH_BID_CAP" if bid_amount else "LOWEST_COST_WITHOUT_CAP"),
                "created_time": now,
                "updated_time": now,
                "start_time": _time_param(p, "start_time") or now,
                "end_time": _time_param(p, "end_time"),
            },
            account=account.id,
            extra={"budget_changes": []},
        )
    )
    return {"id": node.id}


async def create_ad(sb: Sandbox, req: GraphRequest, account: Node | None) -> dict[str, Any]:
    assert account is not None
    p = req.params
    name = _required(p, "name")
    adset = _same_account(sb, _required(p, "adset_id"), "adset", account.id, "adset_id")
    status = _enum(p, "status", CREATE_STATUSES, "ACTIVE")
    creative_spec = json_param(p, "creative")
    if not isinstance(creative_spec, dict) or not creative_spec.get("creative_id"):
        raise missing_param("creative")
    creative = _same_account(sb, str(creative_spec["creative_id"]), "adcreative", account.id, "creative")
    if len(sb.state.of_kind("ad", adset_id=adset.id)) >= 50:
        raise invalid_param("An ad set can have at most 50 ads", subcode=1487079, blame=["adset_id"])
    cta = creative.fields.get("object_story_spec", {}).get("link_data", {}).get("call_to_action", {})
    form_id = (cta.get("value") or {}).get("lead_gen_form_id")
    now = sb.state.now()
    node = sb.state.add(
        Node(
            sb.state.new_id(),
            "ad",
            {
                "name": str(name),
                "status": status,
                "adset_id": adset.id,
                "campaign_id": adset.fields["campaign_id"],
                "creative": {"id": creative.id},
                "created_time": now,
                "updated_time": now,
            },
            account=account.id,
            extra={"form_id": str(form_id) if form_id else None},
        )
    )
    delivery.created(sb, node, adset)
    review.submitted(sb, node)  # new ads go through review (docs/meta-api.md §11.2)
    return {"id": node.id}


async def create_creative(sb: Sandbox, req: GraphRequest, account: Node | None) -> dict[str, Any]:
    assert account is not None
    p = req.params
    spec = json_param(p, "object_story_spec")
    if spec is None and not p.get("object_story_id") and not p.get("asset_feed_spec"):
        raise missing_param("object_story_spec")
    if spec is not None and (not isinstance(spec, dict) or not spec.get("page_id")):
        raise invalid_param("object_story_spec.page_id is required", blame=["object_story_spec"])
    node = sb.state.add(
        Node(
            sb.state.new_id(),
            "adcreative",
            {
                "name": str(p.get("name") or "Untitled creative"),
                "object_story_spec": spec,
                "object_story_id": p.get("object_story_id"),
                "asset_feed_spec": json_param(p, "asset_feed_spec"),
                "status": "ACTIVE",
            },
            account=account.id,
        )
    )
    return {"id": node.id}


async def create_image(sb: Sandbox, req: GraphRequest, account: Node | None) -> dict[str, Any]:
    assert account is not None
    p = req.params
    images: dict[str, Any] = {}
    uploads: list[tuple[str, bytes]] = []
    if p.get("bytes"):
        try:
            uploads.append(("bytes", base64.b64decode(str(p["bytes"]), validate=True)))
        except ValueError as exc:
            raise invalid_param("Param bytes must be base64", blame=["bytes"]) from exc
    uploads.extend((name, data) for name, data in p.get("__files__", []))
    if not uploads:
        raise missing_param("bytes")
    for name, data in uploads:
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        node_id = f"{account.id.removeprefix('act_')}:{digest}"
        url = f"https://scontent.sandbox.invalid/v/{digest}.jpg"
        sb.state.add(
            Node(
                node_id,
                "adimage",
                {"hash": digest, "name": name, "url": url, "created_time": sb.state.now(), "status": "ACTIVE"},
                account=account.id,
            )
        )
        images[name] = {"hash": digest, "url": url}
    return {"images": images}
