"""Everything the insights poller asks the Graph API, through the shared client only.

Pacing, throttle blocks (including the `X-FB-Ads-Insights-Throttle` header), retries and typed errors are the
client's job; this module decides *what* to ask: the account, its objects, and insights either in one
synchronous paged read (small windows) or as async report runs (large ones) that are split when they fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from services.insights_poller import metrics
from services.insights_poller.logic import (
    ACCOUNT_FIELDS,
    AD_FIELDS,
    ADSET_FIELDS,
    CAMPAIGN_FIELDS,
    INSIGHTS_FIELDS,
    REACH_FIELDS,
    REACH_LEVELS,
    AccountInfo,
    Slice,
    Window,
    WindowReach,
    parse_account,
    parse_reach_row,
    split_slice,
)
from shared.graph import (
    AsyncJobFailedError,
    AsyncJobSkippedError,
    GraphError,
    Scope,
    ThrottledError,
    TooMuchDataError,
    TransientError,
)
from shared.graph.insights_jobs import check_status, poll_report_runs, start_report_run
from shared.graph.paging import paginate_pages

if TYPE_CHECKING:
    from services.insights_poller.settings import InsightsSettings
    from shared.graph import GraphClient

logger = logging.getLogger(__name__)

# Async failures that mean "this query is too big": split at once instead of retrying it as is (docs/meta-api.md §9.5).
_TOO_MUCH_DATA = {(100, 1487534), (100, 1504018), (2, 1504038)}
# Bounds so a pathological account cannot loop forever.
MAX_REPORT_RUNS_PER_REFRESH = 400
MAX_SKIPS_PER_SLICE = 5
POLL_MAX_SECONDS = 30.0
# Campaigns can get conversions attributed up to 28 days after their last delivery (docs/meta-api.md §9.5): discover the
# campaigns a window can contain over the window plus that look-back.
DISCOVERY_LOOKBACK_DAYS = 28


@dataclass
class CallCounter:
    """Graph calls one refresh made, as Meta counts them (each batch item and each page is one call)."""

    calls: int = 0

    def add(self, n: int = 1) -> None:
        self.calls += n


@dataclass
class _Job:
    piece: Slice
    failures: int = 0
    skips: int = 0
    started: float = 0.0


@dataclass
class InsightsResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "sync"  # sync | async
    report_runs: int = 0
    splits: int = 0


class InsightsReader:
    """Reads one ad account's metadata, objects, daily ad-level insights and window reach."""

    def __init__(self, graph: GraphClient, settings: InsightsSettings) -> None:
        self.graph = graph
        self.settings = settings

    # -- account and objects ---------------------------------------------------------------------------------

    async def account(self, account_id: str, counter: CallCounter) -> AccountInfo:
        counter.add()
        body = await self.graph.get(account_id, {"fields": ACCOUNT_FIELDS})
        return parse_account(account_id, body)

    async def objects(self, account_id: str, counter: CallCounter) -> dict[str, list[dict[str, Any]]]:
        """Campaigns, ad sets and ads of the account (Meta's default listing: not deleted or archived)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for edge, fields in (("campaigns", CAMPAIGN_FIELDS), ("adsets", ADSET_FIELDS), ("ads", AD_FIELDS)):
            out[edge] = await self._collect(f"{account_id}/{edge}", {"fields": fields}, counter, account_id)
        return out

    async def _collect(
        self, path: str, params: Mapping[str, Any], counter: CallCounter, account_id: str, buc: str | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        scope = Scope.ad_account(account_id, buc)
        async for page in paginate_pages(self.graph, path, {**params, "limit": self.settings.page_size},
                                         scope=scope):
            counter.add()
            data = page.get("data") if isinstance(page, Mapping) else None
            if isinstance(data, list):
                items.extend(item for item in data if isinstance(item, dict))
        return items

    # -- insights ----------------------------------------------------------------------------------------------

    def _params(self, window: Window) -> dict[str, Any]:
        return {
            "level": "ad",
            "time_increment": 1,
            "time_range": window.time_range(),
            "fields": ",".join(INSIGHTS_FIELDS),
        }

    async def insights(
        self,
        account: AccountInfo,
        window: Window,
        *,
        expected_ads: int,
        known_campaigns: Iterable[str],
        counter: CallCounter,
    ) -> InsightsResult:
        """Every ad-level daily row of `window`: synchronous when small, else async report runs."""
        if expected_ads * window.days <= self.settings.sync_max_rows:
            try:
                rows = await self._collect(
                    f"{account.account_id}/insights", self._params(window), counter, account.account_id,
                    "ads_insights",
                )
                return InsightsResult(rows=rows, mode="sync")
            except TooMuchDataError:
                # Meta has no documented size threshold; a sync read that is too big goes async (docs/meta-api.md §9.5).
                logger.info("insights sync read too big for %s; using report runs", account.account_id,
                            extra={"account_id": account.account_id})
        return await self._read_async(account.account_id, window, list(known_campaigns), counter)

    async def window_reach(
        self, account: AccountInfo, windows: Mapping[str, Window], counter: CallCounter
    ) -> list[WindowReach]:
        """Deduplicated reach per ad set, campaign and ad over each whole window: one sync read per level and
        window (paged), one row per object with delivery. A window too big to read synchronously is left out
        (the rules then fall back to summed daily reach for it); other errors propagate like any insights read."""
        out: list[WindowReach] = []
        account_id = account.account_id
        for label, window in windows.items():
            for level in REACH_LEVELS:
                # No time_increment: Meta's default (all_days) is one row per object for the whole range.
                params = {"level": level, "time_range": window.time_range(), "fields": REACH_FIELDS[level]}
                try:
                    rows = await self._collect(f"{account_id}/insights", params, counter, account_id,
                                               "ads_insights")
                except TooMuchDataError:
                    logger.warning("window reach %s at %s level too big to read for %s; skipped", label, level,
                                   account_id, extra={"account_id": account_id})
                    continue
                for raw in rows:
                    try:
                        out.append(parse_reach_row(raw, level, label, window))
                    except ValueError:
                        logger.warning("skipping a window reach row without %s id for %s", level, account_id,
                                       extra={"account_id": account_id})
        return out

    async def _read_async(
        self, account_id: str, window: Window, known_campaigns: list[str], counter: CallCounter
    ) -> InsightsResult:
        result = InsightsResult(mode="async")
        pending: deque[_Job] = deque([_Job(Slice(window))])
        running: dict[str, _Job] = {}
        loop = asyncio.get_running_loop()
        delay = self.settings.poll_seconds
        scope = Scope.ad_account(account_id, "ads_insights")
        while pending or running:
            started_any = False
            while pending and len(running) < self.settings.max_jobs_in_flight:
                job = pending.popleft()
                if result.report_runs >= MAX_REPORT_RUNS_PER_REFRESH:
                    raise GraphError(f"insights refresh of {account_id} needed more than "
                                     f"{MAX_REPORT_RUNS_PER_REFRESH} report runs")
                params = self._params(job.piece.window)
                if (filtering := job.piece.filtering()) is not None:
                    params["filtering"] = filtering
                counter.add()
                try:
                    run_id = await start_report_run(self.graph, account_id, params, scope=scope)
                except TooMuchDataError as exc:
                    # Refused up front (too much data): the same medicine as a run that failed for it.
                    job.failures += 1
                    pending.extend(await self._after_failure(account_id, job, exc, known_campaigns, counter))
                    continue
                result.report_runs += 1
                job.started = loop.time()
                running[run_id] = job
                started_any = True
                logger.debug("report run %s started for %s (%s)", run_id, account_id, job.piece.describe(),
                             extra={"account_id": account_id, "report_run_id": run_id})
            if not running:
                continue  # every start was refused and split: start the pieces before waiting
            if started_any:
                delay = self.settings.poll_seconds
            await asyncio.sleep(delay)
            delay = min(POLL_MAX_SECONDS, delay * 1.5)
            ids = list(running)
            counter.add(len(ids))
            statuses = await poll_report_runs(self.graph, ids, scope=scope)
            for run_id in ids:
                job = running[run_id]
                status = statuses.get(run_id)
                if isinstance(status, AsyncJobSkippedError):
                    del running[run_id]
                    metrics.REPORT_RUNS.labels("skipped").inc()
                    job.skips += 1
                    if job.skips > MAX_SKIPS_PER_SLICE:
                        raise status
                    pending.append(job)  # Job Skipped: resubmit the same query (docs/meta-api.md §9.4)
                elif isinstance(status, AsyncJobFailedError):
                    del running[run_id]
                    metrics.REPORT_RUNS.labels("failed").inc()
                    children = await self._after_failure(account_id, job, status, known_campaigns, counter)
                    if len(children) > 1:
                        result.splits += 1
                        metrics.REPORT_RUNS.labels("split").inc()
                    pending.extend(children)
                elif isinstance(status, ThrottledError | TransientError) or status is None:
                    continue  # the client paces the next poll; keep the run
                elif isinstance(status, GraphError):
                    raise status
                elif check_status(run_id, status):
                    del running[run_id]
                    metrics.REPORT_RUNS.labels("completed").inc()
                    result.rows.extend(await self._collect(f"{run_id}/insights", {}, counter, account_id,
                                                           "ads_insights"))
                elif loop.time() - job.started > self.settings.job_timeout_seconds:
                    del running[run_id]
                    logger.warning("report run %s of %s timed out; splitting", run_id, account_id,
                                   extra={"account_id": account_id, "report_run_id": run_id})
                    timeout = AsyncJobFailedError("report run timed out", report_run_id=run_id)
                    job.failures += 1  # a slow run is split, not retried as is
                    pending.extend(await self._after_failure(account_id, job, timeout, known_campaigns, counter))
        return result

    async def _after_failure(
        self,
        account_id: str,
        job: _Job,
        error: GraphError,
        known_campaigns: list[str],
        counter: CallCounter,
    ) -> list[_Job]:
        """Retry a run once as is (`-2`: "retry later"), split it at once when it asked for too much data."""
        too_much = (error.code, error.subcode) in _TOO_MUCH_DATA
        logger.info(
            "report run %s of %s failed (code=%s subcode=%s, %s)", getattr(error, "report_run_id", None),
            account_id, error.code,
            error.subcode, job.piece.describe(), extra={"account_id": account_id},
        )
        if not too_much and job.failures == 0:
            return [_Job(job.piece, failures=1, skips=job.skips)]
        known: list[str] | None = None
        if job.piece.campaign_ids is None:
            known = sorted(set(known_campaigns) | set(await self._discover_campaigns(account_id, job.piece.window,
                                                                                     counter)))
        children = split_slice(job.piece, known)
        if not children:
            raise error  # one campaign, one day, and still failing: nothing smaller to ask
        return [_Job(child) for child in children]

    async def _discover_campaigns(self, account_id: str, window: Window, counter: CallCounter) -> list[str]:
        """Campaigns with insights in the window (plus the attribution look-back): one small sync read."""
        lookback = Window(window.since - timedelta(days=DISCOVERY_LOOKBACK_DAYS), window.until)
        params = {"level": "campaign", "fields": "campaign_id", "time_range": lookback.time_range()}
        try:
            rows = await self._collect(f"{account_id}/insights", params, counter, account_id, "ads_insights")
        except TooMuchDataError:
            logger.warning("campaign discovery too big for %s; splitting over known campaigns only", account_id,
                           extra={"account_id": account_id})
            return []
        return [str(r["campaign_id"]) for r in rows if r.get("campaign_id")]
