"""Ad accounts, campaigns, ad sets, ads, creatives and images (BUC `ads_management`)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from . import delivery, schema
from .core import GraphRequest, Sandbox, bool_param, json_param, list_param, paginate
from .errors import GraphError, invalid_param, missing_param, unsupported_get
from .state import Node, iso_time

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

NODE_TYPE = schema.SDK_CLASS  # node kind -> Meta's node type name, as in its errors
DEFAULT_FIELDS: dict[str, list[str]] = {
    "adaccount": ["account_id", "id"],
    "page": ["name", "id"],
    "leadgen_form": ["id", "locale", "name", "status"],
    "lead": ["created_time", "id", "field_data"],
    "pixel": ["id", "name"],
    "customaudience": ["id"],
}


# ---------------------------------------------------------------------- rendering


def effective_status(sb: Sandbox, node: Node) -> str:
    status = node.fields.get("status", "ACTIVE")
    if status != "ACTIVE" or node.kind not in ("adset", "ad"):
        return status
    campaign = sb.state.get(node.fields.get("campaign_id", ""))
    if campaign is not None and campaign.fields["status"] != "ACTIVE":
        cs = campaign.fields["status"]
        return "CAMPAIGN_PAUSED" if cs == "PAUSED" else cs
    if node.kind == "ad":
        adset = sb.state.get(node.fields.get("adset_id", ""))
        if adset is not None and adset.fields["status"] != "ACTIVE":
            ast = adset.fields["status"]
            return "ADSET_PAUSED" if ast == "PAUSED" else ast
    return "ACTIVE"


def full_view(sb: Sandbox, node: Node) -> dict[str, Any]:
    """Every field the sandbox knows for `node`, in Meta's wire format."""
    tz = sb.state.account_tz(node.account) if node.account else None
    out: dict[str, Any] = {}
    for key, value in node.fields.items():
        if value is None:
            continue
        if key.endswith("_time") and isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = iso_time(value, tz)
        else:
            out[key] = value
    out["id"] = node.id
    if node.kind == "adaccount":
        out["account_id"] = node.id.removeprefix("act_")
        out["timezone_offset_hours_utc"] = _tz_offset(sb, node.id)
    elif node.kind in ("campaign", "adset", "ad", "adcreative", "customaudience"):
        out["account_id"] = (node.account or "").removeprefix("act_")
    if node.kind in ("campaign", "adset", "ad"):
        out["configured_status"] = node.fields["status"]
        out["effective_status"] = effective_status(sb, node)
    if node.kind in ("campaign", "adset"):
        budget = node.fields.get("daily_budget") or node.fields.get("lifetime_budget")
        if budget:
            out["budget_remaining"] = str(budget)
    if node.kind == "customaudience":
        from .audiences import visible_count  # audiences renders through this module

        out["approximate_count_lower_bound"] = out["approximate_count_upper_bound"] = visible_count(sb, node)
    if node.kind == "adset":
        out["campaign"] = {"id": node.fields["campaign_id"]}
    if node.kind == "ad":
        out["adset"] = {"id": node.fields["adset_id"]}
        out["campaign"] = {"id": node.fields["campaign_id"]}
    # Types as the SDK declares them: money as numeric strings, bid_amount and counts as numbers, ...
    return schema.serialise(node.kind, out)


def _tz_offset(sb: Sandbox, account: str) -> float:

    offset = sb.state.local_now(account).utcoffset()
    return offset.total_seconds() / 3600 if offset else 0.0


def render(sb: Sandbox, node: Node, fields: list[str] | None) -> dict[str, Any]:
    """Only the requested fields plus `id`. A field the node type does not have is Meta's #100; a declared
    field without a value is left out, as Meta leaves out empty fields."""
    wanted = [schema.base_field(f) for f in fields] if fields else DEFAULT_FIELDS.get(node.kind, ["id"])
    if fields:
        schema.check_fields(node.kind, wanted)
    view = full_view(sb, node)
    out = {f: view[f] for f in wanted if f in view}
    out["id"] = view["id"]
    return out


# ---------------------------------------------------------------------- filtering


def _filter_value(sb: Sandbox, node: Node, field: str) -> Any:
    field = field.removeprefix(f"{node.kind}.")
    if field in ("campaign.id", "adset.id"):
        parent = field.split(".")[0]
        return node.id if node.kind == parent else node.fields.get(f"{parent}_id")
    if field == "ad.id":
        return node.id
    if field == "effective_status":
        return effective_status(sb, node)
    if field in ("configured_status",):
        return node.fields.get("status")
    if field == "id":
        return node.id
    return full_view(sb, node).get(field)


def matches(actual: Any, operator: str, value: Any) -> bool:
    op = operator.upper()
    if op in ("IN", "NOT_IN", "ANY", "NONE", "ALL"):
        values = value if isinstance(value, list) else [value]
        values = [str(v) for v in values]
        hit = str(actual) in values
        return hit if op in ("IN", "ANY", "ALL") else not hit
    if op in ("EQUAL", "NOT_EQUAL"):
        hit = str(actual) == str(value)
        return hit if op == "EQUAL" else not hit
    if op in ("CONTAIN", "NOT_CONTAIN"):
        hit = str(value).lower() in str(actual or "").lower()
        return hit if op == "CONTAIN" else not hit
    try:
        a, v = float(actual), float(value)
    except (TypeError, ValueError):
        return False
    return {
        "GREATER_THAN": a > v,
        "LESS_THAN": a < v,
        "GREATER_THAN_OR_EQUAL": a >= v,
        "LESS_THAN_OR_EQUAL": a <= v,
    }.get(op, False)


def parse_filtering(req: GraphRequest) -> list[dict[str, Any]]:
    filters = json_param(req.params, "filtering", [])
    if not isinstance(filters, list) or not all(
        isinstance(f, dict) and {"field", "operator"} <= f.keys() for f in filters
    ):
        raise invalid_param("Param filtering must be an array of {field, operator, value}", blame=["filtering"])
    return filters


def filter_nodes(sb: Sandbox, req: GraphRequest, nodes: list[Node]) -> list[Node]:
    filters = parse_filtering(req)
    statuses = json_param(req.params, "effective_status")
    if isinstance(statuses, str):
        statuses = [statuses]
    mentions_status = statuses is not None or any(f["field"].endswith("effective_status") for f in filters)
    out = []
    for node in nodes:
        eff = effective_status(sb, node)
        if statuses is not None and eff not in statuses:
            continue
        if not mentions_status and eff in ("DELETED", "ARCHIVED"):
            continue
        if all(matches(_filter_value(sb, node, f["field"]), f["operator"], f.get("value")) for f in filters):
            out.append(node)
    out.sort(key=lambda n: int(n.id.split(":")[-1], 16) if n.kind == "adimage" else int(n.id), reverse=True)
    return out


# ---------------------------------------------------------------------- reads and lists


async def get_node(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    assert node is not None
    return render(sb, node, list_param(req.params, "fields"))


def _list(sb: Sandbox, req: GraphRequest, nodes: list[Node]) -> dict[str, Any]:
    fields = list_param(req.params, "fields")
    return paginate(sb, req, [render(sb, n, fields) for n in filter_nodes(sb, req, nodes)])


def edge_lister(kind: str, parent_key: str):
    """GET /<parent>/<edge> for campaigns, adsets, ads, adcreatives, adimages."""

    async def handler(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
        assert node is not None
        if parent_key == "account":
            nodes = sb.state.of_kind(kind, account=node.id)
        else:
            nodes = sb.state.of_kind(kind, **{parent_key: node.id})
        return _list(sb, req, nodes)

    return handler


async def me_adaccounts(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    fields = list_param(req.params, "fields") or ["account_id", "id"]
    accounts = sorted(sb.state.of_kind("adaccount"), key=lambda n: n.id)
    return paginate(sb, req, [render(sb, n, fields) for n in accounts])


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


# ---------------------------------------------------------------------- updates and deletes

UPDATABLE = {
    "campaign": {
        "name",
        "status",
        "daily_budget",
        "lifetime_budget",
        "bid_strategy",
        "stop_time",
        "special_ad_categories",
    },
    "adset": {
        "name",
        "status",
        "daily_budget",
        "lifetime_budget",
        "bid_amount",
        "bid_strategy",
        "targeting",
        "end_time",
        "optimization_goal",
    },
    "ad": {"name", "status", "creative"},
    "adcreative": {"name"},
}
_IGNORED = {"access_token", "appsecret_proof", "fields", "method", "__files__", "appsecret_time", "execution_options"}


async def update_object(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    assert node is not None
    apply_update(sb, node, {k: v for k, v in req.params.items() if k not in _IGNORED})
    return {"success": True}


def apply_update(sb: Sandbox, node: Node, p: dict[str, Any]) -> None:
    """An edit through the API or (control API) through Ads Manager: same rules, same budget-change count."""
    allowed = UPDATABLE.get(node.kind, set())
    unknown = sorted(set(p) - allowed)
    if unknown:
        raise invalid_param(
            f"Param {unknown[0]} is not supported on {NODE_TYPE[node.kind]} updates", blame=[unknown[0]]
        )
    current = node.fields.get("status")
    if current == "DELETED":
        raise GraphError(
            f"(#100) {NODE_TYPE[node.kind]} {node.id} is deleted and can't be edited",
            code=100,
            subcode=1487056,
            user_title="Object deleted",
            user_msg="Deleted objects can't be changed.",
        )
    if current == "ARCHIVED" and not (
        set(p) <= {"name"} or (set(p) <= {"name", "status"} and p.get("status") == "DELETED")
    ):
        raise GraphError(
            f"(#100) Archived {NODE_TYPE[node.kind]} can only be renamed or deleted",
            code=100,
            subcode=1487056,
        )
    changes: dict[str, Any] = {}
    if "name" in p:
        changes["name"] = str(p["name"])
    if "status" in p:
        changes["status"] = _enum(p, "status", STATUSES)
    for key in ("daily_budget", "lifetime_budget", "bid_amount"):
        if key in p:
            changes[key] = _money(p, key)
    if "bid_strategy" in p:
        changes["bid_strategy"] = _enum(p, "bid_strategy", BID_STRATEGIES)
    for key in ("targeting", "special_ad_categories", "creative"):
        if key in p:
            changes[key] = json_param(p, key)
    for key in ("stop_time", "end_time"):
        if key in p:
            changes[key] = _time_param(p, key)
    if "optimization_goal" in p:
        changes["optimization_goal"] = _enum(p, "optimization_goal", OPTIMIZATION_GOALS)
    budget_keys = [k for k in ("daily_budget", "lifetime_budget") if k in changes]
    if budget_keys:
        _check_budget_change(sb, node, budget_keys, changes)
    delivery.record(sb, node, changes)
    node.fields.update(changes)
    node.fields["updated_time"] = sb.state.now()


def _check_budget_change(sb: Sandbox, node: Node, keys: list[str], changes: dict[str, Any]) -> None:
    other = "lifetime_budget" if keys[0] == "daily_budget" else "daily_budget"
    if not node.fields.get(keys[0]) and node.fields.get(other):
        raise invalid_param(f"Can't switch from {other} to {keys[0]}", blame=[keys[0]])
    if node.kind == "adset":
        campaign = sb.state.get(node.fields["campaign_id"])
        if campaign and (campaign.fields.get("daily_budget") or campaign.fields.get("lifetime_budget")):
            raise invalid_param("Ad set budgets can't be set when the campaign uses a campaign budget", blame=[keys[0]])
    if node.kind == "campaign" and not (node.fields.get("daily_budget") or node.fields.get("lifetime_budget")):
        raise invalid_param("This campaign has no campaign budget; change budgets on its ad sets", blame=[keys[0]])
    if "daily_budget" in changes:
        _check_min_daily(sb, node.account, changes["daily_budget"])
    if all(changes[k] == node.fields.get(k) for k in keys) or node.kind != "adset":
        return
    # The sandbox's clock, so a test moving it an hour ahead (`POST /_sandbox/clock`) sees the block lifted.
    now = sb.clock.time()
    window = sb.limits.budget_change_window_seconds
    history: list[float] = [t for t in node.extra.setdefault("budget_changes", []) if now - window < t <= now]
    blocked_until = float(node.extra.get("budget_blocked_until") or 0.0)
    if len(history) >= sb.limits.budget_changes_per_hour or now < blocked_until:
        # Ad set budgets can change at most 4x/hour; the 5th is refused and blocks budget changes for an hour
        # (docs/meta-api.md §2.3), edits in Ads Manager included. Refusals during the block do not extend it.
        if now >= blocked_until:
            node.extra["budget_blocked_until"] = now + window
        raise GraphError(
            "(#613) Calls to this api have exceeded the rate limit.",
            code=613,
            subcode=1487632,
            is_transient=False,
            user_title="Too many budget changes",
            user_msg="You can only change an ad set's budget 4 times per hour. Please try again later.",
        )
    history.append(now)
    node.extra["budget_changes"] = history


async def delete_object(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    assert node is not None
    if node.kind in ("lead", "adimage", "customaudience"):
        sb.state.nodes.pop(node.id, None)
    else:
        delivery.record(sb, node, {"status": "DELETED"})
        node.fields["status"] = "DELETED"
        node.fields["updated_time"] = sb.state.now()
    return {"success": True}


async def not_found(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    raise unsupported_get(req.path.split("/")[0], req.method.lower())
