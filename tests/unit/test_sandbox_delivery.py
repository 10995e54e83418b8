"""The Graph sandbox's delivery follows ad statuses (issue 20, creative rotation): a paused ad gets no impressions, an
ad activated again does, from the next hour; the seeded paused ad stopped delivering when it was paused."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta

from services.graph_sandbox import creates, objects
from services.graph_sandbox.config import SandboxConfig
from services.graph_sandbox.core import GraphRequest, Sandbox
from services.graph_sandbox.insights import ad_day
from services.graph_sandbox.state import MAIN_ACCOUNT, Node


def at(sb: Sandbox, hour: int, minute: int = 0) -> None:
    """Freeze the sandbox clock at today's ``hour:minute`` in the main account's time zone."""
    tz = sb.state.account_tz(MAIN_ACCOUNT)
    sb.clock.set(datetime.combine(sb.state.today(MAIN_ACCOUNT), time(hour, minute), tz).timestamp(), frozen=True)


def impressions(sb: Sandbox, ad: Node, days_ago: int = 0) -> int:
    today = sb.state.today(MAIN_ACCOUNT)
    found = ad_day(sb, ad, today - timedelta(days=days_ago), today)
    return found["impressions"] if found else 0


def sandbox() -> tuple[Sandbox, Node, Node]:
    """A sandbox at 08:00 today, its seeded PAUSED ad and an ACTIVE ad of the same ad set."""
    sb = Sandbox(SandboxConfig(app_secret="x"))
    at(sb, 8)
    paused = next(a for a in sb.state.of_kind("ad", account=MAIN_ACCOUNT) if a.fields["status"] == "PAUSED")
    active = next(a for a in sb.state.of_kind("ad", adset_id=paused.fields["adset_id"])
                  if a.fields["status"] == "ACTIVE")
    return sb, paused, active


def test_the_seeded_paused_ad_delivered_until_it_was_paused_and_not_since() -> None:
    sb, paused, active = sandbox()
    at(sb, 20)
    assert impressions(sb, paused, 0) == impressions(sb, paused, 1) == 0
    assert impressions(sb, paused, 2) > 0
    assert impressions(sb, active, 0) > 0


def test_an_ad_activated_again_delivers_from_the_next_hour() -> None:
    sb, paused, _ = sandbox()
    at(sb, 10, 20)
    objects.apply_update(sb, paused, {"status": "ACTIVE"})
    at(sb, 10, 50)
    assert impressions(sb, paused) == 0
    at(sb, 13)
    after_two_hours = impressions(sb, paused)
    assert after_two_hours > 0
    at(sb, 16)
    assert impressions(sb, paused) > after_two_hours


def test_an_ad_paused_today_stops_from_the_next_hour() -> None:
    sb, _, active = sandbox()
    at(sb, 10, 20)
    objects.apply_update(sb, active, {"status": "PAUSED"})
    at(sb, 11)
    paused_at = impressions(sb, active)
    assert paused_at > 0  # it delivered until 11:00
    at(sb, 16)
    assert impressions(sb, active) == paused_at


async def test_an_ad_created_paused_in_a_seeded_ad_set_delivers_once_activated_and_not_before() -> None:
    sb, _, active = sandbox()
    at(sb, 9, 20)
    account = sb.state.get(MAIN_ACCOUNT)
    creative = active.fields["creative"]["id"]
    request = GraphRequest("POST", f"{MAIN_ACCOUNT}/ads", None, {
        "name": "[reserve] 1 new video", "adset_id": active.fields["adset_id"], "status": "PAUSED",
        "creative": json.dumps({"creative_id": creative})}, None, "")
    created = sb.state.get((await creates.create_ad(sb, request, account))["id"])
    assert created is not None
    at(sb, 12)
    assert impressions(sb, created) == impressions(sb, created, 1) == 0, "nothing before or while paused"
    at(sb, 12, 10)
    objects.apply_update(sb, created, {"status": "ACTIVE"})
    at(sb, 16)
    assert impressions(sb, created) > 0
    assert impressions(sb, created, 1) == 0, "nothing the day before it was created"
