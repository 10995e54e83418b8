"""The daily report's plain parts: its schedule (08:00 in the account's time zone, DST included), its sums and
changes, and its three forms (text, Slack Block Kit within Slack's limits, a MIME e-mail with an inline chart)."""

from __future__ import annotations

import email
import email.policy
import io
import re
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from services.reports import chart, logic, render
from services.reports.logic import Delivery, Numbers
from services.reports.settings import ReportSettings

EIGHT = time(8, 0)
LA = ZoneInfo("America/Los_Angeles")
BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize(("now", "zone", "due"), [
    # 07:59 in Los Angeles (PST, UTC-8) is 15:59 UTC: yesterday's report is not due yet, the day before's is.
    ("2026-01-15T15:59:00", LA, "2026-01-13"),
    ("2026-01-15T16:00:00", LA, "2026-01-14"),
    # Berlin (CET, UTC+1): 08:00 local is 07:00 UTC.
    ("2026-01-15T06:59:59", BERLIN, "2026-01-13"),
    ("2026-01-15T07:00:00", BERLIN, "2026-01-14"),
    # Summer time (CEST, UTC+2): 08:00 local is 06:00 UTC.
    ("2026-07-15T06:00:00", BERLIN, "2026-07-14"),
    # A half-hour zone (UTC+5:30): 08:00 is 02:30 UTC.
    ("2026-01-15T02:29:00", KOLKATA, "2026-01-13"),
    ("2026-01-15T02:30:00", KOLKATA, "2026-01-14"),
    # 23:00 UTC is already the next day in Kolkata, before its 08:00.
    ("2026-01-15T23:00:00", KOLKATA, "2026-01-14"),
])
def test_the_report_is_due_at_eight_in_the_accounts_zone(now: str, zone: ZoneInfo, due: str) -> None:
    assert logic.due_report_day(utc(now), zone, EIGHT) == date.fromisoformat(due)


def test_dst_days_send_at_eight_local_not_at_a_fixed_utc_hour() -> None:
    # US spring forward: Sunday 8 March 2026, 02:00 -> 03:00. 08:00 that day is PDT (UTC-7): 15:00 UTC.
    assert logic.send_instant(date(2026, 3, 7), LA, EIGHT) == utc("2026-03-08T15:00:00")
    assert logic.send_instant(date(2026, 3, 6), LA, EIGHT) == utc("2026-03-07T16:00:00")  # PST the day before
    # Fall back: Sunday 1 November 2026; 08:00 is PST again (UTC-8).
    assert logic.send_instant(date(2026, 10, 31), LA, EIGHT) == utc("2026-11-01T16:00:00")
    # A time the spring-forward night skips (02:30) is sent at 03:30 local, once.
    assert logic.send_instant(date(2026, 3, 7), LA, time(2, 30)) == utc("2026-03-08T10:30:00")
    # A day in the zone is 23 hours on spring forward.
    start, end = logic.day_bounds(date(2026, 3, 8), LA)
    assert end - start == timedelta(hours=23)


def test_every_day_has_exactly_one_send_time_through_a_year() -> None:
    """Walking a year in 10-minute steps, the due report changes exactly once a day, at 08:00 local."""
    now = utc("2026-01-01T00:00:00")
    changes = []
    due = logic.due_report_day(now, LA, EIGHT)
    while now < utc("2027-01-01T00:00:00"):
        now += timedelta(minutes=10)
        new = logic.due_report_day(now, LA, EIGHT)
        if new != due:
            assert new == due + timedelta(days=1)
            changes.append(now.astimezone(LA))
            due = new
    assert len(changes) == 365
    assert {(c.hour, c.minute) for c in changes} == {(8, 0)}


def test_a_send_zone_ahead_of_the_account_never_reports_a_day_not_over_there() -> None:
    # 08:00 in Berlin on 15 Jan is 23:00 on 14 Jan in Los Angeles: the account's last whole day is the 13th.
    assert logic.due_account_day(utc("2026-01-15T07:00:00"), BERLIN, LA, EIGHT) == date(2026, 1, 13)
    # 08:00 in Los Angeles is 17:00 in Berlin: the Berlin account's 14th is over.
    assert logic.due_account_day(utc("2026-01-15T16:00:00"), LA, BERLIN, EIGHT) == date(2026, 1, 14)
    assert logic.due_account_day(utc("2026-01-15T16:00:00"), LA, LA, EIGHT) == date(2026, 1, 14)


def test_next_send_is_the_coming_eight_oclock() -> None:
    assert logic.next_send(utc("2026-01-15T15:59:00"), LA, EIGHT) == utc("2026-01-15T16:00:00")
    assert logic.next_send(utc("2026-01-15T16:00:00"), LA, EIGHT) == utc("2026-01-16T16:00:00")


def test_report_time_and_zone_are_validated() -> None:
    assert ReportSettings(time="7:30").time == "7:30"
    assert logic.parse_time_of_day("07:30") == time(7, 30)
    for bad in ("8", "25:00", "08:5", "eight"):
        with pytest.raises(ValueError):  # noqa: PT011 (pydantic's ValidationError is a ValueError)
            ReportSettings(time=bad)
    with pytest.raises(ValueError, match="IANA"):
        ReportSettings(timezone="Mars/Olympus")
    assert ReportSettings(channels="email", email_to="a@example.com, b@example.com").email_to == [
        "a@example.com", "b@example.com"]


def test_owed_channels_wait_for_their_back_off_and_never_repeat() -> None:
    now = utc("2026-01-15T16:00:00")
    states = {
        "slack": Delivery("slack", attempts=1, delivered=True),
        "email": Delivery("email", attempts=2, next_attempt_at=now + timedelta(minutes=1)),
    }
    assert logic.channels_to_send(["slack", "email"], states, now) == []
    assert logic.channels_to_send(["slack", "email"], states, now + timedelta(minutes=1)) == ["email"]
    assert logic.channels_to_send(["slack", "email"], {}, now) == ["slack", "email"]
    gave_up = {"email": Delivery("email", attempts=1, gave_up=True)}
    assert logic.channels_to_send(["email"], gave_up, now + timedelta(days=1)) == []
    assert [logic.retry_delay(n) for n in (1, 2, 3, 10)] == [60, 120, 240, 3600]
    assert logic.retry_delay(1, retry_after=300) == 300


# ------------------------------------------------------------------------------------------------ numbers

DAY = date(2026, 1, 14)


def spend_row(day: date, campaign: str, spend: int, leads: int, name: str | None = None) -> dict[str, Any]:
    return {"date": day, "campaign_id": campaign, "campaign_name": name or f"Campaign {campaign}",
            "spend_minor": spend, "impressions": spend * 10, "leads": leads}


def test_windows_sum_the_day_and_seven_days_and_the_same_one_day_earlier() -> None:
    spend = [spend_row(DAY - timedelta(days=i), "1", 1000 * (i + 1), i + 1) for i in range(8)]
    leads = [{"day": DAY, "campaign_id": "1", "leads": 3, "qualified": 2, "signed": 1},
             {"day": DAY - timedelta(days=7), "campaign_id": "1", "leads": 4, "qualified": 1, "signed": 1}]
    [row] = logic.campaign_rows(spend, leads, DAY)
    n = row.numbers
    assert n.day == Numbers(1000, 10000, 1, 3, 2, 1)
    assert n.day_before.spend_minor == 2000
    assert n.week.spend_minor == sum(1000 * (i + 1) for i in range(7))
    assert n.week_before.spend_minor == sum(1000 * (i + 1) for i in range(1, 8))
    assert (n.week.qualified, n.week_before.qualified) == (2, 1)
    assert n.day.cpl == 1000
    assert n.day.cost_per_qualified == 500
    assert n.day_before.cost_per_signed is None


def test_rows_largest_spend_first_and_totals_add_up() -> None:
    spend = [spend_row(DAY, "1", 500, 1), spend_row(DAY, "2", 9000, 3), spend_row(DAY - timedelta(days=20), "3", 1, 1)]
    rows = logic.campaign_rows(spend, [], DAY)
    assert [r.campaign_id for r in rows] == ["2", "1"]  # campaign 3 spent nothing in either window
    total = logic.total_row(rows)
    assert total.day == Numbers(9500, 95000, 4, 0, 0, 0)


@pytest.mark.parametrize(("now", "before", "text"), [
    (120, 100, "+20%"), (80, 100, "−20%"), (100, 100, "="), (5, 0, "new"), (0, 0, ""), (None, 100, "gone"),
    (None, None, ""),
])
def test_change_from_the_day_before(now: int | None, before: int | None, text: str) -> None:
    assert logic.change(now, before) == text


def test_daily_series_has_every_day() -> None:
    series = logic.daily_series([spend_row(DAY, "1", 700, 2), spend_row(DAY, "2", 300, 0)], DAY)
    assert len(series) == logic.CHART_DAYS
    assert series[-1] == (DAY, 1000, 2)
    assert series[0] == (DAY - timedelta(days=13), 0, 0)


# ------------------------------------------------------------------------------------------------ forms


def sample(campaigns: int = 3, *, name: str = "Campaign") -> logic.DailyReport:
    spend = []
    for c in range(campaigns):
        for i in range(logic.CHART_DAYS):
            spend.append(spend_row(DAY - timedelta(days=i), str(c), 1000 + 37 * i + c, 1 + (i + c) % 4,
                                   f"{name} {c}"))
    leads = [{"day": DAY, "campaign_id": "0", "leads": 5, "qualified": 2, "signed": 1}]
    rows = logic.campaign_rows(spend, leads, DAY)
    rules = logic.rules_summary(
        [{"outcome": "acted", "pairs": 1}, {"outcome": "skipped", "pairs": 7}],
        [{"outcome": "skipped", "pairs": 8}],
        [{"rule": "high_cpl_pause", "entity_name": "Broad", "entity_level": "adset", "outcome": "acted", "times": 1,
          "explanation": "CPL $62.00 over 3 days is above $50: paused."}],
    )
    stuck = logic.Stuck(counts={"parked": 2, "crm_failed": 1, "crm_open": 0, "capi_rejected_24h": 0,
                                "lead_alerts_24h": 0, "outbox_backlog": 0, "open_breakers": 1},
                        previous={"parked": 0, "crm_failed": 1}, parked_by_queue={"crm_sync/lead_captured": 2},
                        alerts=[("rule_breaker", "high_cpl_pause", "3 commands refused")])
    return logic.DailyReport("act_1", "Main account", "USD", "America/Los_Angeles", DAY, rows,
                             logic.total_row(rows), logic.windows_from_days({DAY: Numbers(leads=2)}, DAY), rules,
                             stuck, logic.daily_series(spend, DAY))


def check_block_kit(payload: dict[str, Any]) -> None:
    """The shape and limits Slack enforces on an incoming-webhook message (api.slack.com/reference/block-kit)."""
    assert isinstance(payload["text"], str)
    assert 0 < len(payload["text"]) <= render.SLACK_MAX_TEXT
    blocks = payload["blocks"]
    assert 0 < len(blocks) <= render.SLACK_MAX_BLOCKS
    for block in blocks:
        kind = block["type"]
        assert kind in {"header", "section", "divider", "context"}, kind
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= render.SLACK_MAX_HEADER
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] in {"mrkdwn", "plain_text"}
                assert 0 < len(block["text"]["text"]) <= render.SLACK_MAX_TEXT
            for f in block.get("fields", []):
                assert f["type"] in {"mrkdwn", "plain_text"}
                assert 0 < len(f["text"]) <= render.SLACK_MAX_FIELD_TEXT
            assert len(block.get("fields", [])) <= render.SLACK_MAX_FIELDS
        elif kind == "context":
            assert 0 < len(block["elements"]) <= render.SLACK_MAX_CONTEXT_ELEMENTS
            for element in block["elements"]:
                assert element["type"] in {"mrkdwn", "plain_text", "image"}
                assert len(element.get("text", "x")) <= render.SLACK_MAX_TEXT
        else:
            assert set(block) == {"type"}


def test_slack_payload_is_block_kit_within_limits() -> None:
    payload = render.slack(sample())
    check_block_kit(payload)
    text = str(payload)
    assert "Campaign 0" in text
    assert "high_cpl_pause" in text
    assert "Messages parked" in text
    assert "(+2 since the last report)" in text


def test_slack_payload_stays_within_limits_with_many_long_campaigns() -> None:
    payload = render.slack(sample(60, name="A very long campaign name " * 20))
    check_block_kit(payload)
    assert "…and 45 more campaigns" in str(payload)


def test_slack_escapes_what_mrkdwn_would_read_as_markup() -> None:
    payload = render.slack(sample(1, name="<!channel> & friends"))
    assert "<!channel>" not in str(payload)
    assert "&lt;!channel&gt; &amp; friends" in str(payload)


def parse(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_email_is_text_and_html_with_the_chart_inline() -> None:
    report = sample()
    png = chart.render(report.series, report.currency)
    message = parse(render.email(report, sender="leadwire@example.com", recipients=["ops@example.com"],
                                 chart_png=png))
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()  # type: ignore[misc]
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert image.get_content_type() == "image/png"
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html_part.get_content()
    assert image.get_payload(decode=True) == png
    assert message["Subject"].startswith("[leadwire] Daily report Wed 14 Jan 2026 · Main account · 4 problems")
    assert "Cost per lead" in plain.get_content()
    # No script, no remote resource: mail clients block both.
    assert not re.search(r"<script|https?://", html_part.get_content())


def test_chart_is_a_png_of_the_drawn_size() -> None:
    report = sample()
    image = Image.open(io.BytesIO(chart.render(report.series, "USD")))
    assert image.format == "PNG"
    assert image.size == (chart.WIDTH, chart.HEIGHT)
    # Something was drawn: bars (light blue) and the cost-per-lead line (red) are there.
    colours = {c for _, c in image.getcolors(maxcolors=1_000_000) or []}
    assert chart.BAR in colours
    assert chart.LINE in colours
    # No spend at all still draws (an empty chart, no division by zero).
    assert chart.render([(DAY, 0, 0)], "JPY").startswith(b"\x89PNG")


def test_text_lists_totals_campaigns_rules_and_stuck() -> None:
    text = render.text(sample())
    for expected in ("Spend", "Cost per signed case", "Organic leads (no ad)", "Test leads", "Campaign 0",
                     "high_cpl_pause",
                     "Messages parked", "parked in crm_sync/lead_captured: 2", "circuit breaker"):
        assert expected in text
