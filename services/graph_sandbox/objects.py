"""Ad accounts, campaigns, ad sets, ads, creatives and images (BUC `ads_management`): reads, lists, edits and
deletes. Creating them is `creates.py`; how they are shown and filtered is `views.py`."""

from __future__ import annotations

from typing import Any

from . import delivery
from .core import GraphRequest, Sandbox, json_param, list_param, paginate
from .creates import BID_STRATEGIES, OPTIMIZATION_GOALS, STATUSES, _check_min_daily, _enum, _money, _time_param
from .errors import GraphError, invalid_param, unsupported_get
from .state import Node
from .views import (  # noqa: F401  (re-exported: other modules read objects through here)
    DEFAULT_FIELDS,
    NODE_TYPE,
    effective_status,
    filter_nodes,
    full_view,
    matches,
    parse_filtering,
    render,
)

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
