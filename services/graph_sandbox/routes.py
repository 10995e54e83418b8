"""Map a Graph path + method to a handler and the rate-limit scopes it counts against."""

from __future__ import annotations

from typing import Any

from . import audiences, capi, creates, forms, insights, leads, objects
from .core import GraphRequest, Handler, Route, Sandbox
from .errors import unknown_path, unsupported_get
from .permissions import ADS_READ, need_for
from .schema import nonexisting_field
from .state import PAGE_ID, Node

_O = objects
_C = creates
# (node kind, edge or None, method) -> (handler, family). Family picks the BUC type (or "app"/"capi").
ROUTES: dict[tuple[str, str | None, str], tuple[Handler, str]] = {
    ("adaccount", None, "GET"): (_O.get_node, "ads_management"),
    ("adaccount", "campaigns", "GET"): (_O.edge_lister("campaign", "account"), "ads_management"),
    ("adaccount", "adsets", "GET"): (_O.edge_lister("adset", "account"), "ads_management"),
    ("adaccount", "ads", "GET"): (_O.edge_lister("ad", "account"), "ads_management"),
    ("adaccount", "adcreatives", "GET"): (_O.edge_lister("adcreative", "account"), "ads_management"),
    ("adaccount", "adimages", "GET"): (_O.edge_lister("adimage", "account"), "ads_management"),
    ("adaccount", "campaigns", "POST"): (_C.create_campaign, "ads_management"),
    ("adaccount", "adsets", "POST"): (_C.create_adset, "ads_management"),
    ("adaccount", "ads", "POST"): (_C.create_ad, "ads_management"),
    ("adaccount", "adcreatives", "POST"): (_C.create_creative, "ads_management"),
    ("adaccount", "adimages", "POST"): (_C.create_image, "ads_management"),
    ("adaccount", "insights", "GET"): (insights.get_insights, "ads_insights"),
    ("adaccount", "insights", "POST"): (insights.start_report, "ads_insights"),
    ("adaccount", "customaudiences", "GET"): (audiences.list_audiences, "custom_audience"),
    ("adaccount", "customaudiences", "POST"): (audiences.create_audience, "custom_audience"),
    ("campaign", "adsets", "GET"): (_O.edge_lister("adset", "campaign_id"), "ads_management"),
    ("campaign", "ads", "GET"): (_O.edge_lister("ad", "campaign_id"), "ads_management"),
    ("adset", "ads", "GET"): (_O.edge_lister("ad", "adset_id"), "ads_management"),
    ("ad", "leads", "GET"): (leads.ad_leads, "leadgen"),
    ("page", None, "GET"): (_O.get_node, "pages"),
    ("page", "leadgen_forms", "GET"): (leads.page_forms, "pages"),
    ("page", "leadgen_forms", "POST"): (forms.create_form, "pages"),
    ("page", "subscribed_apps", "GET"): (leads.get_subscribed_apps, "pages"),
    ("page", "subscribed_apps", "POST"): (leads.subscribe_app, "pages"),
    ("page", "subscribed_apps", "DELETE"): (leads.unsubscribe_app, "pages"),
    ("leadgen_form", None, "GET"): (_O.get_node, "leadgen"),
    ("leadgen_form", "leads", "GET"): (leads.form_leads, "leadgen"),
    ("lead", None, "GET"): (leads.get_lead, "leadgen"),
    ("lead", None, "DELETE"): (_O.delete_object, "leadgen"),
    ("pixel", None, "GET"): (_O.get_node, "capi"),
    ("pixel", "events", "POST"): (capi.post_events, "capi"),
    ("customaudience", None, "GET"): (_O.get_node, "custom_audience"),
    ("customaudience", None, "DELETE"): (_O.delete_object, "custom_audience"),
    ("customaudience", "users", "POST"): (audiences.add_users, "custom_audience"),
    ("customaudience", "users", "DELETE"): (audiences.remove_users, "custom_audience"),
    ("customaudience", "usersreplace", "POST"): (audiences.replace_users, "custom_audience"),
    ("report_run", None, "GET"): (insights.get_report, "ads_insights"),
    ("report_run", "insights", "GET"): (insights.report_insights, "ads_insights"),
}
for _kind in ("campaign", "adset", "ad", "adcreative"):
    ROUTES[(_kind, None, "GET")] = (_O.get_node, "ads_management")
    ROUTES[(_kind, None, "POST")] = (_O.update_object, "ads_management")
    ROUTES[(_kind, None, "DELETE")] = (_O.delete_object, "ads_management")
for _kind in ("campaign", "adset", "ad"):
    ROUTES[(_kind, "insights", "GET")] = (insights.get_insights, "ads_insights")
    ROUTES[(_kind, "insights", "POST")] = (insights.start_report, "ads_insights")


def _scopes(sb: Sandbox, node: Node, family: str, req: GraphRequest) -> list[str]:
    if family == "app":
        return ["app"]
    if family in ("leadgen", "pages"):
        page = node.page_id
        if node.kind == "ad":
            form = sb.state.get(node.extra.get("form_id") or "")
            page = form.page_id if form else PAGE_ID
        return ["app", f"buc:{page}:{family}"]
    account = node.account
    if account is None:
        return ["app"]
    scopes = ["app", f"ad_account:{account}"]
    if family != "capi":
        scopes.append(f"buc:{account.removeprefix('act_')}:{family}")
    return scopes


async def _me(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    return {"id": sb.state.token["user_id"], "name": "Leadwire Sandbox System User"}


def resolve(sb: Sandbox, req: GraphRequest) -> Route:
    parts = [p for p in req.path.split("/") if p]
    if not parts or len(parts) > 2:
        raise unknown_path(req.path)
    node_id, edge = parts[0], (parts[1] if len(parts) == 2 else None)
    method = req.method
    if node_id == "me":
        if edge is None and method == "GET":
            return Route(_me, ["app"], None)
        if edge == "adaccounts" and method == "GET":
            return Route(_O.me_adaccounts, ["app"], None, need=ADS_READ)
        raise unknown_path(req.path)
    if node_id == "debug_token" and edge is None and method == "GET":
        return Route(leads.debug_token, ["app"], None)
    node = sb.state.get(node_id)
    if node is None:
        raise unsupported_get(node_id, method.lower())
    key = (node.kind, edge, method)
    if key not in ROUTES:
        if edge is not None and (node.kind, edge) not in {(k, e) for k, e, _ in ROUTES}:
            raise nonexisting_field(edge, _O.NODE_TYPE.get(node.kind, node.kind))
        raise unsupported_get(node_id, method.lower())
    handler, family = ROUTES[key]
    return Route(handler, _scopes(sb, node, family, req), node, edge, family, need_for(node.kind, edge, method))
