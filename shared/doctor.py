"""Connection health: the checks behind `leadwire doctor`, `leadwire pages subscribe`, and periodic alerts.

Expired tokens and revoked lead access are why lead integrations silently stop, so each check says what is wrong
and how to fix it, and the monitor raises an `AlertRaised` when something breaks or a token expires soon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import SecretStr

from contracts.alerts import AlertRaised
from contracts.values import MAX_UNIX_SECONDS
from shared.ghl import LEADWIRE_FIELD_KEYS, LEADWIRE_FIELDS, CustomFieldCache, GhlClient, GhlError
from shared.graph import AuthError, GraphClient, GraphError, PermissionDeniedError, Priority, Scope
from shared.page_tokens import configured_forms_token, page_access_token
from shared.settings import MetaSettings

logger = logging.getLogger(__name__)

TOKEN_EXPIRY_WARNING_DAYS = 7
# Health checks can wait: within a rate-limit scope, lead reads go first.
HEALTH_CHECK = Scope.background()

# Permissions each part of leadwire needs from the system-user token (docs/meta-api.md §6.5, §7.1).
REQUIRED_SCOPES: dict[str, tuple[str, ...]] = {
    "lead capture": ("leads_retrieval", "pages_manage_ads", "pages_manage_metadata", "pages_read_engagement",
                     "pages_show_list", "ads_management"),
    "insights": ("ads_read",),
    "campaign changes": ("ads_management",),
    "business assets": ("business_management",),
}


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    summary: str
    subject: str | None = None
    fix: str | None = None
    severity: str = "critical"

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.check, self.subject)

    def render(self) -> str:
        mark = "ok  " if self.ok else ("WARN" if self.severity == "warning" else "FAIL")
        line = f"[{mark}] {self.check}{f' {self.subject}' if self.subject else ''}: {self.summary}"
        return line + (f"\n       fix: {self.fix}" if self.fix and not self.ok else "")


def _epoch(value: object) -> int:
    """Unix seconds from Meta, or 0 (never / unknown) for what no date can be: milliseconds, 1e20, text."""
    try:
        seconds = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0
    return seconds if 0 < seconds <= MAX_UNIX_SECONDS else 0


async def _page_token(graph: GraphClient, meta: MetaSettings, page_id: str) -> SecretStr | str:
    """The token Meta takes for a Page's subscriptions and forms: META_PAGE_ACCESS_TOKEN, else the Page's own read
    with META_ACCESS_TOKEN as the backfill does (shared/page_tokens.py), else META_ACCESS_TOKEN (Meta's refusal
    then says what is wrong)."""
    return (configured_forms_token(meta) or await page_access_token(graph, page_id, meta.access_token)
            or meta.access_token)


async def check_token(graph: GraphClient, meta: MetaSettings, *, now: float | None = None) -> list[Finding]:
    now = time.time() if now is None else now
    # debug_token is best asked with an app token (app_id|app_secret); without one a token may inspect itself.
    inspector = (
        SecretStr(f"{meta.app_id}|{meta.app_secret.get_secret_value()}")
        if meta.app_id and meta.app_secret.get_secret_value()
        else meta.access_token
    )
    try:
        # Meta's debug_token takes the token to inspect only as the `input_token` query parameter: the one place a
        # token is in a URL leadwire requests (README, "Secrets"). The client logs endpoint templates, never URLs.
        body = await graph.get("debug_token", {"input_token": meta.access_token.get_secret_value()}, token=inspector,
                               scope=HEALTH_CHECK)
    except GraphError as exc:
        return [Finding("token", False, f"cannot inspect the token: {exc}",
                        fix="check META_APP_ID, META_APP_SECRET and META_ACCESS_TOKEN")]
    data = body.get("data", {})
    if not data.get("is_valid"):
        reason = (data.get("error") or {}).get("message", "Meta says the token is not valid")
        return [Finding("token", False, reason,
                        fix="generate a new system-user token in Business Settings > System users, "
                            "set META_ACCESS_TOKEN, restart")]
    findings = [Finding("token", True, f"valid ({data.get('type', 'token').lower()})")]
    expires_at = _epoch(data.get("expires_at"))  # 0 = never (system-user tokens)
    if expires_at:
        days = (expires_at - now) / 86400
        when = datetime.fromtimestamp(expires_at, UTC).date().isoformat()
        if days < TOKEN_EXPIRY_WARNING_DAYS:
            findings.append(Finding(
                "token expiry", False, f"expires in {max(days, 0):.1f} days ({when})",
                severity="critical" if days < 1 else "warning",
                fix="replace it with a system-user token, which does not expire",
            ))
        else:
            findings.append(Finding("token expiry", True, f"expires {when}"))
    granted = set(data.get("scopes") or [])
    for purpose, scopes in REQUIRED_SCOPES.items():
        missing = [s for s in scopes if s not in granted]
        findings.append(
            Finding("permissions", not missing,
                    f"missing {', '.join(missing)}" if missing else "granted", subject=purpose,
                    fix=f"grant {', '.join(missing)} to the system user's token and regenerate it" if missing else None)
        )
    return findings


async def check_page(graph: GraphClient, meta: MetaSettings, page_id: str) -> list[Finding]:
    token = await _page_token(graph, meta, page_id)
    findings = []
    try:
        apps = (await graph.get(f"{page_id}/subscribed_apps", token=token,
                                scope=Scope.page_api(page_id, Priority.BACKGROUND))).get("data", [])
        ours = [a for a in apps if not meta.app_id or str(a.get("id")) == meta.app_id]
        subscribed = any("leadgen" in (a.get("subscribed_fields") or []) for a in ours)
        findings.append(Finding(
            "leadgen subscription", subscribed,
            "the app receives this Page's leadgen webhooks" if subscribed
            else "the app is not subscribed to this Page's leadgen webhooks: no lead will arrive by webhook",
            subject=page_id, fix="run `leadwire pages subscribe`",
        ))
    except GraphError as exc:
        findings.append(Finding("leadgen subscription", False, f"cannot read subscriptions: {exc}", subject=page_id,
                                fix="use a Page token of a person with the ADVERTISE task (META_PAGE_ACCESS_TOKEN)"))
    findings.append(await check_lead_access(graph, page_id, token))
    return findings


async def check_lead_access(graph: GraphClient, page_id: str, token: SecretStr | str) -> Finding:
    """Whether leads of the Page can be read: its forms listed, then one lead of its first form read. Listing forms
    takes no `leads_retrieval` (docs/meta-api.md §7.1, §7.5), so only a lead read shows that permission missing."""
    what = "lead forms"
    try:
        forms = (await graph.get(f"{page_id}/leadgen_forms", {"limit": 1, "fields": "id"}, token=token,
                                 scope=Scope.page_api(page_id, Priority.BACKGROUND))).get("data") or []
        if forms:
            what = "leads"
            await graph.get(f"{forms[0]['id']}/leads", {"limit": 1, "fields": "id"}, token=token,
                            scope=Scope.leadgen(page_id, Priority.BACKGROUND))
    except (PermissionDeniedError, AuthError) as exc:
        return Finding("lead access", False, f"cannot read {what}: {exc}", subject=page_id,
                       fix="grant leads_retrieval and pages_manage_ads to the token, and check Leads Access Manager "
                           "(Page settings) includes the system user or app")
    except GraphError as exc:
        return Finding("lead access", False, f"cannot read {what}: {exc}", subject=page_id)
    return Finding("lead access", True, "leads readable" if what == "leads" else "lead forms readable (none yet)",
                   subject=page_id)


async def check_object(graph: GraphClient, what: str, object_id: str, fields: str) -> Finding:
    try:
        body = await graph.get(object_id, {"fields": fields}, scope=HEALTH_CHECK)
    except GraphError as exc:
        return Finding(what, False, f"not readable: {exc}", subject=object_id,
                       fix="assign the asset to the system user in Business Settings")
    if what == "ad account" and str(body.get("account_status", "1")) != "1":
        return Finding(what, False, f"account_status is {body.get('account_status')} (not active)",
                       subject=object_id, fix="resolve the account's status in Ads Manager")
    return Finding(what, True, str(body.get("name") or "readable"), subject=object_id)


async def run_checks(graph: GraphClient, meta: MetaSettings, *, now: float | None = None) -> list[Finding]:
    """Every check, concurrently; findings in a stable order."""
    tasks: list[Awaitable[list[Finding]]] = [check_token(graph, meta, now=now)]
    tasks += [check_page(graph, meta, page) for page in meta.page_ids]
    tasks += [_one(check_object(graph, "ad account", a, "name,account_status,currency")) for a in meta.ad_account_id]
    pixels = dict.fromkeys([a.pixel_id for a in meta.accounts if a.pixel_id] + [meta.pixel_id] * bool(meta.pixel_id))
    tasks += [_one(check_object(graph, "pixel", pixel, "id,name")) for pixel in pixels]
    results = await asyncio.gather(*tasks)
    return [finding for group in results for finding in group] + account_findings(meta)


def account_findings(meta: MetaSettings) -> list[Finding]:
    """What each account of LEADWIRE_ACCOUNTS_FILE lacks: Pages (no lead of its own is fetched) or a pixel (its
    leads' conversions go to META_PIXEL_ID, or are parked without one)."""
    if meta.accounts_file is None:
        return []
    findings = []
    for account in meta.accounts:
        pixel = account.pixel_id or meta.pixel_id
        gaps = ([] if account.page_ids else ["no Pages (none of its leads is fetched)"]) + (
            [] if pixel else ["no pixel and no META_PIXEL_ID (its conversions are parked)"])
        summary = "; ".join(gaps) or (f"{len(account.page_ids)} Pages, pixel {pixel}"
                                      f"{'' if account.pixel_id else ' (META_PIXEL_ID)'}, rules "
                                      f"{account.rules_dir or 'RULES_DIR'}")
        findings.append(Finding("account settings", not gaps, summary, subject=account.id,
                                fix="complete its entry in LEADWIRE_ACCOUNTS_FILE", severity="warning"))
    return findings


async def _one(finding: Awaitable[Finding]) -> list[Finding]:
    return [await finding]


async def subscribe_pages(graph: GraphClient, meta: MetaSettings) -> list[Finding]:
    """Install the app on each configured Page for `leadgen` (the Page half of the two-step subscription)."""
    findings = []
    for page_id in meta.page_ids:
        try:
            token = await _page_token(graph, meta, page_id)
            await graph.post(f"{page_id}/subscribed_apps", {"subscribed_fields": "leadgen"}, token=token)
            findings.append(Finding("leadgen subscription", True, "subscribed", subject=page_id))
        except GraphError as exc:
            findings.append(Finding("leadgen subscription", False, str(exc), subject=page_id,
                                    fix="the Page token must belong to a person with the ADVERTISE task"))
    return findings


GHL_CREDENTIALS_FIX = (
    "create a Private Integration token in the GoHighLevel sub-account (Settings > Private Integrations) with the "
    "scopes contacts.write, contacts.readonly, locations.readonly, locations/customFields.readonly (and "
    "locations/customFields.write to let leadwire create its fields); set GHL_API_TOKEN"
)


async def check_gohighlevel(client: GhlClient, custom_field_map: dict[str, str | None]) -> list[Finding]:
    """GoHighLevel: the token and its location, leadwire's custom fields, the fields GHL_CUSTOM_FIELD_MAP names."""
    location = client.location_id
    try:
        found = await client.get_location()
    except GhlError as exc:
        if exc.status == 403:
            return [Finding("gohighlevel location", False, "the token has no access to this location",
                            subject=location, fix="set GHL_LOCATION_ID to the sub-account the token was made in")]
        if exc.status == 401:
            what = "the token lacks locations.readonly" if exc.scope_denied else "GoHighLevel rejects the token"
            return [Finding("gohighlevel token", False, what, subject=location, fix=GHL_CREDENTIALS_FIX)]
        return [Finding("gohighlevel token", False, f"cannot reach GoHighLevel: {exc}", subject=location,
                        fix="check GHL_BASE_URL and the network; GoHighLevel's status page")]
    findings = [Finding("gohighlevel token", True, f"valid for {found.get('name') or 'the location'}",
                        subject=location)]
    fields = CustomFieldCache(client, create_missing=False)
    try:
        await fields.load()
    except GhlError as exc:
        what = ("the token lacks locations/customFields.readonly" if exc.scope_denied
                else f"cannot read custom fields: {exc}")
        return [*findings, Finding("gohighlevel custom fields", False, what, subject=location, fix=GHL_CREDENTIALS_FIX)]
    names = {purpose: name for purpose, name, _ in LEADWIRE_FIELDS}
    types = {purpose: kind for purpose, _, kind in LEADWIRE_FIELDS}
    missing = [p for p in names if LEADWIRE_FIELD_KEYS[p] not in fields.by_key]
    findings.append(Finding(
        "gohighlevel custom fields", not missing,
        "leadwire's fields are there" if not missing else
        "missing " + ", ".join(f"{names[p]} ({LEADWIRE_FIELD_KEYS[p]})" for p in missing),
        subject=location, severity="warning",
        fix=("create them in GoHighLevel (Settings > Custom Fields, object Contact: "
             + ", ".join(f"{names[p]} as {types[p].replace('_', ' ').title()}" for p in missing)
             + "), or give the token locations/customFields.write and crm_sync creates them with its next lead"),
    ))
    unknown = sorted(t for t in custom_field_map.values() if t and fields.resolve(t) is None)
    findings.append(Finding(
        "gohighlevel field map", not unknown,
        f"{len([t for t in custom_field_map.values() if t])} mapped fields found" if not unknown
        else "GHL_CUSTOM_FIELD_MAP names fields the location lacks: " + ", ".join(unknown),
        subject=location, severity="warning",
        fix="create those contact fields in GoHighLevel or correct GHL_CUSTOM_FIELD_MAP (keys like "
            "contact.accident_date, or field ids); until then their answers go to Meta Lead Answers",
    ))
    return findings


def to_alert(finding: Finding, service: str) -> AlertRaised:
    subject = f" {finding.subject}" if finding.subject else ""
    return AlertRaised(
        severity="warning" if finding.severity == "warning" else "critical",
        code=f"meta_{finding.check.replace(' ', '_')}",
        summary=f"Meta {finding.check}{subject}: {finding.summary}"[:500],
        service=service,
        subject=finding.subject,
        fix=finding.fix,
    )


class HealthMonitor:
    """Runs the checks periodically; raises an alert when a check fails, again at most once per `repeat`."""

    def __init__(
        self,
        graph: GraphClient,
        meta: MetaSettings,
        raise_alert: Callable[[AlertRaised], Awaitable[None]],
        *,
        service: str,
        interval: float = 3600.0,
        repeat: float = 86400.0,
    ) -> None:
        self.graph, self.meta, self.raise_alert = graph, meta, raise_alert
        self.service, self.interval, self.repeat = service, interval, repeat
        self._alerted: dict[tuple[str, str | None], float] = {}

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    async def check_once(self, *, now: float | None = None) -> list[Finding]:
        now = time.time() if now is None else now
        findings = await run_checks(self.graph, self.meta, now=now)
        await self.handle(findings, now=now)
        return findings

    async def handle(self, findings: Iterable[Finding], *, now: float) -> None:
        for finding in findings:
            if finding.ok:
                if self._alerted.pop(finding.key, None) is not None:
                    logger.info("recovered: %s", finding.render())
                continue
            last = self._alerted.get(finding.key)
            if last is not None and now - last < self.repeat:
                continue
            self._alerted[finding.key] = now
            logger.error("%s", finding.render())
            await self.raise_alert(to_alert(finding, self.service))
