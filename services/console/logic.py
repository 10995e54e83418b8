"""What the console computes from its read models: days in a time zone, masks, costs, labels. Plain functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from shared.money import offset, to_major
from shared.targets import TargetBook, target_state

# A lead's CRM state, as console_leads names it, in words an operator uses.
STATUS_LABELS = {
    "delivered": "In the CRM",
    "waiting": "On its way",
    "failed": "CRM delivery failed",
    "skipped": "No CRM set up",
}
DELIVERY_LABELS = {
    "pending": "queued",
    "retrying": "retrying",
    "delivered": "delivered",
    "failed": "gave up",
    "skipped": "skipped (no CRM set up)",
}
CAPI_LABELS = {"sending": "sending", "sent": "accepted by Meta", "rejected": "rejected by Meta", "failed": "failed"}

_EMAIL = re.compile(r"^([^@\s])[^@\s]*@(.+)$")


@dataclass(frozen=True)
class Day:
    """One calendar day in the console's time zone, as the UTC instants it runs between."""

    day: date
    start: datetime
    end: datetime


def day_of(when: datetime, zone: ZoneInfo, days_back: int = 0) -> Day:
    """The day `when` falls on in `zone` (minus `days_back` days), with its bounds in UTC (DST-aware)."""
    local = when.astimezone(zone).date() - timedelta(days=days_back)
    start = datetime.combine(local, time.min, tzinfo=zone)
    end = datetime.combine(local + timedelta(days=1), time.min, tzinfo=zone)
    return Day(local, start.astimezone(UTC), end.astimezone(UTC))


def mask(key: str, value: object) -> str:
    """A lead answer as shown before an operator reveals it: enough to tell leads apart, not to contact anyone."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "—"
    key = key.lower()
    if "email" in key and (match := _EMAIL.match(text)):
        return f"{match[1]}•••@{match[2]}"
    if "phone" in key:
        digits = re.sub(r"\D", "", text)
        return f"•••• {digits[-2:]}" if len(digits) >= 4 else "••••"
    if "name" in key:
        return " ".join(f"{part[0]}." for part in text.split() if part)
    return "•••"


def masked_answers(fields: dict[str, object]) -> list[tuple[str, str]]:
    return [(key, mask(key, value)) for key, value in fields.items()]


def revealed_answers(fields: dict[str, object]) -> list[tuple[str, str]]:
    return [(key, "" if value is None else str(value)) for key, value in fields.items()]


def money(minor: int | Decimal | None, currency: str) -> str:
    """`1,234.50 USD`; `—` when there is nothing to show."""
    if minor is None:
        return "—"
    major = to_major(round(minor), currency)
    return f"{major:,} {currency.upper()}"


def cost_per(spend_minor: int, count: int) -> Decimal | None:
    """Spend divided by a count, in minor units; None when the count is zero (no cost per nothing)."""
    if count <= 0:
        return None
    return Decimal(spend_minor) / count


def duration(seconds: float | None) -> str:
    """`45 s`, `3 min 20 s`, `2 h 5 min`; `—` for none."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def ago(when: datetime | None, now: datetime) -> str:
    """`just now`, `5 min ago`, `3 h ago`, `2 days ago`; `never` for none."""
    if when is None:
        return "never"
    seconds = (now - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


@dataclass(frozen=True)
class Chip:
    """One item of the health strip: `state` is ok, warn or bad (green, amber, red)."""

    label: str
    state: str
    detail: str


def health_chips(health: dict[str, object], now: datetime) -> list[Chip]:
    """The health strip from console_health: what the database can tell about each link of the chain."""

    def age_state(when: object, warn_hours: float, bad_hours: float) -> str:
        if not isinstance(when, datetime):
            return "warn"
        hours = (now - when).total_seconds() / 3600
        return "ok" if hours < warn_hours else "warn" if hours < bad_hours else "bad"

    crm_failed = int(health.get("crm_failed") or 0)
    rejected = int(health.get("capi_rejected_24h") or 0)
    alerts = int(health.get("lead_alerts_24h") or 0)
    backlog = int(health.get("outbox_backlog") or 0)

    def when(key: str) -> datetime | None:
        value = health.get(key)
        return value if isinstance(value, datetime) else None

    return [
        Chip("Last lead by webhook", age_state(when("last_webhook_lead_at"), 24, 72),
             ago(when("last_webhook_lead_at"), now)),
        Chip("Lead access", "bad" if alerts else "ok",
             f"{alerts} access alert{'s' if alerts != 1 else ''} in 24 h" if alerts else "no alerts in 24 h"),
        Chip("Last CRM delivery", age_state(when("last_crm_delivery_at"), 24, 72),
             ago(when("last_crm_delivery_at"), now)),
        Chip("CRM deliveries failed", "bad" if crm_failed else "ok", str(crm_failed)),
        # Meta wants CRM stage uploads at least daily for Conversion Leads (docs/meta-api.md §8.7).
        Chip("Last CRM outcome", age_state(when("last_crm_outcome_at"), 24, 48), ago(when("last_crm_outcome_at"), now)),
        Chip("Last Conversions API send", age_state(when("last_capi_sent_at"), 24, 48),
             ago(when("last_capi_sent_at"), now) + (f" · {rejected} rejected in 24 h" if rejected else "")),
        Chip("Ad numbers refreshed", age_state(when("last_insights_refresh_at"), 6, 24),
             ago(when("last_insights_refresh_at"), now)),
        Chip("Messages waiting to be sent", "bad" if backlog else "ok", str(backlog)),
    ]


def performance_rows(spend_rows: list[dict[str, Any]], lead_rows: list[dict[str, Any]],
                     targets: TargetBook) -> list[dict[str, Any]]:
    """One row per campaign (or ad set): Meta's spend and leads beside the stored leads and their outcomes, each
    cost coloured against its own account's targets (`shared.targets`)."""
    leads = {(r["campaign_id"], r["adset_id"]): r for r in lead_rows}
    rows = []
    for spend in spend_rows:
        currency = str(spend["currency"])
        spent = int(spend["spend_minor"])
        stored = leads.get((spend["campaign_id"], spend["adset_id"]), {})
        qualified = int(stored.get("qualified") or 0)
        signed = int(stored.get("signed") or 0)
        cpl = cost_per(spent, int(spend["meta_leads"]))
        cpql, cpsc = cost_per(spent, qualified), cost_per(spent, signed)
        own = targets.for_account(str(spend["account_id"]), currency)
        rows.append({
            **spend,
            "spend": money(spent, currency),
            "paid_leads": int(stored.get("paid_leads") or 0),
            "organic_leads": int(stored.get("organic_leads") or 0),
            "test_leads": int(stored.get("test_leads") or 0),
            "qualified": qualified,
            "signed": signed,
            "cpl": money(cpl, currency), "cpl_state": target_state(cpl, own.cpl, currency),
            "cpql": money(cpql, currency), "cpql_state": target_state(cpql, own.per_qualified, currency),
            "cpsc": money(cpsc, currency), "cpsc_state": target_state(cpsc, own.per_signed, currency),
            "targets": own.shown(currency),
        })
    return rows


def shared_targets(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The targets every row has alike (shown once in the column's head); "" where rows differ or have none
    (each cell then names its own in its tooltip)."""
    out = {}
    for key in ("cpl", "per_qualified", "per_signed"):
        values = {r["targets"][key] for r in rows}
        out[key] = values.pop() if len(values) == 1 else ""
    return out


def unjudged_accounts(spend_rows: list[dict[str, Any]], targets: TargetBook) -> list[str]:
    """Why some accounts' costs are not coloured (defaults in another currency, no targets of their own)."""
    seen = {(str(r["account_id"]), str(r["currency"])) for r in spend_rows}
    return [why for account, currency in sorted(seen) if (why := targets.unjudged(account, currency))]


def unpaid_leads(lead_rows: list[dict[str, Any]]) -> dict[str, int]:
    """Leads received without an ad (organic, and Meta's test leads): no campaign row shows them, Meta's numbers
    leave them out; Performance lists them on a line of their own."""
    out = {"organic": 0, "test": 0, "qualified": 0, "signed": 0}
    for row in lead_rows:
        if row["campaign_id"] is None:
            out["organic"] += int(row.get("organic_leads") or 0)
            out["test"] += int(row.get("test_leads") or 0)
            out["qualified"] += int(row.get("qualified") or 0)
            out["signed"] += int(row.get("signed") or 0)
    return out


def chart_series(spend_rows: list[dict[str, Any]], outcome_rows: list[dict[str, Any]], first: date,
                 last: date, maturing_from: date) -> dict[str, Any] | None:
    """Daily spend, CPL and cost per signed case (by lead date) for uPlot; None unless one currency."""
    currencies = {str(r["currency"]) for r in spend_rows}
    if len(currencies) != 1:
        return None
    [currency] = currencies
    step = offset(currency)
    spend = {r["date"]: r for r in spend_rows}
    signed = {r["day"]: int(r["signed"]) for r in outcome_rows}
    days, spent, cpl, cpsc = [], [], [], []
    day = first
    while day <= last:
        row = spend.get(day, {})
        minor = int(row.get("spend_minor") or 0)
        leads = int(row.get("meta_leads") or 0)
        days.append(int(datetime.combine(day, time(12), tzinfo=UTC).timestamp()))
        spent.append(minor / step)
        cpl.append(round(minor / leads / step, 2) if leads else None)
        cpsc.append(round(minor / signed[day] / step, 2) if signed.get(day) else None)
        day += timedelta(days=1)
    return {
        "currency": currency, "days": days, "spend": spent, "cpl": cpl, "cpsc": cpsc,
        "maturing_from": int(datetime.combine(maturing_from, time(0), tzinfo=UTC).timestamp()),
    }
