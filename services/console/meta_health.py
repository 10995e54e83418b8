"""The Meta half of Today's health strip: the access token (valid, expiry, permissions), each Page's leadgen
subscription and lead access, the ad accounts, and the Graph API's throttling state per scope.

None of it is in the database, so the console asks Meta itself (the checks of `leadwire doctor`,
`shared.doctor.run_checks`) every CONSOLE_META_CHECK_SECONDS in a background job, and the page shows the last
answer. Usage per scope comes from Meta's own headers on those answers (X-App-Usage, X-Business-Use-Case-Usage,
X-Ad-Account-Usage), which count every caller of the app, not only the console; blocks are those the console's
client met itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.console.logic import Chip, ago
from shared.doctor import Finding, run_checks
from shared.graph import GraphClient
from shared.settings import MetaSettings

logger = logging.getLogger(__name__)

# Usage at or above this (the Graph client's pacing threshold) is amber; a blocked scope is red.
USAGE_WARN_PCT = 75.0
MAX_USAGE_CHIPS = 4


@dataclass
class MetaHealth:
    """The last check: findings, usage per scope (`pct`, `blocked_for` seconds), when; `error` if it failed."""

    findings: list[Finding] = field(default_factory=list)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)
    checked_at: datetime | None = None
    error: str | None = None


async def check(state: MetaHealth, graph: GraphClient, meta: MetaSettings) -> MetaHealth:
    try:
        state.findings = await run_checks(graph, meta)
        state.error = None
    except Exception as exc:  # a check that cannot run is shown on the strip, never fatal to the console
        state.error = type(exc).__name__
        logger.warning("console: Meta health check failed: %s", type(exc).__name__)
    state.usage = graph.usage.snapshot()
    state.checked_at = datetime.now(UTC)
    return state


async def run_forever(state: MetaHealth, graph: Callable[[], GraphClient], meta: MetaSettings,
                      interval: float) -> None:
    while True:
        await check(state, graph(), meta)
        await asyncio.sleep(interval)


def scope_label(scope: str) -> str:
    """`app` -> `app`, `buc:123:pages` -> `pages 123`, `ad_account:act_1` -> `ad account act_1`."""
    if scope.startswith("buc:"):
        _, owner, kind = [*scope.split(":", 2), "", ""][:3]
        return f"{kind or 'business'} {owner}".strip()
    kind, _, rest = scope.partition(":")
    return f"{kind.replace('_', ' ')} {rest}".strip()


def chips(state: MetaHealth, now: datetime, interval: float) -> list[Chip]:
    """Chips for the strip from the last check (pure: `now` is the database's clock)."""
    if state.checked_at is None:
        return [Chip("Meta connection", "warn", "not checked yet")]
    out: list[Chip] = []
    if state.error:
        out.append(Chip("Meta connection", "bad", f"check failed ({state.error}) {ago(state.checked_at, now)}"))
    by_check: dict[str, list[Finding]] = {}
    for finding in state.findings:
        by_check.setdefault(finding.check, []).append(finding)

    def fix(f: Finding) -> str:
        return f" — fix: {f.fix}" if f.fix and not f.ok else ""

    token = by_check.get("token", [])
    expiry = by_check.get("token expiry", [])
    if token:
        bad = [f for f in token if not f.ok]
        if bad:
            out.append(Chip("Meta token", "bad", bad[0].summary + fix(bad[0])))
        elif expiry and not expiry[0].ok:
            state_ = "bad" if expiry[0].severity == "critical" else "warn"
            out.append(Chip("Meta token", state_, expiry[0].summary + fix(expiry[0])))
        else:
            when = expiry[0].summary if expiry else "never expires"
            out.append(Chip("Meta token", "ok", f"{token[0].summary}, {when}"))
    missing = [f for f in by_check.get("permissions", []) if not f.ok]
    if by_check.get("permissions"):
        out.append(Chip("Permissions", "bad" if missing else "ok",
                        "; ".join(f"{f.subject}: {f.summary}" for f in missing) + (fix(missing[0]) if missing else "")
                        if missing else "every permission granted"))
    for check_name, label in (("leadgen subscription", "webhooks"), ("lead access", "lead access")):
        for f in by_check.get(check_name, []):
            out.append(Chip(f"Page {f.subject} {label}", "ok" if f.ok else "bad",
                            ("subscribed" if f.ok and check_name == "leadgen subscription" else f.summary) + fix(f)))
    for check_name in ("ad account", "pixel"):
        for f in by_check.get(check_name, []):
            out.append(Chip(f"{check_name.capitalize()} {f.subject}", "ok" if f.ok else "bad", f.summary + fix(f)))
    out += usage_chips(state.usage)
    if (now - state.checked_at).total_seconds() > 3 * interval:
        out.append(Chip("Meta checks", "warn", f"last checked {ago(state.checked_at, now)}"))
    return out


def usage_chips(usage: dict[str, dict[str, float]]) -> list[Chip]:
    """The scopes nearest their limit (blocked first), or one chip saying there is no throttling."""
    rows = [(scope, v.get("pct", 0.0), v.get("blocked_for", 0.0)) for scope, v in usage.items()]
    rows = [r for r in rows if r[1] > 0 or r[2] > 0]
    if not rows:
        return [Chip("Graph API usage", "ok", "no scope near its limit")]
    rows.sort(key=lambda r: (-r[2], -r[1]))
    out = []
    for scope, pct, blocked in rows[:MAX_USAGE_CHIPS]:
        if blocked > 0:
            out.append(Chip(f"Graph {scope_label(scope)}", "bad", f"throttled, {blocked:.0f} s to go"))
        else:
            out.append(Chip(f"Graph {scope_label(scope)}", "warn" if pct >= USAGE_WARN_PCT else "ok",
                            f"{pct:.0f}% of its limit used"))
    return out

