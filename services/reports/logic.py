"""The daily report as plain data: when it is due, the day's numbers per campaign and in total with the change
from the day before, what the rules did, what is stuck. No database, broker, HTTP or clock reads here.

Money is in the account currency's minor units (shared/money.py); costs per qualified lead and per signed case
count leads by the lead's date (a lead signed in March counts for the January day it came in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from shared.money import format_money
from shared.targets import Targets, target_state

WEEK = 7
CHART_DAYS = 14
MAX_RULE_ITEMS = 12  # decisions listed by name; the rest are counted

# ------------------------------------------------------------------------------------------------ schedule


def parse_time_of_day(text: str) -> time:
    """`08:00` -> time(8, 0); raises ValueError otherwise."""
    hours, _, minutes = text.strip().partition(":")
    if not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"not a time of day HH:MM: {text!r}")
    return time(int(hours), int(minutes))


def send_instant(report_day: date, zone: ZoneInfo, at: time) -> datetime:
    """When the report on `report_day` is due: `at` on the next day in `zone`, as a UTC instant.

    A wall time that a DST change skips (02:30 on a spring-forward night) is taken as the same wall time after the
    change, and one it repeats as its first occurrence, which is what `datetime.combine` with fold=0 gives.
    """
    local = datetime.combine(report_day + timedelta(days=1), at, tzinfo=zone)
    # Round-trip through UTC normalises a skipped wall time (02:30 -> 03:30 after spring-forward).
    return local.astimezone(UTC)


def due_report_day(now: datetime, zone: ZoneInfo, at: time) -> date:
    """The latest report day whose send time has passed at `now`: yesterday (in `zone`) once today's `at` went by,
    else the day before yesterday. A service down for days sends only this one, never a backlog."""
    today = now.astimezone(zone).date()
    yesterday = today - timedelta(days=1)
    return yesterday if now >= send_instant(yesterday, zone, at) else yesterday - timedelta(days=1)


def due_account_day(now: datetime, send_zone: ZoneInfo, account_zone: ZoneInfo, at: time) -> date:
    """The report day due at `now` when REPORT_TIME is read in `send_zone`: never a day not yet over in the
    account's zone (whose days Meta's insights count)."""
    return min(due_report_day(now, send_zone, at), now.astimezone(account_zone).date() - timedelta(days=1))


def next_send(now: datetime, zone: ZoneInfo, at: time) -> datetime:
    """The next send time after `now` (for the log)."""
    day = due_report_day(now, zone, at) + timedelta(days=1)
    return send_instant(day, zone, at)


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants a calendar day in `zone` runs between (23 or 25 hours on DST days)."""
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True)
class Delivery:
    """A channel's state for one report (report_deliveries)."""

    channel: str
    attempts: int = 0
    delivered: bool = False
    gave_up: bool = False
    next_attempt_at: datetime | None = None


def channels_to_send(channels: Iterable[str], deliveries: Mapping[str, Delivery], now: datetime) -> list[str]:
    """The channels still owed this report: not delivered, not given up, and past their back-off."""
    out = []
    for channel in channels:
        state = deliveries.get(channel)
        if state is None or (not state.delivered and not state.gave_up and (state.next_attempt_at is None
                                                              or state.next_attempt_at <= now)):
            out.append(channel)
    return out


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before trying a failed channel again: 1, 2, 4 ... minutes, at most an hour (or what Slack asked)."""
    delay = min(3600.0, 60.0 * 2 ** max(0, attempts - 1))
    return max(delay, retry_after or 0.0)


# ------------------------------------------------------------------------------------------------ numbers


@dataclass(frozen=True)
class Numbers:
    """One campaign (or the total) over one window."""

    spend_minor: int = 0
    impressions: int = 0
    meta_leads: int = 0  # leads as Meta counts them (paid only: Ads Manager's Results)
    leads: int = 0  # paid leads leadwire received, by lead date
    qualified: int = 0  # of those leads, by lead date
    signed: int = 0

    def __add__(self, other: Numbers) -> Numbers:
        return Numbers(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.spend_minor, self.impressions, self.meta_leads, self.leads, self.qualified, self.signed)

    @property
    def cpl(self) -> Decimal | None:
        return cost_per(self.spend_minor, self.meta_leads)

    @property
    def cost_per_qualified(self) -> Decimal | None:
        return cost_per(self.spend_minor, self.qualified)

    @property
    def cost_per_signed(self) -> Decimal | None:
        return cost_per(self.spend_minor, self.signed)


def cost_per(spend_minor: int, count: int) -> Decimal | None:
    """Spend per one of `count`, in minor units; None when there were none (no cost per nothing)."""
    return Decimal(spend_minor) / count if count > 0 else None


@dataclass(frozen=True)
class Windows:
    """A row's numbers: the report day and the 7 days ending on it, each beside the same window one day earlier."""

    day: Numbers = field(default_factory=Numbers)
    day_before: Numbers = field(default_factory=Numbers)
    week: Numbers = field(default_factory=Numbers)
    week_before: Numbers = field(default_factory=Numbers)

    def __add__(self, other: Windows) -> Windows:
        return Windows(self.day + other.day, self.day_before + other.day_before, self.week + other.week,
                       self.week_before + other.week_before)


@dataclass(frozen=True)
class CampaignRow:
    campaign_id: str
    name: str
    numbers: Windows


def windows_from_days(days: Mapping[date, Numbers], report_day: date) -> Windows:
    """Sum per-day numbers into the four windows ending on `report_day` (and on the day before)."""

    def total(last: date, length: int) -> Numbers:
        out = Numbers()
        for i in range(length):
            out = out + days.get(last - timedelta(days=i), Numbers())
        return out

    before = report_day - timedelta(days=1)
    return Windows(total(report_day, 1), total(before, 1), total(report_day, WEEK), total(before, WEEK))


def campaign_rows(spend: Iterable[Mapping[str, Any]], leads: Iterable[Mapping[str, Any]],
                  report_day: date) -> list[CampaignRow]:
    """Rows per campaign from Meta's daily numbers (`date, campaign_id, campaign_name, spend_minor, impressions,
    leads`) and the received paid leads per lead day (`day, campaign_id, leads, qualified, signed`), largest
    7-day spend first. A campaign with leads but no spend (its numbers not read yet) still gets a row."""
    per_day: dict[str, dict[date, Numbers]] = {}
    names: dict[str, str] = {}
    for row in spend:
        cid = str(row["campaign_id"])
        names[cid] = str(row.get("campaign_name") or names.get(cid) or cid)
        days = per_day.setdefault(cid, {})
        days[row["date"]] = days.get(row["date"], Numbers()) + Numbers(
            spend_minor=int(row["spend_minor"]), impressions=int(row.get("impressions") or 0),
            meta_leads=int(row["leads"]))
    for row in leads:
        cid = row.get("campaign_id")
        if cid is None:
            continue
        cid = str(cid)
        names.setdefault(cid, str(row.get("campaign_name") or cid))
        days = per_day.setdefault(cid, {})
        days[row["day"]] = days.get(row["day"], Numbers()) + Numbers(
            leads=int(row["leads"]), qualified=int(row["qualified"]), signed=int(row["signed"]))
    rows = [CampaignRow(cid, names[cid], windows_from_days(days, report_day)) for cid, days in per_day.items()]
    rows = [r for r in rows if r.numbers.week != Numbers() or r.numbers.week_before != Numbers()]
    rows.sort(key=lambda r: (-r.numbers.week.spend_minor, -r.numbers.week.leads, r.name))
    return rows


def total_row(rows: Iterable[CampaignRow]) -> Windows:
    out = Windows()
    for row in rows:
        out = out + row.numbers
    return out


def daily_series(spend: Iterable[Mapping[str, Any]], report_day: date,
                 days: int = CHART_DAYS) -> list[tuple[date, int, int]]:
    """(day, spend, Meta's leads) for the `days` days ending on `report_day`, every day present (0 when none)."""
    sums: dict[date, list[int]] = {}
    for row in spend:
        bucket = sums.setdefault(row["date"], [0, 0])
        bucket[0] += int(row["spend_minor"])
        bucket[1] += int(row["leads"])
    first = report_day - timedelta(days=days - 1)
    return [(d, *sums.get(d, [0, 0])) for d in (first + timedelta(days=i) for i in range(days))]  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ rules, stuck


@dataclass(frozen=True)
class RuleItem:
    """One rule on one object that day: what it did (or would have done) and its last explanation."""

    rule: str
    entity_name: str
    entity_level: str
    outcome: str  # acted | would_act
    times: int
    explanation: str


@dataclass(frozen=True)
class RulesSummary:
    """Rule-on-object pairs per outcome on the report day and the day before, and the acted / would-act items."""

    day: Mapping[str, int]
    day_before: Mapping[str, int]
    items: list[RuleItem]
    more: int = 0


def rules_summary(day_counts: Iterable[Mapping[str, Any]], before_counts: Iterable[Mapping[str, Any]],
                  items: Iterable[Mapping[str, Any]]) -> RulesSummary:
    def counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
        out = {"acted": 0, "would_act": 0, "skipped": 0}
        for row in rows:
            out[str(row["outcome"])] = int(row["pairs"])
        return out

    ordered = sorted(items, key=lambda r: (r["outcome"] != "acted", str(r["rule"]), str(r["entity_name"])))
    listed = [RuleItem(str(r["rule"]), str(r["entity_name"]), str(r["entity_level"]), str(r["outcome"]),
                       int(r["times"]), str(r["explanation"])) for r in ordered[:MAX_RULE_ITEMS]]
    return RulesSummary(counts(day_counts), counts(before_counts), listed, max(0, len(ordered) - MAX_RULE_ITEMS))


STUCK_LABELS = {
    "parked": "Messages parked (not processed, waiting for an operator)",
    "crm_failed": "CRM deliveries given up",
    "crm_open": "CRM deliveries still retrying",
    "capi_rejected_24h": "Conversions API events rejected by Meta (24 h)",
    "lead_alerts_24h": "Lead-access alerts (24 h)",
    "outbox_backlog": "Messages waiting to be sent (older than 1 min)",
    "open_breakers": "Rules stopped by their circuit breaker",
}


@dataclass(frozen=True)
class Stuck:
    """What is stuck or broken now (counts), the same counts at the previous report, and the open alerts."""

    counts: Mapping[str, int | None]
    previous: Mapping[str, int | None] | None
    parked_by_queue: Mapping[str, int]
    alerts: list[tuple[str, str, str]]  # (kind, subject, detail): no lead data, ever

    def snapshot(self) -> dict[str, int | None]:
        return dict(self.counts)


def stuck_counts(health: Mapping[str, Any], parked: Mapping[str, int] | None,
                 alerts: Iterable[Mapping[str, Any]]) -> dict[str, int | None]:
    """The counts the report shows, from console_health, the parking queues (None: RabbitMQ not readable) and
    report_open_alerts."""
    alert_rows = list(alerts)
    return {
        "parked": sum(parked.values()) if parked is not None else None,
        "crm_failed": int(health.get("crm_failed") or 0),
        "crm_open": int(health.get("crm_open") or 0),
        "capi_rejected_24h": int(health.get("capi_rejected_24h") or 0),
        "lead_alerts_24h": int(health.get("lead_alerts_24h") or 0),
        "outbox_backlog": int(health.get("outbox_backlog") or 0),
        "open_breakers": sum(1 for a in alert_rows if a["kind"] == "rule_breaker"),
    }


# ------------------------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class DailyReport:
    account_id: str
    account_name: str
    currency: str
    zone: str
    day: date
    rows: list[CampaignRow]
    total: Windows
    organic: Windows  # organic leads (no ad: Meta does not count them), every Page
    rules: RulesSummary
    stuck: Stuck
    series: list[tuple[date, int, int]]
    test: Windows = field(default_factory=Windows)  # Meta's test leads (Lead Ads Testing Tool), every Page
    targets: Targets = field(default_factory=Targets)  # this account's (shared/targets.py), major units
    unjudged: str = ""  # why the costs are not judged although CONSOLE_TARGET_* are set (another currency)

    @property
    def week_first(self) -> date:
        return self.day - timedelta(days=WEEK - 1)

    def money(self, minor: int | Decimal | None) -> str:
        return "—" if minor is None else format_money(round(minor), self.currency)

    def judge(self, cost_minor: Decimal | None, target: str) -> str:
        """ok / warn / bad against this account's `target` (cpl, per_qualified, per_signed); "" without one."""
        return target_state(cost_minor, getattr(self.targets, target), self.currency)


def change(now: int | Decimal | None, before: int | Decimal | None) -> str:
    """The change from the day before, in words short enough for a table cell: `+12%`, `−3%`, `=`, `new`, ``."""
    if now is None and before is None:
        return ""
    if before is None or before == 0:
        return "" if not now else "new"
    if now is None:
        return "gone"
    pct = (Decimal(now) - Decimal(before)) * 100 / Decimal(before)
    if abs(pct) < Decimal("0.5"):
        return "="
    return f"+{pct:.0f}%" if pct > 0 else f"−{abs(pct):.0f}%"


def count_change(now: int | None, before: int | None) -> str:
    """For counts of problems: `+2`, `−1`, `=` (absolute: 1 → 3 parked is +2, not +200%)."""
    if now is None or before is None:
        return ""
    diff = now - before
    return "=" if diff == 0 else (f"+{diff}" if diff > 0 else f"−{-diff}")
