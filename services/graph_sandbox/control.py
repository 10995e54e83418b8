"""Control API under `/_sandbox/` (JSON, no auth): reset, limits, faults, call log, leads, webhooks, ..."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from . import delivery, insights, objects, review
from .core import Sandbox
from .errors import GraphError
from .keys import SANDBOX
from .state import JPY_ACCOUNT, JPY_PIXEL_ID, MAIN_ACCOUNT, PAGE_ID, PIXEL_ID, page_token

logger = logging.getLogger(__name__)

ControlHandler = Callable[[Sandbox, dict[str, Any], web.Request], Awaitable[Any]]


def _wrap(fn: ControlHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        sb = request.app[SANDBOX]
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                raw = await request.json()
            except json.JSONDecodeError:
                return web.json_response({"error": "body must be JSON"}, status=400)
            if raw is not None and not isinstance(raw, dict):
                return web.json_response({"error": "body must be a JSON object"}, status=400)
            body = raw or {}
        try:
            result = await fn(sb, body, request)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    return handler


def summary(sb: Sandbox) -> dict[str, Any]:
    st = sb.state

    def ids(kind: str, account: str) -> list[str]:
        return sorted((n.id for n in st.of_kind(kind, account=account)), key=int)

    return {
        "seed": st.seed,
        "days": st.days,
        "accounts": {
            acc: {
                "campaigns": ids("campaign", acc),
                "adsets": ids("adset", acc),
                "ads": ids("ad", acc),
                "currency": st.currency(acc),
                "timezone_name": st.nodes[acc].fields["timezone_name"],
            }
            for acc in (MAIN_ACCOUNT, JPY_ACCOUNT)
        },
        "main_account": MAIN_ACCOUNT,
        "jpy_account": JPY_ACCOUNT,
        "page_id": PAGE_ID,
        "page_access_token": page_token(PAGE_ID),
        "form_ids": sorted((n.id for n in st.of_kind("leadgen_form")), key=int),
        "pixel_id": PIXEL_ID,
        "jpy_pixel_id": JPY_PIXEL_ID,
        "app_id": st.app_id,
        "adsets_by_name": {n.fields["name"]: n.id for n in st.of_kind("adset")},
        "leads": len(st.of_kind("lead")),
        "clock": sb.clock.describe(),
    }


async def reset(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    if sb.webhooks is not None:
        await sb.webhooks.reset()
    sb.reset(body.get("seed"), body.get("ads"), body.get("days"), now=body.get("now"))
    logger.info("sandbox reset", extra={"seed": sb.state.seed})
    return summary(sb)


async def clock(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    if request.method == "POST":
        frozen = bool(body.get("frozen", False))
        if "now" in body:
            before = sb.clock.time()
            sb.set_clock(body["now"], frozen=frozen)
            if sb.clock.time() > before:  # the hours in between delivered, and brought their leads
                leads = delivery.deliver_leads(sb, before, sb.clock.time())
                if leads and sb.webhooks is not None and sb.webhooks.config.target_url:
                    sb.webhooks.submit(leads)
                    sb.webhooks.flush()
        elif frozen:
            sb.clock.set(sb.clock.time(), frozen=True)  # stop where it is
        else:
            raise ValueError('clock: give "now" (HH:MM, an ISO 8601 instant, or null for the machine\'s time)')
    return sb.clock.describe()


async def get_state(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    return summary(sb)


class _Knobs(Protocol):
    def update(self, patch: dict[str, Any]) -> None: ...

    def as_dict(self) -> dict[str, Any]: ...


def _knobs(of: Callable[[Sandbox], _Knobs]) -> ControlHandler:
    """A knob endpoint: GET shows the knobs, POST sets those the body names first."""

    async def handler(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
        if request.method == "POST":
            of(sb).update(body)
        return of(sb).as_dict()

    return handler


limits = _knobs(lambda sb: sb.limits)
faults = _knobs(lambda sb: sb.faults)
insights_knobs = _knobs(lambda sb: sb.insights)
audience_knobs = _knobs(lambda sb: sb.audiences)
versions = _knobs(lambda sb: sb.versions)


async def calls(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    return sb.calls.as_dict()


async def call_signatures(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    return {"signatures": sb.signatures.as_list(request.query.get("agent", ""))}


async def calls_reset(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    sb.calls.reset()
    return {"ok": True}


async def create_leads(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    forms = sorted((n.id for n in sb.state.of_kind("leadgen_form")), key=int)
    form_id = str(body.get("form_id") or forms[0])
    if form_id not in forms:
        raise ValueError(f"unknown form_id {form_id}")
    ad = sb.state.get(str(body["ad_id"])) if body.get("ad_id") else None
    if body.get("ad_id") and (ad is None or ad.kind != "ad"):
        raise ValueError(f"unknown ad_id {body['ad_id']}")
    count = int(body.get("count", 1))
    leads = [
        sb.state.create_lead(form_id, ad=ad, organic=bool(body.get("organic")), created=body.get("created_time"))
        for _ in range(count)
    ]
    if body.get("deliver", True) and sb.webhooks is not None:
        sb.webhooks.submit(leads)
        sb.webhooks.flush()
    return {"lead_ids": [lead.id for lead in leads], "form_id": form_id}


async def webhooks(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    if request.method == "POST":
        sb.webhooks.configure(body)
    return {"config": sb.webhooks.config.as_dict(), "deliveries": sb.webhooks.deliveries}


async def capi_events(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    pixel = request.query.get("pixel_id")
    events = [e for e in sb.state.capi_events if pixel is None or e["pixel_id"] == pixel]
    requests = sb.state.capi_requests[pixel] if pixel else sum(sb.state.capi_requests.values())
    if request.query.get("count_only"):  # cheap enough to poll while thousands of events arrive
        return {"count": len(events), "requests": requests}
    return {"events": events, "requests": requests, "requests_by_pixel": dict(sb.state.capi_requests)}


class _Token:
    """The sandbox token's knobs (`POST /_sandbox/token`): any field `debug_token` shows, and `{"revoke": [...]}` /
    `{"grant": [...]}` to take permissions away or give them back at run time, as a customer does in Business
    Settings. Every call checks the token's permissions (permissions.py), so a revoked one is refused at once."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def update(self, patch: dict[str, Any]) -> None:
        for key, value in patch.items():
            if key in ("grant", "revoke"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{key} must be a list of permission names")
                scopes = list(self.fields["scopes"])
                self.fields["scopes"] = ([s for s in scopes if s not in value] if key == "revoke"
                                         else scopes + [v for v in dict.fromkeys(value) if v not in scopes])
            elif key not in self.fields:
                raise ValueError(f"unknown token field {key!r}")
            else:
                self.fields[key] = value

    def as_dict(self) -> dict[str, Any]:
        return self.fields


token = _knobs(lambda sb: _Token(sb.state.token))


async def insights_restate(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    dates = insights.restate(sb, float(body.get("factor", 1.1)), int(body.get("days", 3)))
    return {"restated_dates": dates, "restatements": sb.state.restatements}


async def edit_object(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    """An edit made in Ads Manager: Meta's rules apply and budget changes count toward the 4-per-hour limit."""
    node = sb.state.get(request.match_info["object_id"])
    if node is None or node.kind not in objects.UPDATABLE:
        raise ValueError(f"unknown campaign, ad set, ad or creative {request.match_info['object_id']}")
    params = {k: json.dumps(v) if isinstance(v, dict | list) else str(v) for k, v in body.items()}
    try:
        objects.apply_update(sb, node, params)
    except GraphError as err:
        raise ValueError(f"{err.message} {err.user_msg or ''}".strip()) from None
    return objects.full_view(sb, node)


async def review_ad(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    """Meta's reviewers: `{"effective_status": "PENDING_REVIEW" | "DISAPPROVED" | "WITH_ISSUES" | "APPROVED",
    "ad_review_feedback"?: {...}, "issues_info"?: [...]}` for an ad (review.py)."""
    node = sb.state.get(request.match_info["ad_id"])
    if node is None or node.kind != "ad":
        raise ValueError(f"unknown ad {request.match_info['ad_id']}")
    review.set_review(sb, node, body.get("effective_status"), body.get("ad_review_feedback") or body.get("issues_info"))
    return objects.full_view(sb, node)


async def review_knobs(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    """`{"review_seconds": 3600}`: how long a new ad stays PENDING_REVIEW (0: approved at once)."""
    if request.method == "POST":
        unknown = set(body) - {"review_seconds"}
        if unknown:
            raise ValueError(f"unknown review knob {sorted(unknown)[0]!r}")
        if "review_seconds" in body:
            sb.state.review_seconds = max(0.0, float(body["review_seconds"]))
    return {"review_seconds": sb.state.review_seconds}


async def health(sb: Sandbox, body: dict[str, Any], request: web.Request) -> Any:
    return {"ok": True}


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/_sandbox/health", _wrap(health))
    r.add_post("/_sandbox/reset", _wrap(reset))
    r.add_get("/_sandbox/state", _wrap(get_state))
    for path, fn in (
        ("/_sandbox/limits", limits),
        ("/_sandbox/faults", faults),
        ("/_sandbox/webhooks", webhooks),
        ("/_sandbox/token", token),
        ("/_sandbox/insights", insights_knobs),
        ("/_sandbox/clock", clock),
        ("/_sandbox/audiences", audience_knobs),
        ("/_sandbox/versions", versions),
        ("/_sandbox/review", review_knobs),
    ):
        r.add_get(path, _wrap(fn))
        r.add_post(path, _wrap(fn))
    r.add_get("/_sandbox/calls", _wrap(calls))
    r.add_post("/_sandbox/calls/reset", _wrap(calls_reset))
    r.add_get("/_sandbox/calls/signatures", _wrap(call_signatures))
    r.add_post("/_sandbox/leads", _wrap(create_leads))
    r.add_get("/_sandbox/capi/events", _wrap(capi_events))
    r.add_post("/_sandbox/insights/restate", _wrap(insights_restate))
    r.add_post("/_sandbox/objects/{object_id}", _wrap(edit_object))
    r.add_post("/_sandbox/review/{ad_id}", _wrap(review_ad))
