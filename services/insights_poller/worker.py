"""One refresh of one ad account, refreshes of many accounts with failure isolation, and the schedule.

A refresh: read the account (currency, time zone), sync its campaigns / ad sets / ads, choose the window
(trailing days, or the full restatement window once a day, or what the operator asked), read every ad-level daily
row of the window and the deduplicated reach per ad set, campaign and ad over each of INSIGHTS_REACH_WINDOWS, then in
one transaction replace the stored rows of that window and the account's window reach, and enqueue
`InsightsUpdated` (outbox). Nothing of the insights window is written until every row of it was read, so a
refresh interrupted by a throttle or a failure leaves the previous numbers whole: no gaps, no half-replaced
windows, no double counting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from contracts.alerts import AlertRaised
from contracts.insights import InsightsUpdated
from contracts.messages import AlertRaisedMessage, InsightsUpdatedMessage
from services.insights_poller import metrics, store
from services.insights_poller.logic import (
    Window,
    dedupe_rows,
    full_refresh_due,
    is_full,
    parse_insight_row,
    reach_windows,
    trailing_window,
)
from services.insights_poller.reader import CallCounter, InsightsReader
from shared.graph import AuthError, GraphError, NotFoundError, PermissionDeniedError, ThrottledError
from shared.outbox import enqueue

if TYPE_CHECKING:
    import asyncpg

    from services.insights_poller.settings import InsightsSettings
    from shared.graph import GraphClient

logger = logging.getLogger(__name__)

SERVICE = "insights_poller"
ALERT_CODE = "insights_account_failed"
ALERT_REPEAT_SECONDS = 3600.0  # at most one alert per account and error kind in this period (per process)
MAX_PARALLEL_ACCOUNTS = 4  # quota is per ad account, so accounts can run side by side


@dataclass(frozen=True)
class RefreshOutcome:
    """What one account's refresh did (or why it did not)."""

    account_id: str
    window: Window | None = None
    rows: int = 0
    rows_changed: int = 0
    graph_calls: int = 0
    mode: str = ""
    full: bool = False
    error: BaseException | None = None
    retry_after: float | None = None
    reach_rows: int = 0  # window reach rows stored (ad sets, campaigns and ads x windows with delivery)

    @property
    def ok(self) -> bool:
        return self.error is None


class Worker:
    """Refreshes stored insights and objects of the configured ad accounts.

    Args:
        pool: the service's database pool.
        graph: the shared Graph client (pacing, throttling and retries are its job).
        settings: the INSIGHTS_* block.
        accounts: ad account ids (`act_<digits>`) from META_AD_ACCOUNT_ID.
    """

    def __init__(self, pool: asyncpg.Pool, graph: GraphClient, settings: InsightsSettings,
                 accounts: Sequence[str]) -> None:
        self.pool = pool
        self.settings = settings
        self.accounts = list(dict.fromkeys(accounts))
        self.reader = InsightsReader(graph, settings)
        self._alerted: dict[tuple[str, str], float] = {}

    # -- one account -------------------------------------------------------------------------------------------

    async def refresh_account(
        self, account_id: str, *, since: date | None = None, until: date | None = None
    ) -> RefreshOutcome:
        """Refresh one account; raises on failure. Without `since`, the window follows the schedule rules."""
        counter = CallCounter()
        account = await self.reader.account(account_id, counter)
        objects = await self.reader.objects(account_id, counter)
        async with self.pool.acquire() as conn, conn.transaction():
            # Objects first, in their own transaction: rules see current state even if insights fail below.
            await store.upsert_account(conn, account)
            await store.upsert_objects(conn, account_id, objects)
            last_full = await store.last_full_refresh(conn, account_id)
            known = await store.known_campaign_ids(conn, account_id)
        today = datetime.now(ZoneInfo(account.timezone_name)).date()
        if since is not None:
            window = Window(since, until or today)
        elif full_refresh_due(last_full, datetime.now(UTC), self.settings.full_every_seconds):
            window = trailing_window(today, self.settings.full_days)
        else:
            window = trailing_window(today, self.settings.trailing_days)
        result = await self.reader.insights(
            account, window, expected_ads=len(objects.get("ads", [])), known_campaigns=known, counter=counter
        )
        parsed = []
        for raw in result.rows:
            try:
                parsed.append(parse_insight_row(raw, account.currency))
            except ValueError:
                logger.warning("skipping an insights row without ad id or date for %s", account_id,
                               extra={"account_id": account_id})
        rows = dedupe_rows(parsed)
        reach = await self.reader.window_reach(account, reach_windows(self.settings.reach_windows, today), counter)
        full = is_full(window, today, self.settings.full_days)
        async with self.pool.acquire() as conn, conn.transaction():
            await store.lock_account(conn, account_id)
            changed = await store.replace_insights(conn, account_id, window, list(rows.values()))
            reach_rows = await store.replace_window_reach(conn, account_id, reach)
            await store.mark_refreshed(conn, account_id, window, full=full)
            await enqueue(conn, InsightsUpdatedMessage.new(InsightsUpdated(
                account_id=account_id, level="ad", date_since=window.since, date_until=window.until,
                rows_changed=changed,
            )))
        kind = "full" if full else "trailing" if since is None else "manual"
        metrics.record_success(account_id, rows_changed=changed, graph_calls=counter.calls, kind=kind)
        logger.info(
            "insights refreshed for %s: %s..%s, %s rows, %s changed, %s window reach rows, %s Graph calls "
            "(%s, %s report runs, %s splits)",
            account_id, window.since, window.until, len(rows), changed, reach_rows, counter.calls, result.mode,
            result.report_runs, result.splits,
            extra={"account_id": account_id, "rows_changed": changed, "graph_calls": counter.calls},
        )
        return RefreshOutcome(account_id, window, len(rows), changed, counter.calls, result.mode, full,
                              reach_rows=reach_rows)

    # -- many accounts -----------------------------------------------------------------------------------------

    async def refresh_all(
        self, accounts: Sequence[str] | None = None, *, since: date | None = None, until: date | None = None
    ) -> list[RefreshOutcome]:
        """Refresh accounts side by side; one account failing (auth, permission, ...) never stops the others."""
        gate = asyncio.Semaphore(MAX_PARALLEL_ACCOUNTS)

        async def one(account_id: str) -> RefreshOutcome:
            async with gate:
                return await self._guarded(account_id, since, until)

        return list(await asyncio.gather(*(one(a) for a in (accounts or self.accounts))))

    async def _guarded(self, account_id: str, since: date | None, until: date | None) -> RefreshOutcome:
        try:
            return await self.refresh_account(account_id, since=since, until=until)
        except ThrottledError as exc:
            # Not a failure of the account: the client would have had to wait longer than it may. Try again then.
            metrics.REFRESHES.labels(account_id, "throttled").inc()
            logger.warning("insights refresh of %s throttled (scope %s); retrying in %.0fs", account_id, exc.scope,
                           exc.retry_after or 0.0, extra={"account_id": account_id})
            return RefreshOutcome(account_id, error=exc, retry_after=exc.retry_after)
        except GraphError as exc:
            metrics.REFRESHES.labels(account_id, "failed").inc()
            logger.error("insights refresh of %s failed: %s", account_id, exc, extra={"account_id": account_id})
            await self._alert(account_id, exc)
            return RefreshOutcome(account_id, error=exc)
        except Exception as exc:
            metrics.REFRESHES.labels(account_id, "failed").inc()
            logger.exception("insights refresh of %s failed", account_id, extra={"account_id": account_id})
            await self._alert(account_id, exc)
            return RefreshOutcome(account_id, error=exc)

    async def _alert(self, account_id: str, exc: BaseException) -> None:
        kind = type(exc).__name__
        now = time.monotonic()
        last = self._alerted.get((account_id, kind))
        if last is not None and now - last < ALERT_REPEAT_SECONDS:
            return
        self._alerted[(account_id, kind)] = now
        severity, fix = _alert_advice(exc)
        code = f" (code {exc.code}/{exc.subcode})" if isinstance(exc, GraphError) else ""
        alert = AlertRaised(
            severity=severity, code=ALERT_CODE, service=SERVICE, subject=account_id, fix=fix,
            summary=f"Insights refresh failed for ad account {account_id}: {kind}{code}; other accounts go on.",
        )
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await enqueue(conn, AlertRaisedMessage.new(alert))
        except Exception:
            logger.exception("could not enqueue the alert for %s", account_id, extra={"account_id": account_id})

    # -- schedule ----------------------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Refresh every account every INSIGHTS_INTERVAL_SECONDS (a throttled one as soon as it may call again)."""
        loop = asyncio.get_running_loop()
        due = dict.fromkeys(self.accounts, loop.time())
        interval = self.settings.interval_seconds
        while True:
            now = loop.time()
            ready = [account for account, at in due.items() if at <= now]
            if ready:
                for outcome in await self.refresh_all(ready):
                    wait = interval
                    if outcome.retry_after is not None:
                        wait = min(interval, max(1.0, outcome.retry_after))
                    due[outcome.account_id] = loop.time() + wait
            await asyncio.sleep(max(0.0, min(due.values()) - loop.time()))


def _alert_advice(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, AuthError):
        return "critical", "The access token is expired or revoked: issue a new system-user token (META_ACCESS_TOKEN)."
    if isinstance(exc, PermissionDeniedError):
        return "critical", ("The token lacks ads_read/ads_management on this ad account: grant the system user "
                            "access to the account in Business Manager.")
    if isinstance(exc, NotFoundError):
        return "critical", "The ad account id is wrong or no longer reachable: check META_AD_ACCOUNT_ID."
    return "warning", "Retried at the next refresh; if it persists, check the service logs for the Graph error."
