"""Plain logic of the insights poller: money, leads, windows, report-run slices, row parsing and window reach.

No I/O here: everything takes values and returns values, so it is tested without Graph, broker or database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from shared.money import offset as currency_offset

# Lead counting, defined here and nowhere else (docs/meta-api.md §9.3). `lead` already counts every lead, on-Meta
# (Instant Forms, Messenger) and website (pixel / CAPI), so it is never added to its components. Only when a row
# has no `lead` action do we add the components: on-Meta leads (`onsite_conversion.lead_grouped`, or its alias
# `leadgen_grouped` - the same leads under another name, so never both) plus `offsite_conversion.fb_pixel_lead`.
LEAD_ACTION_TYPE = "lead"
ON_META_LEAD_ACTION_TYPES: tuple[str, ...] = ("onsite_conversion.lead_grouped", "leadgen_grouped")
PIXEL_LEAD_ACTION_TYPE = "offsite_conversion.fb_pixel_lead"

# Fields read at level=ad, daily. No `action_attribution_windows`: Meta's default (the ad set's attribution
# setting) is what Ads Manager shows; 7d_view/28d_view are no longer returned (docs/meta-api.md §9.2).
METRIC_FIELDS: tuple[str, ...] = (
    "spend", "impressions", "reach", "clicks", "ctr", "cpc", "cpm", "frequency",
    "actions", "action_values", "cost_per_action_type",
)
ID_FIELDS: tuple[str, ...] = (
    "account_id", "campaign_id", "campaign_name", "adset_id", "adset_name", "ad_id", "ad_name",
    "date_start", "date_stop", "account_currency",
)
INSIGHTS_FIELDS: tuple[str, ...] = ID_FIELDS + METRIC_FIELDS

CAMPAIGN_FIELDS = ("id,name,objective,status,effective_status,daily_budget,lifetime_budget,bid_strategy,"
                   "created_time,updated_time")
ADSET_FIELDS = ("id,name,campaign_id,status,effective_status,daily_budget,lifetime_budget,bid_strategy,"
                "bid_amount,optimization_goal,billing_event,created_time,updated_time")
AD_FIELDS = "id,name,campaign_id,adset_id,status,effective_status,created_time,updated_time"
ACCOUNT_FIELDS = "id,name,currency,timezone_name,account_status"


# ---------------------------------------------------------------------------------------------------- money


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def major_to_minor(value: Any, offset: int) -> int:
    """Insights money ("12.34" in major units) to integer minor units, rounded half up; missing = 0."""
    number = _decimal(value)
    if number is None:
        return 0
    return int((number * offset).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def minor_or_none(value: Any) -> int | None:
    """Object money (budgets, bids): Meta already returns minor units, as numeric strings (docs/meta-api.md §11.1)."""
    number = _decimal(value)
    if number is None or number <= 0:
        return None
    return int(number)


def decimal_or_none(value: Any) -> Decimal | None:
    return _decimal(value)


def int_or_zero(value: Any) -> int:
    number = _decimal(value)
    return int(number) if number is not None else 0


# ---------------------------------------------------------------------------------------------------- leads


def action_map(actions: Any) -> dict[str, Decimal]:
    """Meta's `[{"action_type": ..., "value": "3"}]` as {action_type: value}. Unknown shapes are skipped."""
    out: dict[str, Decimal] = {}
    if not isinstance(actions, list):
        return out
    for item in actions:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("action_type")
        value = _decimal(item.get("value"))
        if isinstance(kind, str) and value is not None:
            out[kind] = out.get(kind, Decimal(0)) + value
    return out


def count_leads(actions: Mapping[str, Decimal]) -> int:
    """Leads in one insights row, from its `actions` (see LEAD_ACTION_TYPE above for the rule)."""
    if LEAD_ACTION_TYPE in actions:
        return int(actions[LEAD_ACTION_TYPE])
    on_meta = next((actions[t] for t in ON_META_LEAD_ACTION_TYPES if t in actions), Decimal(0))
    return int(on_meta + actions.get(PIXEL_LEAD_ACTION_TYPE, Decimal(0)))


# ---------------------------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """Inclusive range of days in the ad account's time zone."""

    since: date
    until: date

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    def time_range(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.since <= day <= self.until


def trailing_window(today: date, days: int) -> Window:
    """The last `days` days, today included."""
    return Window(today - timedelta(days=max(1, days) - 1), today)


def is_full(window: Window, today: date, full_days: int) -> bool:
    """True when `window` covers the whole restatement window ending today."""
    return window.since <= today - timedelta(days=full_days - 1) and window.until >= today


def full_refresh_due(last_full: datetime | None, now: datetime, every_seconds: float) -> bool:
    return last_full is None or (now - last_full).total_seconds() >= every_seconds


# ---------------------------------------------------------------------------------------------------- slices


@dataclass(frozen=True)
class Slice:
    """What one async report run covers: a date window and the campaigns it filters on (None = all)."""

    window: Window
    campaign_ids: tuple[str, ...] | None = None

    def filtering(self) -> list[dict[str, Any]] | None:
        if self.campaign_ids is None:
            return None
        return [{"field": "campaign.id", "operator": "IN", "value": list(self.campaign_ids)}]

    def describe(self) -> str:
        who = "all campaigns" if self.campaign_ids is None else f"{len(self.campaign_ids)} campaigns"
        return f"{self.window.since}..{self.window.until} {who}"


def split_slice(piece: Slice, known_campaigns: Sequence[str] | None = None) -> list[Slice]:
    """Halve a failing slice: first its campaign list, then its date range. [] when it cannot shrink.

    Args:
        known_campaigns: for a slice over all campaigns, the campaign ids that can have data in its window
            (discovered by the caller); with two or more, the split is over them.
    """
    ids = piece.campaign_ids
    if ids is None and known_campaigns is not None and len(known_campaigns) >= 1:
        ids = tuple(sorted(set(known_campaigns)))
        if len(ids) == 1:
            # Filtering on the single campaign does not shrink the query; go straight to dates.
            return split_slice(Slice(piece.window, ids))
    if ids is not None and len(ids) >= 2:
        middle = len(ids) // 2
        return [Slice(piece.window, ids[:middle]), Slice(piece.window, ids[middle:])]
    window = piece.window
    if window.days >= 2:
        middle = window.since + timedelta(days=window.days // 2 - 1)
        return [Slice(Window(window.since, middle), ids), Slice(Window(middle + timedelta(days=1), window.until), ids)]
    return []


# ---------------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class InsightRow:
    """One ad on one day, ready to store (money in minor units)."""

    ad_id: str
    day: date
    campaign_id: str
    adset_id: str
    campaign_name: str | None
    adset_name: str | None
    ad_name: str | None
    currency: str
    spend_minor: int
    impressions: int
    reach: int
    clicks: int
    ctr: Decimal | None
    cpc: Decimal | None
    cpm: Decimal | None
    frequency: Decimal | None
    leads: int
    actions: dict[str, float]
    action_values: dict[str, int]
    cost_per_action_type: dict[str, float]

    @property
    def key(self) -> tuple[str, date]:
        return self.ad_id, self.day


def parse_insight_row(row: Mapping[str, Any], currency: str) -> InsightRow:
    """One Graph insights row (level=ad, time_increment=1) as an InsightRow.

    Raises:
        ValueError: the row lacks its ad id or date (it cannot be stored).
    """
    ad_id = row.get("ad_id")
    start = row.get("date_start")
    if not isinstance(ad_id, str) or not ad_id or not isinstance(start, str):
        raise ValueError("insights row without ad_id or date_start")
    row_currency = str(row.get("account_currency") or currency)
    offset = currency_offset(row_currency)
    actions = action_map(row.get("actions"))
    values = action_map(row.get("action_values"))
    costs = action_map(row.get("cost_per_action_type"))
    return InsightRow(
        ad_id=ad_id,
        day=date.fromisoformat(start),
        campaign_id=str(row.get("campaign_id") or ""),
        adset_id=str(row.get("adset_id") or ""),
        campaign_name=_str_or_none(row.get("campaign_name")),
        adset_name=_str_or_none(row.get("adset_name")),
        ad_name=_str_or_none(row.get("ad_name")),
        currency=row_currency,
        spend_minor=major_to_minor(row.get("spend"), offset),
        impressions=int_or_zero(row.get("impressions")),
        reach=int_or_zero(row.get("reach")),
        clicks=int_or_zero(row.get("clicks")),
        ctr=decimal_or_none(row.get("ctr")),
        cpc=decimal_or_none(row.get("cpc")),
        cpm=decimal_or_none(row.get("cpm")),
        frequency=decimal_or_none(row.get("frequency")),
        leads=count_leads(actions),
        actions={k: float(v) for k, v in actions.items()},
        action_values={k: major_to_minor(v, offset) for k, v in values.items()},
        cost_per_action_type={k: float(v) for k, v in costs.items()},
    )


def dedupe_rows(rows: Iterable[InsightRow]) -> dict[tuple[str, date], InsightRow]:
    """Rows by (ad_id, day); a later duplicate (e.g. an overlapping retried slice) replaces the earlier one."""
    return {row.key: row for row in rows}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------------------- window reach

# Reach is unique people, so it does not add up over days: Meta deduplicates it only over the range and level
# asked (docs/meta-api.md §9.1). Rules need it per window (frequency = impressions / reach), so a refresh also reads
# each window below as one range per level: one sync call per level and window, one row per object.
REACH_LEVELS: tuple[str, ...] = ("adset", "campaign", "ad")
REACH_FIELDS: dict[str, str] = {
    "adset": "adset_id,reach,impressions,frequency",
    "campaign": "campaign_id,reach,impressions,frequency",
    "ad": "ad_id,reach,impressions,frequency",  # rules at ad level (frequency per ad)
}
# The windows of the rules engine's vocabulary (services/rules_engine/rules.py `window_bounds`, same meaning):
# `last_N_days` ends today, `previous_N_days` is the N whole days before today (Meta's `last_Nd` preset).
DEFAULT_REACH_WINDOWS: tuple[str, ...] = ("last_3_days", "last_7_days", "previous_7_days")
_REACH_WINDOW_RE = re.compile(r"^(today|yesterday|(last|previous)_([1-9][0-9]{0,2})_days?)$")


def reach_window(label: str, today: date) -> Window:
    """The days (account time zone) a rules window covers when `today` is the account's today.

    Raises:
        ValueError: not a bounded window of the rules' vocabulary (`lifetime` has no range to ask for).
    """
    match = _REACH_WINDOW_RE.match(label)
    if match is None:
        raise ValueError(f"not a window with a date range: {label!r} (today, yesterday, last_N_days, "
                         "previous_N_days)")
    if label == "today":
        return Window(today, today)
    if label == "yesterday":
        return Window(today - timedelta(days=1), today - timedelta(days=1))
    n = int(match.group(3))
    if match.group(2) == "last":
        return Window(today - timedelta(days=n - 1), today)
    return Window(today - timedelta(days=n), today - timedelta(days=1))


def reach_windows(labels: Iterable[str], today: date) -> dict[str, Window]:
    return {label: reach_window(label, today) for label in dict.fromkeys(labels)}


@dataclass(frozen=True)
class WindowReach:
    """Meta's deduplicated reach of one ad, ad set or campaign over one whole window."""

    level: str
    object_id: str
    label: str
    window: Window
    reach: int
    impressions: int
    frequency: Decimal | None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.level, self.object_id, self.label


def parse_reach_row(row: Mapping[str, Any], level: str, label: str, window: Window) -> WindowReach:
    """One insights row of a whole-window read at `level` (no time_increment).

    Raises:
        ValueError: the row lacks its object id (it cannot be stored).
    """
    object_id = row.get(f"{level}_id")
    if not isinstance(object_id, str) or not object_id:
        raise ValueError(f"window reach row without {level}_id")
    return WindowReach(
        level=level, object_id=object_id, label=label, window=window, reach=int_or_zero(row.get("reach")),
        impressions=int_or_zero(row.get("impressions")), frequency=decimal_or_none(row.get("frequency")),
    )


# ---------------------------------------------------------------------------------------------------- objects


def parse_meta_time(value: Any) -> datetime | None:
    """Meta's `2026-11-22T08:49:14+0000` (or ISO with a colon in the offset)."""
    if not isinstance(value, str) or not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class AccountInfo:
    account_id: str
    name: str | None
    currency: str
    timezone_name: str
    account_status: int | None

    @property
    def offset(self) -> int:
        return currency_offset(self.currency)


def parse_account(account_id: str, body: Mapping[str, Any]) -> AccountInfo:
    currency = body.get("currency")
    tz = body.get("timezone_name")
    if not isinstance(currency, str) or not currency or not isinstance(tz, str) or not tz:
        raise ValueError(f"ad account {account_id} answered without currency or timezone_name")
    status = body.get("account_status")
    return AccountInfo(
        account_id=account_id,
        name=_str_or_none(body.get("name")),
        currency=currency,
        timezone_name=tz,
        account_status=int(status) if isinstance(status, int | str) and str(status).isdigit() else None,
    )


def campaign_record(account_id: str, item: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        str(item["id"]), account_id, str(item.get("name") or ""), _str_or_none(item.get("objective")),
        _str_or_none(item.get("status")), _str_or_none(item.get("effective_status")),
        minor_or_none(item.get("daily_budget")), minor_or_none(item.get("lifetime_budget")),
        _str_or_none(item.get("bid_strategy")), parse_meta_time(item.get("created_time")),
        parse_meta_time(item.get("updated_time")),
    )


def adset_record(account_id: str, item: Mapping[str, Any]) -> tuple[Any, ...]:
    campaign = item.get("campaign_id") or (item.get("campaign") or {}).get("id")
    return (
        str(item["id"]), account_id, str(campaign or ""), str(item.get("name") or ""),
        _str_or_none(item.get("status")), _str_or_none(item.get("effective_status")),
        minor_or_none(item.get("daily_budget")), minor_or_none(item.get("lifetime_budget")),
        _str_or_none(item.get("bid_strategy")), minor_or_none(item.get("bid_amount")),
        _str_or_none(item.get("optimization_goal")), _str_or_none(item.get("billing_event")),
        parse_meta_time(item.get("created_time")), parse_meta_time(item.get("updated_time")),
    )


def ad_record(account_id: str, item: Mapping[str, Any]) -> tuple[Any, ...]:
    campaign = item.get("campaign_id") or (item.get("campaign") or {}).get("id")
    adset = item.get("adset_id") or (item.get("adset") or {}).get("id")
    return (
        str(item["id"]), account_id, str(campaign or ""), str(adset or ""), str(item.get("name") or ""),
        _str_or_none(item.get("status")), _str_or_none(item.get("effective_status")),
        parse_meta_time(item.get("created_time")), parse_meta_time(item.get("updated_time")),
    )
