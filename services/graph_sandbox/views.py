"""How the sandbox shows Graph objects: Meta's wire format (`full_view`, `render`), effective statuses, and the
`filtering` / `effective_status` filters of edge lists."""

from __future__ import annotations

from typing import Any

from . import review, schema
from .core import GraphRequest, Sandbox, json_param
from .errors import invalid_param
from .state import Node, iso_time

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
    reviewed = review.state_of(sb, node)
    if reviewed:  # an ad in review, refused or with issues shows that first, even while paused (review.py)
        return reviewed
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
        out.update(review.view_fields(sb, node))
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
