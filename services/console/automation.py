"""The Automation page: every rule run and decision with its numbers and sentence, and the operator's consent.

Reads go through `automation_queries` (the rules engine's `console_rule_*` views). Enabling or disabling a rule and
approving or rejecting a shadow decision are CSRF-protected POSTs (the `require_login` middleware checks the
token) that send the rules engine a message; the engine applies it, the page shows the result once it has.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web

from contracts.messages import RuleConsentChangedMessage, RuleDecisionReviewedMessage
from contracts.rules import RuleConsentChanged, RuleDecisionReviewed
from services.console import automation_queries as queries
from services.console.handlers import _render, _zone
from services.console.keys import CONTEXT, SESSION
from services.console.logic import money

logger = logging.getLogger(__name__)

# A decision's status (console_rule_decisions.status) in the operator's words.
STATUS_LABELS = {
    "acted": "Done",
    "failed": "Failed",
    "sent": "Sent, waiting for Meta",
    "shadow": "Would act (shadow mode)",
    "dry_run": "Dry run",
    "held": "Held by a guardrail",
    "skipped": "Skipped",
}
# An acted decision of a notify-only rule: it told the operator and changed nothing on Meta.
NOTIFIED = "Notified you (nothing changed on Meta)"
# The rules engine's guardrails and reasons (decision `reason`) in words.
REASON_LABELS = {
    "stale_data": "numbers too old",
    "circuit_open": "circuit breaker open",
    "conflict": "another rule changed it in this run",
    "cooldown": "cooldown",
    "max_actions": "action limit",
    "budget_change_rate": "Meta's budget changes per hour",
    "guard_budget_step": "budget step limit",
    "budget_limit": "budget limit",
    "ceiling": "account daily ceiling",
    "hard_max_budget": "hard budget limit",
    "budget_increases_per_week": "budget raises per week",
    "no_budget": "no budget on it",
    "no_change": "nothing to change",
    "not_matched": "did not match",
    "insufficient_data": "too little data",
}
_MONEY = frozenset({"spend", "cpm", "cpl", "cost_per_qualified_lead", "cost_per_signed_case", "daily_budget",
                    "lifetime_budget"})
_LABELS = {"cpl": "CPL", "ctr": "CTR", "cpm": "CPM", "cost_per_qualified_lead": "per qualified lead",
           "cost_per_signed_case": "per signed case", "qualified_leads": "qualified", "signed_cases": "signed",
           "daily_budget": "daily budget", "lifetime_budget": "lifetime budget"}
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,99}$")


def numbers(metrics: Any, currency: str) -> list[tuple[str, str]]:
    """A decision's numbers as (window, "spend $750.00 · leads 0 · CPL —") lines."""
    if isinstance(metrics, str):
        metrics = json.loads(metrics)
    out = []
    for bucket, values in (metrics or {}).items():
        parts = []
        for metric, value in values.items():
            if value is None:
                shown = "—"
            elif metric in _MONEY:
                shown = money(round(value), currency)
            elif metric == "ctr":
                shown = f"{value:.2f}%"
            elif isinstance(value, float) and not value.is_integer():
                shown = f"{value:,.2f}"
            else:
                shown = f"{round(value):,}"
            parts.append(f"{_LABELS.get(metric, metric)} {shown}")
        out.append(("" if bucket == "entity" else bucket.replace("_", " "), " · ".join(parts)))
    return out


def _page(request: web.Request) -> int:
    try:
        return max(0, int(request.query.get("page", "0")))
    except ValueError:
        return 0


async def automation_page(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    pool = ctx.pool()
    rule = request.query.get("rule", "").strip()[:100] or None
    entity = request.query.get("object", "").strip()[:200] or None
    status = request.query.get("status", "")
    where = queries.DecisionFilter(rule=rule, entity=entity, status=status if status in STATUS_LABELS else None,
                                   page=_page(request))
    rows = await queries.decisions(pool, where)
    for row in rows:
        row["numbers"] = numbers(row["metrics"], row["currency"])
        row["label"] = NOTIFIED if row["notify_only"] and row["status"] == "acted" else STATUS_LABELS[row["status"]]
    context = {
        "page": "automation", "decisions": rows[:queries.PAGE_SIZE], "more": len(rows) > queries.PAGE_SIZE,
        "page_number": where.page, "rule": rule or "", "object": entity or "", "status": where.status or "",
        "statuses": STATUS_LABELS, "reasons": REASON_LABELS, "rules": await queries.rules(pool),
        "runs": await queries.runs(pool, 5), "zone": await _zone(ctx), "notice": request.query.get("notice", ""),
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "decision-rows":
        return await _render(request, "_decision_rows.html", **context)
    return await _render(request, "automation.html", **context)


def _back(request: web.Request, notice: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/automation?notice={notice}")


async def change_consent(request: web.Request) -> web.StreamResponse:
    """Enable a rule (it acts on Meta) or put it back in shadow mode: a RuleConsentChanged for the rules engine.

    Refused for a notify-only rule (as the newest evaluation recorded it): it changes nothing on Meta and is on
    without consent, so enabling or disabling it would record a consent that means nothing."""
    ctx = request.app[CONTEXT]
    rule = request.match_info["rule"]
    form = await request.post()
    enabled = form.get("enabled") == "true"
    if not _RULE_NAME.match(rule):
        raise web.HTTPBadRequest(text="Unknown rule.")
    if await queries.notify_only(ctx.pool(), rule):
        raise _back(request, "notify-only")
    username = request[SESSION].username
    message = RuleConsentChangedMessage.new(RuleConsentChanged(rule=rule, enabled=enabled, by=username,
                                                               note="from the console"))
    await queries.send(ctx.pool(), message, username=username, action="rule_enable" if enabled else "rule_disable",
                       subject=rule)
    logger.info("console: rule %s %s", rule, "enable" if enabled else "disable",
                extra={"rule": rule, "operator": username})
    raise _back(request, "enabled" if enabled else "disabled")


async def review_decision(request: web.Request) -> web.StreamResponse:
    """Approve (apply through every guardrail) or reject a shadow decision: a RuleDecisionReviewed."""
    ctx = request.app[CONTEXT]
    decision_id = int(request.match_info["decision_id"])
    form = await request.post()
    verdict = form.get("verdict")
    if verdict not in ("approve", "reject"):
        raise web.HTTPBadRequest(text="Approve or reject.")
    found = await queries.decision(ctx.pool(), decision_id)
    if found is None or found["status"] != "shadow" or found["verdict"] is not None:
        raise _back(request, "not-reviewable")
    username = request[SESSION].username
    message = RuleDecisionReviewedMessage.new(RuleDecisionReviewed(decision_id=decision_id, verdict=verdict,
                                                                   by=username))
    await queries.send(ctx.pool(), message, username=username, action=f"decision_{verdict}",
                       subject=str(decision_id))
    logger.info("console: decision %s %s", decision_id, verdict,
                extra={"decision_id": decision_id, "operator": username})
    raise _back(request, "approved" if verdict == "approve" else "rejected")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/automation", automation_page, name="automation")
    app.router.add_post("/automation/rules/{rule}/consent", change_consent, name="rule_consent")
    app.router.add_post("/automation/decisions/{decision_id:[0-9]{1,18}}/review", review_decision,
                        name="decision_review")
