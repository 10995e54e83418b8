"""Ads Insights: deterministic seeded delivery per ad per day, sync reads and async report runs.

Numbers come from `random.Random(f"{seed}:{ad_id}:{day}")`, so the same seed always yields the same account;
`POST /_sandbox/insights/restate` multiplies recent days to imitate Meta's late attribution.
"""

from __future__ import annotations

import calendar
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from . import schema
from .core import GraphRequest, Sandbox, json_param, list_param, paginate
from .delivery import delivered_share, touched
from .errors import GraphError, invalid_param
from .objects import effective_status, full_view, matches, render
from .state import OFFSET_ONE, Node, Profile, day_range, wire_amount

LEVELS = ("account", "campaign", "adset", "ad")
BREAKDOWNS: dict[str, dict[str, float]] = {
    "age": {"18-24": 0.12, "25-34": 0.28, "35-44": 0.25, "45-54": 0.18, "55-64": 0.11, "65+": 0.06},
    "gender": {"female": 0.52, "male": 0.45, "unknown": 0.03},
    "publisher_platform": {"facebook": 0.62, "instagram": 0.33, "audience_network": 0.03, "messenger": 0.02},
    "device_platform": {"mobile_app": 0.78, "mobile_web": 0.1, "desktop": 0.12},
    "country": {"US": 1.0},
}
DATE_PRESETS = (
    "today",
    "yesterday",
    "this_month",
    "last_month",
    "this_quarter",
    "last_quarter",
    "maximum",
    "data_maximum",
    "last_3d",
    "last_7d",
    "last_14d",
    "last_28d",
    "last_30d",
    "last_90d",
    "last_week_mon_sun",
    "last_week_sun_sat",
    "this_week_mon_today",
    "this_week_sun_today",
    "this_year",
    "last_year",
)
METRICS = ("spend", "impressions", "reach", "clicks", "inline_link_clicks", "leads_onsite", "leads_pixel")
DEFAULT_FIELDS = ["account_id", "spend", "impressions", "date_start", "date_stop"]
OBJECT_FILTER_FIELDS = {
    "campaign.id",
    "adset.id",
    "ad.id",
    "campaign.name",
    "adset.name",
    "ad.name",
    "campaign.effective_status",
    "adset.effective_status",
    "ad.effective_status",
}
METRIC_FILTER_FIELDS = {"spend", "impressions", "clicks", "reach", "ad.impressions", "ad.spend"}
TOO_MUCH_DATA = "Please reduce the amount of data you're asking for, then retry your request"


def _level_of(node: Node) -> str:
    return {"adaccount": "account"}.get(node.kind, node.kind)


# ---------------------------------------------------------------------- daily delivery


def ad_day(sb: Sandbox, ad: Node, day: date, today: date) -> dict[str, int] | None:
    """One ad's seeded delivery on `day` (minor units / counts), or None if it did not deliver."""
    profile: Profile | None = ad.extra.get("profile")
    if profile is None:
        return None
    ago = (today - day).days
    if ago < 0 or ago >= sb.state.days or ago > profile.first_day_ago:
        return None
    # After its seeded span (a seeded paused ad), or when created through the API, an ad delivers only while it and
    # its parents are ACTIVE (delivery.py).
    seeded = ago >= profile.last_day_ago and not ad.extra.get("created_at")
    if not seeded and not touched(sb, ad):
        return None
    rng = random.Random(f"{sb.state.seed}:{ad.id}:{day.isoformat()}")
    factor = rng.uniform(0.85, 1.15) * sb.state.restatements.get(day.isoformat(), 1.0)
    spend = max(1, round(profile.spend * factor))
    impressions = max(1, round(spend / profile.cpm * 1000 * rng.uniform(0.9, 1.1)))
    reach = max(1, round(impressions / (profile.daily_frequency * rng.uniform(0.95, 1.05))))
    clicks = round(impressions * profile.ctr * rng.uniform(0.85, 1.15))
    # On-Facebook leads are exactly the lead records of this ad and day; website (pixel) leads are simulated.
    onsite = sb.state.lead_days.get((ad.id, day.isoformat()), 0)
    pixel = 0
    if profile.cpl:
        expected = spend / profile.cpl * profile.pixel_share
        pixel = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
    metrics = {
        "spend": spend,
        "impressions": impressions,
        "reach": reach,
        "clicks": clicks,
        "inline_link_clicks": round(clicks * 0.8),
        "leads_onsite": onsite,
        "leads_pixel": pixel,
    }
    # Today grows through the day, and pauses and budget changes act from the next hour (delivery.py).
    share = delivered_share(sb, ad, day, sb.state.account_tz(ad.account or ""), seeded=seeded)
    if share == 1.0:
        return metrics
    # On-Facebook leads are the lead records themselves: they exist only up to now already.
    part = {name: value if name == "leads_onsite" else int(value * share) for name, value in metrics.items()}
    return part if part["impressions"] else None


def _split(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder split so breakdown rows add up to the total exactly."""
    raw = [total * w for w in weights]
    base = [int(x) for x in raw]
    rest = total - sum(base)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - base[i], reverse=True)
    for i in order[:rest]:
        base[i] += 1
    return base


def _breakdown_split(metrics: dict[str, int], dims: list[str]) -> list[tuple[tuple[str, ...], dict[str, int]]]:
    if not dims:
        return [((), metrics)]
    combos = list(itertools.product(*[list(BREAKDOWNS[d].items()) for d in dims]))
    weights = [float(_prod(w for _, w in combo)) for combo in combos]
    total_w = sum(weights)
    weights = [w / total_w for w in weights]
    splits = {k: _split(v, weights) for k, v in metrics.items()}
    out = []
    for i, combo in enumerate(combos):
        out.append((tuple(v for v, _ in combo), {k: splits[k][i] for k in metrics}))
    return out


def _prod(values: Iterable[float]) -> float:
    result = 1.0
    for v in values:
        result *= v
    return result


# ---------------------------------------------------------------------- parameters


@dataclass
class Query:
    node: Node
    level: str
    since: date
    until: date
    increment: str  # "all_days", "monthly" or a number of days
    breakdowns: list[str]
    fields: list[str]
    object_filters: list[dict[str, Any]]
    metric_filters: list[dict[str, Any]]


def _preset_range(preset: str, today: date, days: int) -> tuple[date, date]:
    d = timedelta
    if preset == "today":
        return today, today
    if preset == "yesterday":
        return today - d(1), today - d(1)
    if preset.startswith("last_") and preset.endswith("d") and preset[5:-1].isdigit():
        n = int(preset[5:-1])
        return today - d(n), today - d(1)
    if preset == "this_month":
        return today.replace(day=1), today
    if preset == "last_month":
        last = today.replace(day=1) - d(1)
        return last.replace(day=1), last
    if preset in ("this_quarter", "last_quarter"):
        q_start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        if preset == "this_quarter":
            return q_start, today
        prev_end = q_start - d(1)
        return date(prev_end.year, 3 * ((prev_end.month - 1) // 3) + 1, 1), prev_end
    if preset in ("maximum", "data_maximum"):
        return today - d(days - 1), today
    if preset == "this_week_mon_today":
        return today - d(today.weekday()), today
    if preset == "this_week_sun_today":
        return today - d((today.weekday() + 1) % 7), today
    if preset == "last_week_mon_sun":
        start = today - d(today.weekday() + 7)
        return start, start + d(6)
    if preset == "last_week_sun_sat":
        start = today - d((today.weekday() + 1) % 7 + 7)
        return start, start + d(6)
    if preset == "this_year":
        return date(today.year, 1, 1), today
    if preset == "last_year":
        return date(today.year - 1, 1, 1), date(today.year - 1, 12, 31)
    raise invalid_param(f"Param date_preset must be one of {{{', '.join(DATE_PRESETS)}}}", blame=["date_preset"])


def parse_query(sb: Sandbox, req: GraphRequest, node: Node, params: dict[str, Any] | None = None) -> Query:
    p = params if params is not None else req.params
    today = sb.state.today(node.account or "")
    level = str(p.get("level") or _level_of(node))
    if level not in LEVELS:
        raise invalid_param(f"Param level must be one of {{{', '.join(LEVELS)}}}", blame=["level"])
    if LEVELS.index(level) < LEVELS.index(_level_of(node)):
        raise invalid_param(f"Level {level} is above the queried object", blame=["level"])
    time_range = json_param(p, "time_range")
    if time_range:
        try:
            since = date.fromisoformat(time_range["since"])
            until = date.fromisoformat(time_range["until"])
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid_param(
                'Param time_range must be {"since":"YYYY-MM-DD","until":"YYYY-MM-DD"}', blame=["time_range"]
            ) from exc
        if since > until:
            raise invalid_param("time_range since must not be after until", blame=["time_range"])
        if since < today - timedelta(days=37 * 31):
            raise GraphError(
                "(#3018) The start date of the time range cannot be beyond 37 months from the current date", code=3018
            )
    else:
        since, until = _preset_range(str(p.get("date_preset") or "last_30d"), today, sb.state.days)
    increment = str(p.get("time_increment") or "all_days")
    if increment not in ("all_days", "monthly") and not (increment.isdigit() and 1 <= int(increment) <= 90):
        raise invalid_param("Param time_increment must be 1..90, monthly or all_days", blame=["time_increment"])
    breakdowns = list_param(p, "breakdowns") or []
    for b in breakdowns:
        if b not in BREAKDOWNS:
            raise invalid_param(f"Param breakdowns[0] must be one of {{{', '.join(BREAKDOWNS)}}}", blame=["breakdowns"])
    filters = json_param(p, "filtering", [])
    if not isinstance(filters, list):
        raise invalid_param("Param filtering must be an array", blame=["filtering"])
    object_filters, metric_filters = [], []
    for f in filters:
        if not isinstance(f, dict) or "field" not in f or "operator" not in f:
            raise invalid_param("Each filtering entry needs field and operator", blame=["filtering"])
        if f["field"] in OBJECT_FILTER_FIELDS:
            object_filters.append(f)
        elif f["field"] in METRIC_FILTER_FIELDS:
            metric_filters.append(f)
        else:
            raise invalid_param(
                f"Filtering field {f['field']} with operation {str(f['operator']).lower()} is not supported",
                blame=["filtering"],
            )
    fields = list_param(p, "fields") or list(DEFAULT_FIELDS)
    schema.check_fields("insights", fields)  # AdsInsights' declared fields only, as Meta
    return Query(node, level, since, until, increment, breakdowns, fields, object_filters, metric_filters)


# ---------------------------------------------------------------------- computing rows


def _ads_under(sb: Sandbox, node: Node) -> list[Node]:
    if node.kind == "ad":
        return [node]
    if node.kind == "adaccount":
        return sb.state.of_kind("ad", account=node.id)
    key = "campaign_id" if node.kind == "campaign" else "adset_id"
    return sb.state.of_kind("ad", **{key: node.id})


def _object_value(sb: Sandbox, ad: Node, field: str) -> Any:
    level, attr = field.split(".", 1)
    obj = ad if level == "ad" else sb.state.get(ad.fields[f"{level}_id"])
    if obj is None:
        return None
    if attr == "id":
        return obj.id
    if attr == "effective_status":
        return effective_status(sb, obj)
    return obj.fields.get(attr)


def _bucket(day: date, since: date, increment: str) -> tuple[date, date]:
    if increment == "all_days":
        return since, date.max
    if increment == "monthly":
        last = calendar.monthrange(day.year, day.month)[1]
        return day.replace(day=1), day.replace(day=last)
    n = int(increment)
    start = since + timedelta(days=((day - since).days // n) * n)
    return start, start + timedelta(days=n - 1)


def compute_rows(sb: Sandbox, q: Query) -> tuple[list[dict[str, Any]], set[str]]:
    """Aggregated insight rows for a query, plus the campaign ids it covers."""
    account = q.node.account or ""
    today = sb.state.today(account)
    currency = sb.state.currency(account)
    ads = [
        a
        for a in _ads_under(sb, q.node)
        if all(matches(_object_value(sb, a, f["field"]), f["operator"], f.get("value")) for f in q.object_filters)
    ]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    campaigns: set[str] = set()
    days = list(day_range(q.since, min(q.until, today)))
    for ad in ads:
        level_id = {
            "account": account,
            "campaign": ad.fields["campaign_id"],
            "adset": ad.fields["adset_id"],
            "ad": ad.id,
        }[q.level]
        for day in days:
            metrics = ad_day(sb, ad, day, today)
            if metrics is None:
                continue
            campaigns.add(ad.fields["campaign_id"])
            start, stop = _bucket(day, q.since, q.increment)
            for values, part in _breakdown_split(metrics, q.breakdowns):
                key = (level_id, values, start)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = {
                        "ad": ad,
                        "values": values,
                        "start": start,
                        "stop": min(stop, q.until),
                        "days": set(),
                        **dict.fromkeys(METRICS, 0),
                    }
                group["days"].add(day)
                for m, v in part.items():
                    group[m] += v
    rows = []
    for key in sorted(groups, key=lambda k: (str(k[0]), k[1], k[2])):
        row = _format_row(sb, q, groups[key], currency)
        if row is not None:
            rows.append(row)
    return rows, campaigns


def _ratio(num: float, den: float, scale: float = 1.0) -> str:
    return f"{num / den * scale:.6f}" if den else "0"


def _format_row(sb: Sandbox, q: Query, g: dict[str, Any], currency: str) -> dict[str, Any] | None:
    if g["impressions"] <= 0:
        return None  # Meta omits objects without delivery
    ad: Node = g["ad"]
    ndays = len(g["days"])
    reach = max(1, round(g["reach"] / (1 + 0.15 * (ndays - 1))))
    leads = g["leads_onsite"] + g["leads_pixel"]
    unit = 1 if currency in OFFSET_ONE else 100
    spend_major = g["spend"] / unit
    metric_values = {"spend": spend_major, "impressions": g["impressions"], "clicks": g["clicks"], "reach": reach}
    for f in q.metric_filters:
        name = f["field"].removeprefix("ad.")
        if not matches(metric_values.get(name, 0), f["operator"], f.get("value")):
            return None
    # `lead` already includes on-Facebook and pixel leads - never sum the types (docs/meta-api.md §9.3).
    action_counts = {
        "link_click": g["inline_link_clicks"],
        "lead": leads,
        "onsite_conversion.lead_grouped": g["leads_onsite"],
        "leadgen_grouped": g["leads_onsite"],
        "offsite_conversion.fb_pixel_lead": g["leads_pixel"],
    }
    actions = [{"action_type": k, "value": str(v)} for k, v in action_counts.items() if v > 0]
    campaign = sb.state.get(ad.fields["campaign_id"])
    adset = sb.state.get(ad.fields["adset_id"])
    account_node = sb.state.get(ad.account or "")
    full: dict[str, Any] = {
        "account_id": (ad.account or "").removeprefix("act_"),
        "account_name": account_node.fields["name"] if account_node else "",
        "account_currency": currency,
        "spend": wire_amount(g["spend"], currency),
        "impressions": str(g["impressions"]),
        "reach": str(reach),
        "frequency": _ratio(g["impressions"], reach),
        "clicks": str(g["clicks"]),
        "inline_link_clicks": str(g["inline_link_clicks"]),
        "ctr": _ratio(g["clicks"], g["impressions"], 100),
        "cpc": _ratio(g["spend"], g["clicks"] * unit),
        "cpm": _ratio(g["spend"] * 1000, g["impressions"] * unit),
        "actions": actions,
        "action_values": [
            {
                "action_type": "offsite_conversion.fb_pixel_lead",
                "value": wire_amount(g["leads_pixel"] * 2500, currency),
            }
        ]
        if g["leads_pixel"]
        else [],
        "cost_per_action_type": [
            {"action_type": a["action_type"], "value": _ratio(g["spend"], int(a["value"]) * unit)} for a in actions
        ],
        "objective": campaign.fields["objective"] if campaign else None,
        "optimization_goal": adset.fields.get("optimization_goal") if adset else None,
        "date_start": g["start"].isoformat(),
        "date_stop": g["stop"].isoformat(),
    }
    if q.level in ("campaign", "adset", "ad") and campaign:
        full.update(campaign_id=campaign.id, campaign_name=campaign.fields["name"])
    if q.level in ("adset", "ad") and adset:
        full.update(adset_id=adset.id, adset_name=adset.fields["name"])
    if q.level == "ad":
        full.update(ad_id=ad.id, ad_name=ad.fields["name"])
    row: dict[str, Any] = {}
    for name in q.fields:
        if name in full and full[name] is not None and full[name] != []:
            row[name] = full[name]
    level_id_field = {"account": "account_id", "campaign": "campaign_id", "adset": "adset_id", "ad": "ad_id"}
    id_field = level_id_field[q.level]
    row.setdefault(id_field, full[id_field])
    for dim, value in zip(q.breakdowns, g["values"], strict=True):
        row[dim] = value
    row["date_start"] = full["date_start"]
    row["date_stop"] = full["date_stop"]
    return row


# ---------------------------------------------------------------------- handlers


async def get_insights(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    assert node is not None
    q = parse_query(sb, req, node)
    rows, _ = compute_rows(sb, q)
    if len(rows) > sb.insights.sync_row_limit:
        raise GraphError(
            TOO_MUCH_DATA,
            code=100,
            subcode=1487534,
            user_title="Too much data",
            user_msg="Reduce the date range, the number of objects or breakdowns, or use an async report run.",
        )
    return paginate(sb, req, rows)


async def start_report(sb: Sandbox, req: GraphRequest, node: Node | None) -> dict[str, Any]:
    assert node is not None
    params = {k: v for k, v in req.params.items() if k not in ("access_token", "appsecret_proof")}
    q = parse_query(sb, req, node, params)  # invalid params fail synchronously, like Meta
    now = sb.state.now()
    run = sb.state.add(
        Node(
            sb.state.new_id(),
            "report_run",
            {
                "account_id": (node.account or "").removeprefix("act_"),
                "async_status": "Job Not Started",
                "async_percent_completion": 0,
                "date_start": q.since.isoformat(),
                "date_stop": q.until.isoformat(),
                "time_ref": int(now),
                "is_running": True,
            },
            account=node.account,
            extra={"params": params, "node_id": node.id, "polls": 0, "rows": None},
        )
    )
    return {"report_run_id": run.id}


def _advance(sb: Sandbox, run: Node) -> None:
    f = run.fields
    if f["async_status"] in ("Job Completed", "Job Failed", "Job Skipped"):
        return
    run.extra["polls"] += 1
    polls, needed = run.extra["polls"], max(1, int(sb.insights.polls_to_complete))
    if polls < needed:
        f["async_status"] = "Job Not Started" if polls == 1 else ("Job Started" if polls == 2 else "Job Running")
        f["async_percent_completion"] = 0 if polls <= 2 else int(100 * (polls - 1) / needed)
        return
    f["is_running"] = False
    f["time_completed"] = int(sb.state.now())
    knobs = sb.insights
    if knobs.job_skip:
        f.update(async_status="Job Skipped", async_percent_completion=0)
        return
    node = sb.state.get(run.extra["node_id"])
    rows: list[dict[str, Any]] = []
    campaigns: set[str] = set()
    if node is not None:
        rows, campaigns = compute_rows(
            sb, parse_query(sb, GraphRequest("GET", "", None, {}, None, ""), node, run.extra["params"])
        )
    failure: tuple[int, int, str, str] | None = None
    if knobs.job_fail:
        failure = (-2, 2490547, "Report failed to run, please retry later", "Async report failed")
    elif knobs.max_campaigns_per_job is not None and len(campaigns) > int(knobs.max_campaigns_per_job):
        failure = (100, 1487534, TOO_MUCH_DATA, "Too much data")
    if failure:
        code, subcode, message, title = failure
        # v25+: failed AdReportRuns carry error fields by default (docs/meta-api.md §9.4, S38).
        f.update(
            async_status="Job Failed",
            async_percent_completion=0,
            error_code=code,
            error_subcode=subcode,
            error_message=message,
            error_user_title=title,
            error_user_msg=message,
        )
        return
    run.extra["rows"] = rows
    f.update(async_status="Job Completed", async_percent_completion=100)


async def get_report(sb: Sandbox, req: GraphRequest, run: Node | None) -> dict[str, Any]:
    assert run is not None
    _advance(sb, run)
    fields = list_param(req.params, "fields")
    view = full_view(sb, run)
    if fields:
        return render(sb, run, fields)
    return view


async def report_insights(sb: Sandbox, req: GraphRequest, run: Node | None) -> dict[str, Any]:
    assert run is not None
    rows = run.extra.get("rows")
    if run.fields["async_status"] != "Job Completed" or rows is None:
        raise GraphError(
            f"(#100) Report {run.id} is not ready: {run.fields['async_status']}", code=100, subcode=2490426
        )
    return paginate(sb, req, rows)


def restate(sb: Sandbox, factor: float, days: int) -> list[str]:
    """Multiply the last `days` days (today included, per account timezone) by `factor`."""
    dates: set[str] = set()
    for account in sb.state.of_kind("adaccount"):
        today = sb.state.today(account.id)
        dates.update((today - timedelta(days=i)).isoformat() for i in range(max(0, days)))
    for d in dates:
        sb.state.restatements[d] = sb.state.restatements.get(d, 1.0) * factor
    return sorted(dates)
