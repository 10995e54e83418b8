"""The console's pages and the middlewares in front of them (security headers, login, CSRF)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from yarl import URL

from contracts.leads import captured_message_id
from services.console import logic, meta_health, parked, queries
from services.console.keys import CONTEXT, SESSION, ConsoleContext
from services.console.security import (
    LOGIN_CSRF_COOKIE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    audit,
    close_session,
    find_session,
    new_token,
    open_session,
    tokens_match,
    verify_password,
)

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/readyz", "/metrics"})
STATUS_FILTERS = tuple(logic.STATUS_LABELS)
DAY_FILTERS = {"today": 0, "yesterday": 1}


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden(exc, request)
        raise
    except Exception:
        logger.exception("console: error answering a request", extra={"route": _route_name(request)})
        response = web.Response(status=500, text="Something went wrong. Try again in a moment.")
    _harden(response, request)
    return response


def _route_name(request: web.Request) -> str | None:
    return request.match_info.route.name if request.match_info.route else None


def _harden(response: web.StreamResponse, request: web.Request) -> None:
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"


@web.middleware
async def require_login(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page but the login form needs a session; every POST of a session needs its CSRF token."""
    if request.path in PUBLIC_PATHS or request.path.startswith("/static/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    session = await find_session(ctx.pool(), request.cookies.get(SESSION_COOKIE), ctx.settings.accounts())
    if session is None:
        if request.headers.get("HX-Request"):  # htmx follows HX-Redirect with a full page load
            raise web.HTTPUnauthorized(headers={"HX-Redirect": "/login"})
        if request.method != "GET":
            raise web.HTTPUnauthorized(text="Your session has ended: log in again.")
        raise web.HTTPSeeOther(URL("/login").with_query(next=request.rel_url.path))
    if request.method == "POST":
        form = await request.post()
        given = request.headers.get("X-CSRF-Token") or form.get("csrf_token")
        if not tokens_match(session.csrf_token, given if isinstance(given, str) else None):
            logger.warning("console: POST refused, bad CSRF token", extra={"path": request.path})
            raise web.HTTPForbidden(text="This form has expired: reload the page and try again.")
    request[SESSION] = session
    return await handler(request)


def _secure(request: web.Request, ctx: ConsoleContext) -> bool:
    """Is the operator's connection HTTPS (directly, or at a TLS proxy we were told to trust)?"""
    if request.secure:
        return True
    return ctx.settings.trust_proxy and request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str,
                max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
                        secure=_secure(request, request.app[CONTEXT]))


async def _render(request: web.Request, template: str, http_status: int = 200, **context: Any) -> web.Response:
    ctx = request.app[CONTEXT]
    session = request.get(SESSION)
    values: dict[str, Any] = {"page": None, "error": None, **context}
    body = await ctx.templates.get_template(template).render_async(
        session=session, csrf_token=session.csrf_token if session else None, path=request.path, **values
    )
    return web.Response(text=body, status=http_status, content_type="text/html", charset="utf-8")


def _safe_next(value: object) -> str:
    """Only a path of this site: never another origin (`//evil`, `https://...`)."""
    text = value if isinstance(value, str) else ""
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text else "/"


# ------------------------------------------------------------------------------------------------ login


async def login_form(request: web.Request) -> web.Response:
    # Keep a token the browser already holds: a second tab, or a redirected favicon request, must not void the first.
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
    response = await _render(request, "login.html", csrf_token_login=token,
                             next=_safe_next(request.query.get("next")))
    _set_cookie(response, request, LOGIN_CSRF_COOKIE, token)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    form = await request.post()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    next_path = _safe_next(form.get("next"))
    if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE), str(form.get("csrf_token", ""))):
        raise web.HTTPForbidden(text="This form has expired: reload the page and try again.")
    keys = (f"address:{request.remote}", f"user:{username.lower()}")
    token = new_token()
    if ctx.limiter.blocked(*keys):
        logger.warning("console: login refused, too many failed attempts")
        response = await _render(request, "login.html", http_status=429, csrf_token_login=token, next=next_path,
                                 error="Too many failed attempts. Wait a few minutes and try again.")
    # argon2 takes tens of milliseconds of CPU on purpose: off the event loop.
    elif not await asyncio.to_thread(verify_password, ctx.settings.accounts(), username, password):
        ctx.limiter.failed(*keys)
        logger.info("console: login failed")
        response = await _render(request, "login.html", http_status=401, csrf_token_login=token, next=next_path,
                                 error="Wrong user name or password.")
    else:
        ctx.limiter.succeeded(*keys)
        session_token = await open_session(ctx.pool(), username, ctx.settings.session_hours)
        await audit(ctx.pool(), username, "login")
        redirect = web.HTTPSeeOther(next_path)
        _set_cookie(redirect, request, SESSION_COOKIE, session_token, int(ctx.settings.session_hours * 3600))
        redirect.del_cookie(LOGIN_CSRF_COOKIE, path="/")
        raise redirect
    _set_cookie(response, request, LOGIN_CSRF_COOKIE, token)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    await close_session(ctx.pool(), request.cookies.get(SESSION_COOKIE, ""))
    await audit(ctx.pool(), request[SESSION].username, "logout")
    redirect = web.HTTPSeeOther("/login")
    redirect.del_cookie(SESSION_COOKIE, path="/")
    raise redirect


# ------------------------------------------------------------------------------------------------ today


async def _zone(ctx: ConsoleContext) -> ZoneInfo:
    name = ctx.settings.timezone or await queries.account_zone(ctx.pool()) or "UTC"
    return ZoneInfo(name)


async def _today_context(ctx: ConsoleContext) -> dict[str, Any]:
    pool = ctx.pool()
    zone = await _zone(ctx)
    now = await queries.now(pool)
    today, yesterday = logic.day_of(now, zone), logic.day_of(now, zone, 1)
    spend_rows = await queries.spend(pool)
    costs = []
    for days, key in ((7, "7d"), (30, "30d")):
        start = logic.day_of(now, zone, days - 1).start
        counts = await queries.cohort(pool, start, today.end, ctx.qualified_events, ctx.signed_events)
        costs.append({"days": days, "key": key, **counts})
    money_rows = []
    for row in spend_rows:
        currency = row["currency"]
        money_rows.append({
            "currency": currency,
            "spend_today": logic.money(row["spend_today"], currency),
            "leads_today": row["leads_today"],
            "windows": [
                {
                    "days": c["days"],
                    "spend": logic.money(row[f"spend_{c['key']}"], currency),
                    "leads": row[f"leads_{c['key']}"],
                    "cpl": logic.money(logic.cost_per(row[f"spend_{c['key']}"], row[f"leads_{c['key']}"]), currency),
                    "qualified": c["qualified"],
                    "signed": c["signed"],
                    # Cohort counts are not split by currency: costs per outcome only for a one-currency setup.
                    "cpql": logic.money(logic.cost_per(row[f"spend_{c['key']}"], c["qualified"]), currency)
                    if len(spend_rows) == 1 else "—",
                    "cpsc": logic.money(logic.cost_per(row[f"spend_{c['key']}"], c["signed"]), currency)
                    if len(spend_rows) == 1 else "—",
                }
                for c in costs
            ],
        })
    return {
        "zone": zone.key,
        "today": today,
        "counts": await queries.lead_counts(pool, today),
        "yesterday": await queries.lead_counts(pool, yesterday),
        "money": money_rows,
        "chips": logic.health_chips(await queries.health(pool), now) + (
            meta_health.chips(ctx.meta, now, ctx.settings.meta_check_seconds) if ctx.meta is not None else []),
        "parked": await parked.refresh(ctx.parked, ctx.amqp_url, ctx.settings.parked_refresh_seconds),
        "updated": now.astimezone(zone),
    }


async def today_page(request: web.Request) -> web.Response:
    return await _render(request, "today.html", page="today", **await _today_context(request.app[CONTEXT]))


async def today_tiles(request: web.Request) -> web.Response:
    return await _render(request, "_today_tiles.html", **await _today_context(request.app[CONTEXT]))


# ------------------------------------------------------------------------------------------------ leads


async def leads_page(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    zone = await _zone(ctx)
    day = request.query.get("day", "")
    status = request.query.get("status", "")
    query = request.query.get("q", "").strip()[:200]
    try:
        page = max(0, int(request.query.get("page", "0")))
    except ValueError:
        page = 0
    bounds = logic.day_of(await queries.now(ctx.pool()), zone, DAY_FILTERS[day]) if day in DAY_FILTERS else None
    rows = await queries.search_leads(ctx.pool(), queries.LeadFilter(
        start=bounds.start if bounds else None, end=bounds.end if bounds else None,
        status=status if status in STATUS_FILTERS else None, query=query or None, page=page,
    ))
    context = {
        "page": "leads", "leads": rows[:queries.PAGE_SIZE], "more": len(rows) > queries.PAGE_SIZE,
        "page_number": page, "day": day if day in DAY_FILTERS else "", "q": query,
        "status": status if status in STATUS_FILTERS else "", "statuses": logic.STATUS_LABELS, "zone": zone,
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "lead-rows":
        return await _render(request, "_lead_rows.html", **context)
    return await _render(request, "leads.html", **context)


async def _trail_response(request: web.Request, *, revealed: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    leadgen_id = request.match_info["leadgen_id"]
    lead = await queries.lead(ctx.pool(), leadgen_id)
    if lead is None:
        return await _render(request, "not_found.html", http_status=404, page="leads")
    fields = await queries.answers(ctx.pool(), leadgen_id)
    answers = logic.revealed_answers(fields) if revealed else logic.masked_answers(fields)
    context = {
        "page": "leads", "lead": lead, "answers": answers, "revealed": revealed, "zone": await _zone(ctx),
        **await queries.trail(ctx.pool(), leadgen_id, captured_message_id(leadgen_id)),
    }
    if revealed and request.headers.get("HX-Request"):
        return await _render(request, "_answers.html", **context)
    return await _render(request, "lead.html", **context)


async def lead_page(request: web.Request) -> web.Response:
    return await _trail_response(request, revealed=False)


async def reveal_lead(request: web.Request) -> web.Response:
    """Show a lead's answers in clear: a POST (never a link), recorded with who and when."""
    ctx = request.app[CONTEXT]
    leadgen_id = request.match_info["leadgen_id"]
    if await queries.lead(ctx.pool(), leadgen_id) is not None:
        await audit(ctx.pool(), request[SESSION].username, "reveal_lead", leadgen_id)
        logger.info("console: lead revealed", extra={"leadgen_id": leadgen_id, "operator": request[SESSION].username})
    return await _trail_response(request, revealed=True)


# ------------------------------------------------------------------------------------------------ performance

WINDOWS = (7, 14, 30, 90)


async def performance_page(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    pool = ctx.pool()
    zone = await _zone(ctx)
    try:
        days = int(request.query.get("days", "7"))
    except ValueError:
        days = 7
    days = days if days in WINDOWS else 7
    campaign_id = request.query.get("campaign") or None
    if campaign_id is not None and not campaign_id.isdigit():
        campaign_id = None
    now = await queries.now(pool)
    today, first = logic.day_of(now, zone), logic.day_of(now, zone, days - 1)
    settings = ctx.settings
    spend_rows, lead_rows = await queries.performance(pool, days, campaign_id, first.start, today.end,
                                                      ctx.qualified_events, ctx.signed_events)
    daily_spend, daily_outcomes = await queries.daily(pool, days, campaign_id, first.start, today.end, zone.key,
                                                      ctx.qualified_events, ctx.signed_events)
    # Leads of the last `outcome_lag_days` days may still qualify or sign: their days are shaded.
    lag = settings.outcome_lag_days
    maturing_from = logic.day_of(now, zone, lag - 1).day if lag else today.day + timedelta(days=1)
    chart = logic.chart_series(daily_spend, daily_outcomes, first.day, today.day, maturing_from)
    rows = logic.performance_rows(spend_rows, lead_rows, ctx.targets)
    return await _render(
        request, "performance.html", page="performance", days=days, windows=WINDOWS, campaign_id=campaign_id,
        campaign_name=spend_rows[0]["campaign_name"] if campaign_id and spend_rows else None,
        rows=rows, chart=chart, zone=zone, unpaid=logic.unpaid_leads(lead_rows),
        first=first.day, last=today.day, lag_days=settings.outcome_lag_days, targets=logic.shared_targets(rows),
        unjudged=logic.unjudged_accounts(spend_rows, ctx.targets),
    )
