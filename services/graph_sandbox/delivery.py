"""How much of a day an ad delivered, given what was done to it: the sandbox's world reacts to leadwire.

Each seeded ad has a daily delivery profile (`state.Profile`), calibrated on the budgets it was seeded with. A day is
delivered hour by hour in the account's time zone: an hour delivers 1/24 of the profile (today: only the hours up
to the sandbox clock, the current one in part) if the ad, its ad set and its campaign were all ACTIVE when the hour
began, scaled by the budget in force then relative to the seeded one (the ad set's budget, or the campaign's under a
campaign budget). So, as at Meta, a pause takes effect from the next hour, and a budget change changes the spend
rate from the next hour. Changes are recorded by `record` (status and budget edits through the API, the control API
and deletes), on the sandbox clock.

Leads come from delivery too: when a test moves the clock forward, `deliver_leads` creates the lead records the
hours in between produced (spend delivered / the ad's cost per lead, less the website share), so paused ads get no
new leads and a bigger budget gets more. The clock ticking by itself creates none: the world moves when told to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .state import LEAD_RETENTION_SECONDS, Profile

if TYPE_CHECKING:
    from .core import Sandbox
    from .state import Node

TRACKED = ("status", "daily_budget", "lifetime_budget")
HOUR = 3600.0
# A new ad set's ads: they spend 90 % of the budget they share, at typical rates (minor units of the account's
# currency); a lifetime budget is spread over a week.
SPEND_SHARE, TYPICAL_CPM, TYPICAL_CTR, TYPICAL_CPL, LIFETIME_DAYS = 0.9, 1100.0, 0.012, 3000.0, 7
LEAD_GOALS = frozenset({"LEAD_GENERATION", "QUALITY_LEAD"})


@dataclass(frozen=True)
class Change:
    at: float  # sandbox clock, seconds since the epoch
    field: str
    before: Any
    after: Any


def record(sb: Sandbox, node: Node, changes: dict[str, Any]) -> None:
    """Remember the tracked fields `changes` moves (call before applying them to `node.fields`)."""
    now = sb.state.now()
    history: list[Change] = node.extra.setdefault("history", [])
    for field in TRACKED:
        if field in changes and changes[field] != node.fields.get(field):
            history.append(Change(now, field, node.fields.get(field), changes[field]))


def created(sb: Sandbox, ad: Node, adset: Node) -> None:
    """An ad created through the API delivers from its creation on, while it, its ad set and its campaign are ACTIVE
    and it is not in review (a reserve created PAUSED delivers once activated). In an ad set whose ads have seeded
    delivery profiles it delivers like the first of them; in a new ad set it gets a profile from the budget it
    runs on (the ad set's, or the campaign's shared by its ad sets), split over the ad set's ads, at typical rates."""
    model = next((a.extra["profile"] for a in sb.state.of_kind("ad", adset_id=adset.id)
                  if a is not ad and a.extra.get("profile") is not None and not a.extra.get("created_at")), None)
    if model is None:
        model = _budget_profile(sb, ad, adset)
    if model is None:
        return
    now = sb.state.now()
    ad.extra.update(profile=replace(model, first_day_ago=10_000, last_day_ago=0), created_at=now)
    # Its creation is its first status change: nothing before it.
    ad.extra["history"] = [Change(now, "status", None, ad.fields.get("status"))]


def _budget_profile(sb: Sandbox, ad: Node, adset: Node) -> Profile | None:
    """A delivery profile for an ad with no seeded sibling: its share of the budget's daily spend (the budget as it
    was first set, which `_rate_at` scales from), at the sandbox's typical CPM, CTR and (lead ad sets) CPL."""
    campaign = sb.state.get(adset.fields.get("campaign_id", ""))
    daily = _daily_budget(adset)
    if daily is None and campaign is not None:
        shared = _daily_budget(campaign)
        adsets = sb.state.of_kind("adset", campaign_id=campaign.id)
        daily = shared / max(1, sum(a.fields.get("status") != "DELETED" for a in adsets)) if shared else None
    if not daily:
        return None
    ads = [a for a in sb.state.of_kind("ad", adset_id=adset.id) if a.fields.get("status") != "DELETED"]
    leads = adset.fields.get("optimization_goal") in LEAD_GOALS
    return Profile(spend=max(1, round(daily * SPEND_SHARE / max(1, len(ads)))), cpm=TYPICAL_CPM, ctr=TYPICAL_CTR,
                   cpl=TYPICAL_CPL if leads else None, daily_frequency=1.2)


def _daily_budget(node: Node) -> float | None:
    daily = _baseline(node, "daily_budget")
    if daily:
        return float(daily)
    lifetime = _baseline(node, "lifetime_budget")
    return float(lifetime) / LIFETIME_DAYS if lifetime else None


def _current(node: Node, field: str) -> Any:
    return node.extra.get("review") if field == "review" else node.fields.get(field)


def value_at(node: Node, field: str, at: float) -> Any:
    """The field's value in force at `at`: after every recorded change made at or before it."""
    value = _current(node, field)
    for change in reversed(node.extra.get("history", ())):
        if change.field != field:
            continue
        if change.at <= at:
            return change.after
        value = change.before
    return value


def _baseline(node: Node, field: str) -> Any:
    """The field's value before any recorded change: what the delivery profile was calibrated on."""
    for change in node.extra.get("history", ()):
        if change.field == field:
            return change.before
    return node.fields.get(field)


def _rate_at(chain: list[Node], budget_node: Node | None, at: float) -> float:
    # Delivery follows the effective status: every one of ad, ad set and campaign ACTIVE, and the ad (chain[0]) not
    # in review, refused or with issues (review.py).
    if any(value_at(node, "status", at) != "ACTIVE" for node in chain) or value_at(chain[0], "review", at):
        return 0.0
    if budget_node is None:
        return 1.0
    for field in ("daily_budget", "lifetime_budget"):
        base = _baseline(budget_node, field)
        if base:
            return float(value_at(budget_node, field, at) or 0) / float(base)
    return 1.0


def _hourly_rate(sb: Sandbox, ad: Node, at: float) -> float:
    """The ad's delivery rate (1 = its profile) in the hour that begins at or before `at`."""
    adset = sb.state.get(ad.fields.get("adset_id", ""))
    campaign = sb.state.get(ad.fields.get("campaign_id", ""))
    budget_node = adset if adset is not None and _baseline(adset, "daily_budget") else campaign
    return _rate_at(_chain(sb, ad), budget_node, at)


def deliver_leads(sb: Sandbox, since: float, until: float) -> list[Node]:
    """Create the on-Facebook lead records every ad's delivery produced between `since` and `until` (clock times)."""
    # Leads older than Meta keeps them are never read: a clock moved years ahead delivers only the last 90 days.
    since = max(since, until - LEAD_RETENTION_SECONDS)
    created: list[Node] = []
    for ad in sb.state.of_kind("ad"):
        profile = ad.extra.get("profile")
        form_id = ad.extra.get("form_id")
        if profile is None or not profile.cpl or not form_id:
            continue
        per_hour = profile.spend / profile.cpl * (1 - profile.pixel_share) / 24
        hour = since - since % HOUR
        while hour < until:
            # The hour's leads are drawn whole (the same for a seed and hour, wherever the clock moves from) and
            # those inside the span are created.
            expected = per_hour * _hourly_rate(sb, ad, hour)
            rng = random.Random(f"{sb.state.seed}:hourly-leads:{ad.id}:{hour}")
            count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
            times = [rng.uniform(hour, hour + HOUR) for _ in range(count)]
            created += [sb.state.create_lead(form_id, ad=ad, created=t) for t in times if since <= t < until]
            hour += HOUR
    return created


def _chain(sb: Sandbox, ad: Node) -> list[Node]:
    adset = sb.state.get(ad.fields.get("adset_id", ""))
    campaign = sb.state.get(ad.fields.get("campaign_id", ""))
    return [node for node in (ad, adset, campaign) if node is not None]


def touched(sb: Sandbox, ad: Node) -> bool:
    """Whether a status or budget of the ad, its ad set or its campaign was ever changed."""
    return any(node.extra.get("history") for node in _chain(sb, ad))


def delivered_share(sb: Sandbox, ad: Node, day: date, tz: ZoneInfo, *, seeded: bool = True) -> float:
    """The share of its profile `ad` delivered on `day` (0 to 1, or more after budget raises).

    `seeded`: the day lies in the profile's seeded span, when the ad delivered as seeded until a change; after the
    span (a seeded PAUSED ad whose delivery ended days ago) it delivers nothing until a change makes its ad, ad set
    and campaign all ACTIVE again: a paused ad gets no impressions, an ad activated again does, from the next
    hour."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    next_day = day + timedelta(days=1)
    day_end = datetime(next_day.year, next_day.month, next_day.day, tzinfo=tz).timestamp()  # 23 h or 25 h on DST days
    end = min(day_end, sb.state.now())
    if end <= start:
        return 0.0
    length = day_end - start
    chain = _chain(sb, ad)
    adset = sb.state.get(ad.fields.get("adset_id", ""))
    campaign = sb.state.get(ad.fields.get("campaign_id", ""))
    as_seeded = 1.0 if seeded else 0.0
    changed = [change.at for node in chain for change in node.extra.get("history", ())]
    if not changed or min(changed) >= end:
        # Untouched that day: the whole profile (or today's part of it so far); nothing after the seeded span.
        return as_seeded * (end - start) / length
    first_change = min(changed)
    budget_node = adset if adset is not None and _baseline(adset, "daily_budget") else campaign
    share, hour = 0.0, start
    while hour < end:
        # Before the first change the profile runs as seeded (its statuses and budgets are what it describes).
        rate = as_seeded if hour < first_change else _rate_at(chain, budget_node, hour)
        share += rate * (min(hour + HOUR, end) - hour) / length
        hour += HOUR
    return share
