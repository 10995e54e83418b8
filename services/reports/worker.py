"""The daily report: read the numbers (store), put them together (logic), draw (chart), write (render), send
(shared.notify) and record which channel got it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
from aiormq.exceptions import AMQPError

from services.reports import chart, logic, render, store
from services.reports.settings import ReportSettings
from shared.notify import ChannelError, post_slack, send_email
from shared.parked import read_counts
from shared.settings import CrmOutcomeSettings, NotifySettings
from shared.targets import TargetBook

logger = logging.getLogger(__name__)


class NoAccountError(LookupError):
    """No ad account (or not the one asked for) is known yet: the insights poller has not stored it."""


@dataclass
class Worker:
    pool: asyncpg.Pool
    config: ReportSettings
    notify: NotifySettings
    outcomes: CrmOutcomeSettings
    amqp_url: str  # secret: never logged
    targets: TargetBook = field(default_factory=TargetBook)  # each account's cost targets

    @staticmethod
    def zone(account: dict[str, Any]) -> ZoneInfo:
        """The account's zone: Meta's insights days are days there, so the report's days are too."""
        return ZoneInfo(account["timezone_name"] or "UTC")

    def send_zone(self, account: dict[str, Any]) -> ZoneInfo:
        """Where REPORT_TIME is read: REPORT_TIMEZONE, else the account's zone."""
        return ZoneInfo(self.config.timezone) if self.config.timezone else self.zone(account)

    # -------------------------------------------------------------------------------------------- build

    async def build(self, account_id: str | None = None, day: date | None = None, *,
                    parked: dict[str, int] | None = None) -> list[logic.DailyReport]:
        """One report per ad account (or `account_id`) on `day` (default: yesterday in each account's zone)."""
        found = await store.accounts(self.pool, account_id)
        if not found:
            raise NoAccountError(account_id or "no ad account stored yet")
        now = await store.now(self.pool)
        if parked is None:
            parked = await self.parked()
        reports = []
        for account in found:
            zone = self.zone(account)
            reports.append(await self.build_one(account, day or now.astimezone(zone).date() - timedelta(days=1),
                                                parked))
        return reports

    async def build_one(self, account: dict[str, Any], day: date,
                        parked: dict[str, int] | None) -> logic.DailyReport:
        zone = self.zone(account)
        account_id = account["account_id"]
        first = day - timedelta(days=logic.CHART_DAYS - 1)  # the chart's 14 days cover both 7-day windows
        spend = await store.spend_days(self.pool, account_id, first, day)
        week_start, _ = logic.day_bounds(day - timedelta(days=logic.WEEK), zone)
        _, day_end = logic.day_bounds(day, zone)
        leads = await store.lead_days(self.pool, account_id, week_start, day_end, zone.key,
                                      self.outcomes.qualified_events, self.outcomes.signed_events)
        paid = [r for r in leads if not r["is_organic"]]
        unpaid: dict[bool, dict[date, logic.Numbers]] = {False: {}, True: {}}  # is_test -> day -> numbers
        for r in leads:
            if r["is_organic"]:
                days = unpaid[bool(r["is_test"])]
                days[r["day"]] = days.get(r["day"], logic.Numbers()) + logic.Numbers(
                    leads=r["leads"], qualified=r["qualified"], signed=r["signed"])
        rows = logic.campaign_rows(spend, paid, day)
        day_start, _ = logic.day_bounds(day, zone)
        before_start, _ = logic.day_bounds(day - timedelta(days=1), zone)
        rules = logic.rules_summary(
            await store.rule_counts(self.pool, account_id, day_start, day_end),
            await store.rule_counts(self.pool, account_id, before_start, day_start),
            await store.rule_items(self.pool, account_id, day_start, day_end),
        )
        alerts = await store.open_alerts(self.pool)
        counts = logic.stuck_counts(await store.health(self.pool), parked, alerts)
        stuck = logic.Stuck(
            counts=counts,
            previous=await store.snapshot(self.pool, account_id, day - timedelta(days=1)),
            parked_by_queue=parked or {},
            alerts=[(str(a["kind"]), str(a["subject"]), str(a["detail"] or "")) for a in alerts],
        )
        return logic.DailyReport(
            account_id=account_id, account_name=account["name"], currency=account["currency"], zone=zone.key,
            day=day, rows=rows, total=logic.total_row(rows), organic=logic.windows_from_days(unpaid[False], day),
            test=logic.windows_from_days(unpaid[True], day),
            rules=rules, stuck=stuck, series=logic.daily_series(spend, day),
            targets=self.targets.for_account(account_id, account["currency"]),
            unjudged=self.targets.unjudged(account_id, account["currency"]),
        )

    async def parked(self) -> dict[str, int] | None:
        """Parked messages per consumer, or None when RabbitMQ cannot be read (the report says "unknown")."""
        try:
            return await asyncio.wait_for(read_counts(self.amqp_url), timeout=10)
        except (OSError, TimeoutError, AMQPError, aio_pika.exceptions.AMQPException) as exc:
            logger.warning("report: cannot count parked messages: %s", type(exc).__name__)
            return None

    # -------------------------------------------------------------------------------------------- send

    def channels(self) -> list[str]:
        """The channels asked for that have settings (Slack needs SLACK_WEBHOOK_URL; e-mail SMTP_HOST and a
        recipient)."""
        ready = {"slack": self.notify.slack_enabled, "email": self.notify.email_enabled and bool(self.recipients())}
        return [channel for channel in self.config.channels if ready.get(channel)]

    def recipients(self) -> list[str]:
        return list(self.config.email_to or self.notify.notify_email_to)

    async def send(self, report: logic.DailyReport, channel: str) -> None:
        """One channel; raises `ChannelError`."""
        if channel == "slack":
            await post_slack(self.notify, render.slack(report))
        elif channel == "email":
            png = await asyncio.to_thread(chart.render, report.series, report.currency)
            message = render.email(report, sender=self.notify.smtp_from, recipients=self.recipients(),
                                   chart_png=png)
            await send_email(self.notify, message)
        else:
            raise ValueError(f"unknown channel {channel!r}")

    async def send_all(self, report: logic.DailyReport, channels: Sequence[str]) -> dict[str, ChannelError | None]:
        results: dict[str, ChannelError | None] = {}
        for channel in channels:
            try:
                await self.send(report, channel)
                results[channel] = None
            except ChannelError as exc:
                results[channel] = exc
        return results

    # -------------------------------------------------------------------------------------------- schedule

    async def run_due(self) -> int:
        """Send every report whose time has come and that a channel still owes; returns how many were sent."""
        channels = self.channels()
        if not channels:
            return 0
        at = logic.parse_time_of_day(self.config.time)
        now = await store.now(self.pool)
        sent = 0
        parked: dict[str, int] | None = None
        read_parked_yet = False
        for account in await store.accounts(self.pool):
            day = logic.due_account_day(now, self.send_zone(account), self.zone(account), at)
            owed = logic.channels_to_send(channels, await store.deliveries(self.pool, account["account_id"], day),
                                          now)
            if not owed:
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                if not await store.try_lock(conn, account["account_id"], day):
                    continue  # another copy is sending it
                owed = logic.channels_to_send(
                    channels, await store.deliveries(self.pool, account["account_id"], day), now)
                if not owed:
                    continue
                if not read_parked_yet:
                    parked, read_parked_yet = await self.parked(), True
                report = await self.build_one(account, day, parked)
                await store.save_snapshot(self.pool, report.account_id, day, report.stuck.snapshot())
                for channel, error in (await self.send_all(report, owed)).items():
                    await self._record(report, channel, error)
                sent += 1
        return sent

    async def _record(self, report: logic.DailyReport, channel: str, error: ChannelError | None) -> None:
        if error is None:
            await store.record_delivery(self.pool, report.account_id, report.day, channel, error=None)
            logger.info("report: daily report sent", extra={"account_id": report.account_id,
                                                           "report_date": report.day.isoformat(), "channel": channel})
            return
        previous = (await store.deliveries(self.pool, report.account_id, report.day)).get(channel)
        attempts = (previous.attempts if previous else 0) + 1
        delay = logic.retry_delay(attempts, error.retry_after)
        await store.record_delivery(self.pool, report.account_id, report.day, channel, error=str(error)[:300],
                                    gave_up=error.permanent, retry_in=delay)
        logger.warning("report: sending failed: %s", error, extra={
            "account_id": report.account_id, "report_date": report.day.isoformat(), "channel": channel,
            "permanent": error.permanent, "retry_in_s": None if error.permanent else delay})

    async def run_forever(self) -> None:
        at = logic.parse_time_of_day(self.config.time)
        logger.info("report: daily report at %s in each ad account's time zone%s, to %s", at.strftime("%H:%M"),
                    f" ({self.config.timezone})" if self.config.timezone else "", ", ".join(self.channels()) or
                    "no configured channel (set SLACK_WEBHOOK_URL or SMTP_HOST and NOTIFY_EMAIL_TO)")
        while True:
            try:
                await self.run_due()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("report: check failed, trying again later: %s", type(exc).__name__)
            except Exception:  # a bug must not end the daily report for good: logged, tried again next check
                logger.exception("report: check failed")
            await asyncio.sleep(self.config.check_seconds)

