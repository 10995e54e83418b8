"""Lead forms, leads, Page app subscriptions and `debug_token` (BUC `leadgen` / `pages`, keyed by Page)."""

from __future__ import annotations

from typing import Any

from .core import GraphRequest, Sandbox, list_param, paginate
from .errors import invalid_param, missing_param, unsupported_get
from .forms import not_page_token
from .objects import matches, parse_filtering, render
from .state import LEAD_RETENTION_SECONDS, Node, page_token

# Meta keeps lead data retrievable for 90 days (docs/meta-api.md §7.4); older leads read as nonexistent.
LEAD_TIME_OPERATORS = ("LESS_THAN", "GREATER_THAN", "GREATER_THAN_OR_EQUAL", "LESS_THAN_OR_EQUAL")


async def page_forms(sb: Sandbox, req: GraphRequest, page: Node | None) -> dict[str, Any]:
    """`GET /{page-id}/leadgen_forms`: like creating one, listing a Page's forms needs that Page's own access token;
    a user or system-user token (or another Page's) gets `(#190) This method must be called with a Page Access
    Token` (docs/meta-api.md §7.5). Reading leads takes a Page or a user token (§7.1)."""
    require_page_token(req, page)
    assert page is not None
    fields = list_param(req.params, "fields")
    forms = sorted(sb.state.of_kind("leadgen_form", page_id=page.id), key=lambda n: int(n.id))
    return paginate(sb, req, [render(sb, f, fields) for f in forms])


def require_page_token(req: GraphRequest, page: Node | None) -> None:
    """Page-token-only calls: forms (listing, creating) and the Page's app subscriptions (docs/meta-api.md §6.5,
    §7.5). Any other token, a system user's or another Page's, gets Meta's 190."""
    assert page is not None
    if req.token != page_token(page.id):
        raise not_page_token()


def retained(sb: Sandbox, lead: Node) -> bool:
    return float(lead.fields["created_time"]) >= sb.state.now() - LEAD_RETENTION_SECONDS


async def get_lead(sb: Sandbox, req: GraphRequest, lead: Node | None) -> dict[str, Any]:
    assert lead is not None
    if not retained(sb, lead):
        raise unsupported_get(lead.id)
    return render(sb, lead, list_param(req.params, "fields"))


def _leads(sb: Sandbox, req: GraphRequest, candidates: list[Node]) -> dict[str, Any]:
    filters = parse_filtering(req)
    for f in filters:
        if f["field"] != "time_created" or f["operator"] not in LEAD_TIME_OPERATORS:
            raise invalid_param(
                f"Filtering on leads supports field time_created with operators {', '.join(LEAD_TIME_OPERATORS)}",
                blame=["filtering"],
            )
    selected = [
        n
        for n in candidates
        if retained(sb, n)
        and all(matches(int(n.fields["created_time"]), f["operator"], f.get("value")) for f in filters)
    ]
    selected.sort(key=lambda n: (n.fields["created_time"], int(n.id)), reverse=True)
    fields = list_param(req.params, "fields")
    return paginate(sb, req, [render(sb, n, fields) for n in selected])


async def form_leads(sb: Sandbox, req: GraphRequest, form: Node | None) -> dict[str, Any]:
    assert form is not None
    return _leads(sb, req, sb.state.of_kind("lead", form_id=form.id))


async def ad_leads(sb: Sandbox, req: GraphRequest, ad: Node | None) -> dict[str, Any]:
    assert ad is not None
    return _leads(sb, req, sb.state.of_kind("lead", ad_id=ad.id))


async def get_subscribed_apps(sb: Sandbox, req: GraphRequest, page: Node | None) -> dict[str, Any]:
    require_page_token(req, page)
    assert page is not None
    fields = sb.state.subscribed_apps.get(page.id)
    data = [] if fields is None else [{"id": sb.state.app_id, "name": "Leadwire", "subscribed_fields": fields}]
    return {"data": data}


async def subscribe_app(sb: Sandbox, req: GraphRequest, page: Node | None) -> dict[str, Any]:
    require_page_token(req, page)
    assert page is not None
    fields = list_param(req.params, "subscribed_fields")
    if not fields:
        raise missing_param("subscribed_fields")
    # Values are checked against the SDK's enum before this handler runs (schema.check_params).
    sb.state.subscribed_apps[page.id] = sorted(set(sb.state.subscribed_apps.get(page.id, [])) | set(fields))
    return {"success": True}


async def unsubscribe_app(sb: Sandbox, req: GraphRequest, page: Node | None) -> dict[str, Any]:
    require_page_token(req, page)
    assert page is not None
    sb.state.subscribed_apps.pop(page.id, None)
    return {"success": True}


async def debug_token(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    if not req.params.get("input_token"):
        raise missing_param("input_token")
    tok = sb.state.token
    valid = bool(tok["is_valid"]) and not sb.faults.token_expired
    data: dict[str, Any] = {
        "app_id": sb.state.app_id,
        "type": tok["type"],
        "application": "Leadwire",
        "data_access_expires_at": tok["data_access_expires_at"],
        "expires_at": tok["expires_at"],
        "is_valid": valid,
        "scopes": list(tok["scopes"]),
        "granular_scopes": [{"scope": s} for s in tok["scopes"]],
        "user_id": tok["user_id"],
    }
    if not valid:
        data["error"] = {"code": 190, "message": "Error validating access token: Session has expired.", "subcode": 463}
    return {"data": data}
