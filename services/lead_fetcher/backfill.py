"""Backfill: find leads whose webhook never came, by listing every lead form's recent leads.

For every configured Page: its lead forms (`GET /{page}/leadgen_forms` with the Page's own access token, which Meta
requires for the listing, docs/meta-api.md §7.5; and those leadwire created there, recorded by the campaign executor:
view `created_lead_forms`), then each form's leads created after the
form's watermark minus an overlap (`GET /{form}/leads?filtering=[time_created GREATER_THAN]`, every page until
`next` is absent). The bulk read returns the same fields as a single read, so each listed lead goes straight
through `store_leads` — the same insert-if-new plus outbox write as the webhook path, keyed by the lead id. That
keeps "one row, one LeadCaptured" to a single rule, and spends no extra leadgen quota on re-reading each lead.
A form's watermark moves to the scan's start only after all its listed leads are committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from services.lead_fetcher import metrics, store
from services.lead_fetcher.logic import (
    LEAD_FIELDS,
    access_alert,
    access_alert_code,
    parse_lead,
    scan_window,
    time_filter,
)
from shared.graph import GraphError, Priority, Scope, ThrottledError
from shared.graph.paging import paginate_pages
from shared.page_tokens import page_access_token

if TYPE_CHECKING:
    import asyncpg
    from pydantic import SecretStr

    from services.lead_fetcher.settings import LeadFetcherSettings
    from shared.graph import GraphClient

logger = logging.getLogger(__name__)

# One backfill at a time across all lead_fetcher processes (pg advisory lock key).
_LOCK_KEY = 0x1EAD_BF
PAGE_SIZE = 100


@dataclass
class BackfillReport:
    """What one run did (ids and counts only)."""

    forms_scanned: int = 0
    leads_listed: int = 0
    leads_new: int = 0
    failed_pages: list[str] = field(default_factory=list)
    failed_forms: list[str] = field(default_factory=list)
    skipped: bool = False  # another process held the backfill lock


async def run_backfill(
    pool: asyncpg.Pool,
    graph: GraphClient,
    *,
    page_ids: list[str],
    token: SecretStr | str | None,
    forms_token: SecretStr | str | None,
    settings: LeadFetcherSettings,
    since: datetime | None = None,
    now: datetime | None = None,
) -> BackfillReport:
    """Scan every form of every Page once; returns what was found. Errors of one Page or form do not stop
    the others; their watermarks stay put so the next run retries them. `token` reads leads (a Page or system-user
    token); `forms_token` lists the Page's forms (its Page token; None: only the forms leadwire created are
    scanned, since Meta refuses any other token for the listing)."""
    report = BackfillReport()
    async with pool.acquire() as lock_conn:
        if not await lock_conn.fetchval("select pg_try_advisory_lock($1)", _LOCK_KEY):
            logger.info("backfill already running in another process; skipped")
            report.skipped = True
            return report
        try:
            started = now or datetime.now(UTC)
            for page_id in page_ids:
                await _backfill_page(pool, graph, page_id, (token, forms_token), settings, since, started, report)
        finally:
            await lock_conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)
    logger.info(
        "backfill done: %s forms, %s leads listed, %s new",
        report.forms_scanned, report.leads_listed, report.leads_new,
        extra={"failed_pages": ",".join(report.failed_pages), "failed_forms": ",".join(report.failed_forms)},
    )
    return report


async def _backfill_page(
    pool: asyncpg.Pool, graph: GraphClient, page_id: str, tokens: tuple[SecretStr | str | None, SecretStr | str | None],
    settings: LeadFetcherSettings, since: datetime | None, started: datetime, report: BackfillReport,
) -> None:
    # Forms leadwire created on this Page (campaign_executor's record) are scanned even when the listing does not
    # show them (Meta's listing lags) or fails (it counts against the Page's `pages` quota, lead reads against
    # `leadgen`).
    token, forms_token = tokens
    created = await store.created_forms(pool, page_id)
    forms: dict[str, str | None] = {}
    if forms_token is None:  # no META_PAGE_ACCESS_TOKEN: the Page's own token, as Meta hands it to a system user
        forms_token = await page_access_token(graph, page_id, token)
    if forms_token is None:
        logger.warning("backfill: no Page token (META_PAGE_ACCESS_TOKEN unset, and META_ACCESS_TOKEN cannot read the "
                       "Page's), and Meta lists a Page's lead forms only with the Page's own token: only the %s forms "
                       "leadwire created are scanned", len(created), extra={"page_id": page_id})
        report.failed_pages.append(page_id)
    else:
        try:
            forms = await _listed_forms(graph, page_id, forms_token)
        except GraphError as exc:
            await _failed(pool, exc, page_id, settings, what="listing lead forms")
            report.failed_pages.append(page_id)
            if not created or access_alert_code(exc) is not None:
                return
    await _scan_forms(pool, graph, page_id, token, forms, created, settings, since, started, report)


async def _listed_forms(graph: GraphClient, page_id: str, forms_token: SecretStr | str) -> dict[str, str | None]:
    return {str(form["id"]): form.get("name") if isinstance(form.get("name"), str) else None
            async for form in graph.paginate(
                f"{page_id}/leadgen_forms", {"fields": "id,name", "limit": PAGE_SIZE}, token=forms_token,
                scope=Scope.page_api(page_id, Priority.BACKGROUND),
            ) if isinstance(form, dict) and form.get("id")}


async def _scan_forms(
    pool: asyncpg.Pool, graph: GraphClient, page_id: str, token: SecretStr | str | None,
    forms: dict[str, str | None], created: dict[str, str | None], settings: LeadFetcherSettings,
    since: datetime | None, started: datetime, report: BackfillReport,
) -> None:
    unlisted = {form_id: name for form_id, name in created.items() if form_id not in forms}
    forms.update(unlisted)
    marks = await store.watermarks(pool, forms)
    for form_id, form_name in forms.items():
        window = scan_window(
            marks.get(form_id), started,
            overlap=timedelta(seconds=settings.backfill_overlap_seconds),
            initial_days=settings.backfill_initial_days, since=since,
        )
        try:
            listed, new = await _backfill_form(pool, graph, page_id, form_id, token, window.since,
                                               form_name=form_name)
        except GraphError as exc:
            if form_id in unlisted and (exc.code, exc.subcode) == (100, 33):
                # Made by leadwire, since deleted at Meta (the Page no longer lists it): nothing left to scan.
                logger.info("backfill: lead form %s is gone at Meta; skipped", form_id,
                            extra={"page_id": page_id, "form_id": form_id})
                continue
            await _failed(pool, exc, page_id, settings, what="listing leads", form_id=form_id)
            report.failed_forms.append(form_id)
            if isinstance(exc, ThrottledError) or access_alert_code(exc) is not None:
                return  # the whole Page is throttled or refused: its other forms would fail the same way
            continue
        await store.advance_watermark(pool, form_id, page_id, window.until)
        report.forms_scanned += 1
        report.leads_listed += listed
        report.leads_new += new
        if new:
            logger.warning("backfill captured %s leads the webhook missed", new,
                           extra={"page_id": page_id, "form_id": form_id})


async def _backfill_form(
    pool: asyncpg.Pool, graph: GraphClient, page_id: str, form_id: str, token: SecretStr | str | None,
    since: datetime, *, form_name: str | None = None,
) -> tuple[int, int]:
    listed = new = 0
    params = {"fields": LEAD_FIELDS, "filtering": time_filter(since), "limit": PAGE_SIZE}
    # Background priority: within the Page's leadgen quota, the webhook path's lead reads go first.
    scope = Scope.leadgen(page_id, Priority.BACKGROUND)
    async for page in paginate_pages(graph, f"{form_id}/leads", params, token=token, scope=scope):
        data = page.get("data") if isinstance(page, dict) else None
        leads = []
        for raw in data if isinstance(data, list) else []:
            try:
                leads.append(replace(parse_lead(raw, page_id=page_id, source="backfill"), form_name=form_name))
            except ValueError as exc:
                logger.error("backfill: unusable lead object skipped: %s", exc,
                             extra={"form_id": form_id, "leadgen_id": str(raw.get("id"))})
        listed += len(leads)
        if leads:  # one transaction per listed page: the same insert-if-new plus outbox write as the webhook path
            async with pool.acquire() as conn:
                stored = len(await store.store_leads(conn, [(lead, None) for lead in leads]))
            metrics.LEADS_CAPTURED.labels("backfill").inc(stored)
            metrics.DUPLICATES_SKIPPED.labels("stored").inc(len(leads) - stored)
            new += stored
    return listed, new


async def _failed(pool: asyncpg.Pool, exc: GraphError, page_id: str, settings: LeadFetcherSettings, *, what: str,
                  form_id: str | None = None) -> None:
    logger.warning("backfill %s failed: %s", what, exc, extra={"page_id": page_id, "form_id": form_id})
    code = access_alert_code(exc)
    if code is not None:
        await store.raise_alert_once(pool, access_alert(code, page_id, exc),
                                     repeat_seconds=settings.alert_repeat_seconds)
