"""Insights: seeded scenarios, shapes, breakdowns, limits, async report runs, restatement."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures.sandbox import SandboxHandle


def action(row: dict[str, Any], kind: str, key: str = "actions") -> float:
    return next((float(a["value"]) for a in row.get(key, []) if a["action_type"] == kind), 0.0)


async def insights(sandbox: SandboxHandle, obj: str | None = None, **params: Any) -> list[dict[str, Any]]:
    status, _, body = await sandbox.graph("GET", f"{obj or sandbox.account_id}/insights", limit=500, **params)
    assert status == 200, body
    assert "next" not in body.get("paging", {})
    return body["data"]


async def test_seeded_winners_and_losers(sandbox: SandboxHandle) -> None:
    await sandbox.reset(now="23:00")  # the burner's "today" is most of a day's spend by then
    fields = "adset_name,spend,impressions,actions,frequency,cost_per_action_type"
    rows = {r["adset_name"]: r for r in await insights(sandbox, level="adset", date_preset="last_3d", fields=fields)}
    loser, winner = rows["Prospecting - Broad"], rows["Prospecting - Lookalike"]
    assert int(loser["impressions"]) > 1000
    assert float(loser["spend"]) / action(loser, "lead") > 50
    assert action(winner, "lead") > 5
    assert float(winner["spend"]) / action(winner, "lead") < 25
    assert action(winner, "lead", "cost_per_action_type") < 25
    week = {
        r["adset_name"]: r
        for r in await insights(sandbox, level="adset", date_preset="last_7d", fields="adset_name,frequency")
    }
    assert float(week["Prospecting - Interests"]["frequency"]) > 4
    today = {
        r["adset_name"]: r
        for r in await insights(sandbox, level="adset", date_preset="today", fields="adset_name,spend,actions")
    }
    burner = today["Prospecting - Advantage+"]
    assert float(burner["spend"]) > 300
    assert action(burner, "lead") == 0


async def test_row_shape_and_lead_types(sandbox: SandboxHandle) -> None:
    rows = await insights(
        sandbox,
        level="ad",
        date_preset="last_7d",
        time_increment=1,
        fields="ad_id,ad_name,campaign_id,account_currency,spend,impressions,actions",
    )
    row = rows[0]
    assert row.keys() >= {"ad_id", "ad_name", "campaign_id", "account_currency", "spend", "date_start", "date_stop"}
    assert row["date_start"] == row["date_stop"]
    assert row["account_currency"] == "USD"
    assert isinstance(row["spend"], str)
    assert "." in row["spend"]
    for r in rows:
        # `lead` already includes on-Facebook and pixel leads.
        assert action(r, "lead") == action(r, "onsite_conversion.lead_grouped") + action(
            r, "offsite_conversion.fb_pixel_lead"
        )
        assert action(r, "leadgen_grouped") == action(r, "onsite_conversion.lead_grouped")
        assert all(isinstance(a["value"], str) for a in r.get("actions", []))


async def test_levels_add_up_and_filtering(sandbox: SandboxHandle) -> None:
    account = await insights(sandbox, date_preset="last_7d", fields="spend")
    ads = await insights(sandbox, level="ad", date_preset="last_7d", fields="spend")
    assert abs(float(account[0]["spend"]) - sum(float(r["spend"]) for r in ads)) < 0.05
    first = sandbox.state["accounts"][sandbox.account_id]["campaigns"][0]
    filt = json.dumps([{"field": "campaign.id", "operator": "IN", "value": [first]}])
    rows = await insights(sandbox, level="campaign", date_preset="last_7d", fields="campaign_id", filtering=filt)
    assert [r["campaign_id"] for r in rows] == [first]
    camp_rows = await insights(sandbox, first, date_preset="last_7d", fields="spend")
    assert (
        camp_rows[0]["spend"]
        == next(
            r
            for r in await insights(sandbox, level="campaign", date_preset="last_7d", fields="campaign_id,spend")
            if r["campaign_id"] == first
        )["spend"]
    )


async def test_breakdowns_sum_to_total(sandbox: SandboxHandle) -> None:
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    total = await insights(sandbox, adset, date_preset="last_7d", fields="impressions")
    rows = await insights(sandbox, adset, date_preset="last_7d", fields="impressions", breakdowns="age,gender")
    assert len(rows) == 6 * 3
    assert {r["gender"] for r in rows} == {"female", "male", "unknown"}
    assert sum(int(r["impressions"]) for r in rows) == int(total[0]["impressions"])
    rows = await insights(
        sandbox, adset, date_preset="last_7d", fields="impressions", breakdowns='["publisher_platform"]'
    )
    assert {r["publisher_platform"] for r in rows} >= {"facebook", "instagram"}


async def test_time_range_and_jpy(sandbox: SandboxHandle) -> None:
    _, _, _acc = await sandbox.graph("GET", sandbox.state["jpy_account"], fields="currency")
    rows = await insights(
        sandbox, sandbox.state["jpy_account"], date_preset="last_3d", time_increment=1, fields="spend,account_currency"
    )
    assert len(rows) == 3
    assert all("." not in r["spend"] and r["account_currency"] == "JPY" for r in rows)
    since, until = rows[0]["date_start"], rows[-1]["date_stop"]
    ranged = await insights(
        sandbox, sandbox.state["jpy_account"], fields="spend", time_range=json.dumps({"since": since, "until": until})
    )
    assert int(ranged[0]["spend"]) == sum(int(r["spend"]) for r in rows)
    status, _, body = await sandbox.graph("GET", f"{sandbox.account_id}/insights", date_preset="last_decade")
    assert (status, body["error"]["code"]) == (400, 100)


async def test_sync_too_much_data_and_paging(sandbox: SandboxHandle) -> None:
    await sandbox.insights(sync_row_limit=50)
    status, _, body = await sandbox.graph(
        "GET", f"{sandbox.account_id}/insights", level="ad", date_preset="last_30d", time_increment=1
    )
    assert status == 400
    assert (body["error"]["code"], body["error"]["error_subcode"]) == (100, 1487534)
    assert "reduce the amount of data" in body["error"]["message"]
    status, _, body = await sandbox.graph(
        "GET", f"{sandbox.account_id}/insights", level="campaign", date_preset="last_7d", time_increment=1, limit=5
    )
    assert status == 200
    assert len(body["data"]) == 5
    assert body["paging"]["next"]


async def _run_job(sandbox: SandboxHandle, **params: Any) -> tuple[dict[str, Any], list[str]]:
    status, _, body = await sandbox.graph("POST", f"{sandbox.account_id}/insights", **params)
    assert status == 200, body
    run_id = body["report_run_id"]
    statuses = []
    for _ in range(20):
        _, _, job = await sandbox.graph("GET", run_id)
        statuses.append(job["async_status"])
        if job["async_status"] in ("Job Completed", "Job Failed", "Job Skipped"):
            return job, statuses
    raise AssertionError(statuses)


async def test_async_report_progression_and_result(sandbox: SandboxHandle) -> None:
    job, statuses = await _run_job(sandbox, level="adset", date_preset="last_7d", fields="adset_id,spend")
    assert statuses == ["Job Not Started", "Job Started", "Job Running", "Job Completed"]
    assert job["async_percent_completion"] == 100
    status, _, page = await sandbox.graph("GET", f"{job['id']}/insights", limit=3)
    assert status == 200
    assert len(page["data"]) == 3
    assert page["paging"]["next"]


async def test_async_report_failures(sandbox: SandboxHandle) -> None:
    await sandbox.insights(job_fail=True)
    job, _ = await _run_job(sandbox, level="ad", date_preset="last_7d")
    assert job["async_status"] == "Job Failed"
    assert (job["error_code"], job["error_subcode"]) == (-2, 2490547)
    status, _, _body = await sandbox.graph("GET", f"{job['id']}/insights")
    assert status == 400
    await sandbox.insights(job_fail=False, job_skip=True)
    job, _ = await _run_job(sandbox, level="ad", date_preset="last_7d")
    assert job["async_status"] == "Job Skipped"


async def test_async_fails_on_too_many_campaigns_until_split(sandbox: SandboxHandle) -> None:
    await sandbox.insights(max_campaigns_per_job=1, polls_to_complete=1)
    job, _ = await _run_job(sandbox, level="campaign", date_preset="last_7d")
    assert (job["async_status"], job["error_subcode"]) == ("Job Failed", 1487534)
    campaigns = sandbox.state["accounts"][sandbox.account_id]["campaigns"]
    for half in (campaigns[:1], campaigns[1:2]):
        filt = json.dumps([{"field": "campaign.id", "operator": "IN", "value": half}])
        job, _ = await _run_job(sandbox, level="campaign", date_preset="last_7d", filtering=filt)
        assert job["async_status"] == "Job Completed"


async def test_restatement_changes_recent_days_only(sandbox: SandboxHandle) -> None:
    params = {"level": "account", "date_preset": "last_7d", "time_increment": 1, "fields": "spend"}
    before = {r["date_start"]: float(r["spend"]) for r in await insights(sandbox, **params)}
    await sandbox.restate(factor=1.5, days=3)
    after = {r["date_start"]: float(r["spend"]) for r in await insights(sandbox, **params)}
    days = sorted(before)
    assert [after[d] == before[d] for d in days] == [True] * 5 + [False] * 2  # today is not in last_7d
    assert after[days[-1]] > before[days[-1]] * 1.4


async def test_large_seed(sandbox: SandboxHandle) -> None:
    state = await sandbox.reset(seed=1, ads=1000, days=30)
    assert len(state["accounts"][sandbox.account_id]["ads"]) == 1000
    status, _, body = await sandbox.graph(
        "GET", f"{sandbox.account_id}/insights", level="ad", date_preset="last_30d", time_increment=1
    )
    assert (status, body["error"]["error_subcode"]) == (400, 1487534)


async def spend_today(sandbox: SandboxHandle, adset_name: str) -> float | None:
    rows = await insights(sandbox, level="adset", date_preset="today", fields="adset_name,spend")
    return next((float(r["spend"]) for r in rows if r["adset_name"] == adset_name), None)


async def test_today_grows_through_the_day_on_the_sandbox_clock(sandbox: SandboxHandle) -> None:
    burner = "Prospecting - Advantage+"
    await sandbox.set_clock("00:00", frozen=True)
    assert await spend_today(sandbox, burner) is None  # nothing delivered yet at midnight
    await sandbox.set_clock("06:00", frozen=True)
    quarter = await spend_today(sandbox, burner)
    await sandbox.set_clock("18:00", frozen=True)
    three_quarters = await spend_today(sandbox, burner)
    assert quarter
    assert three_quarters
    assert three_quarters == pytest.approx(3 * quarter, rel=0.01)
    yesterday = await insights(sandbox, level="adset", date_preset="yesterday", fields="adset_name,spend")
    assert float(next(r["spend"] for r in yesterday if r["adset_name"] == burner)) > three_quarters / 0.75 * 0.7


async def test_clock_is_read_in_the_accounts_time_zone_and_survives_until_reset(sandbox: SandboxHandle) -> None:
    clock = await sandbox.control("POST", "clock", {"now": "2026-03-08T06:30:00+00:00", "frozen": True})
    assert clock["now"] == "2026-03-08T06:30:00+00:00"
    assert clock["frozen"]
    assert (await sandbox.control("GET", "clock"))["epoch"] == clock["epoch"]  # frozen: it does not tick
    # 23:30 in New York on a winter day is 04:30 UTC the next day.
    late = await sandbox.control("POST", "clock", {"now": "23:30"})
    local = datetime.fromtimestamp(late["epoch"], ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (23, 30)
    assert not late["frozen"]
    assert (await sandbox.reset())["clock"]["offset_seconds"] == pytest.approx(0, abs=5)  # reset: the machine's time


@pytest.mark.parametrize("body", [{}, {"now": "25:00"}, {"now": "09:00+02:00"}, {"now": "2026-12-03T09:00:00"},
                                  {"now": "tomorrow"}])
async def test_a_clock_setting_it_cannot_read_is_a_400(sandbox: SandboxHandle, body: dict[str, Any]) -> None:
    async with sandbox.session.post(f"{sandbox.url}/_sandbox/clock", json=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("clock: ")


async def _lead_records(sandbox: SandboxHandle, ad_id: str) -> list[dict[str, Any]]:
    status, _, body = await sandbox.graph("GET", f"{ad_id}/leads", fields="id,ad_id,adset_name,form_id", limit=500)
    assert status == 200, body
    assert "next" not in body.get("paging", {})
    return body["data"]


async def test_leads_in_insights_are_exactly_the_lead_records(sandbox: SandboxHandle) -> None:
    rows = await insights(sandbox, level="ad", date_preset="maximum", fields="ad_id,actions")
    reported = {r["ad_id"]: int(action(r, "leadgen_grouped")) for r in rows}
    assert sum(reported.values()) > 100, "a month of seeded on-Facebook leads"
    for ad_id, count in reported.items():
        assert len(await _lead_records(sandbox, ad_id)) == count, ad_id

    # A new lead on an ad shows in today's numbers, attributed with ids and names.
    winner = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    winner_ads = {r["ad_id"] for r in await insights(sandbox, obj=winner, level="ad", fields="ad_id")}
    ad_id = next(a for a in sorted(winner_ads) if reported.get(a))
    today = {r["ad_id"]: int(action(r, "leadgen_grouped"))
             for r in await insights(sandbox, level="ad", date_preset="today", fields="ad_id,actions")}
    form_id = (await _lead_records(sandbox, ad_id))[0]["form_id"]
    await sandbox.create_leads(form_id=form_id, ad_id=ad_id, count=2, deliver=False)
    after = {r["ad_id"]: int(action(r, "leadgen_grouped"))
             for r in await insights(sandbox, level="ad", date_preset="today", fields="ad_id,actions")}
    assert after[ad_id] == today.get(ad_id, 0) + 2
    records = await _lead_records(sandbox, ad_id)
    assert len(records) == reported[ad_id] + 2
    assert {r["adset_name"] for r in records} == {"Prospecting - Lookalike"}


async def test_pauses_and_budget_changes_act_on_spend_from_the_next_hour(sandbox: SandboxHandle) -> None:
    ids = sandbox.state["adsets_by_name"]
    paused, raised = ids["Prospecting - Lookalike"], ids["Prospecting - Broad"]
    await sandbox.set_clock("10:20", frozen=True)
    before = {name: await spend_today(sandbox, name) for name in ("Prospecting - Lookalike", "Prospecting - Broad")}
    status, _, budget = await sandbox.graph("GET", raised, fields="daily_budget")
    assert status == 200
    assert (await sandbox.graph("POST", paused, status="PAUSED"))[0] == 200
    assert (await sandbox.graph("POST", raised, daily_budget=str(2 * int(budget["daily_budget"]))))[0] == 200

    await sandbox.set_clock("16:00", frozen=True)
    # The paused ad set spent until 11:00, the hour it was paused in included; the other spent at twice the rate
    # from 11:00 on. 10:20 is 10 1/3 hours into the day.
    assert await spend_today(sandbox, "Prospecting - Lookalike") == pytest.approx(
        before["Prospecting - Lookalike"] * 11 / (10 + 1 / 3), rel=0.01)
    assert await spend_today(sandbox, "Prospecting - Broad") == pytest.approx(
        before["Prospecting - Broad"] * (11 + 2 * 5) / (10 + 1 / 3), rel=0.01)

    assert (await sandbox.graph("POST", paused, status="ACTIVE"))[0] == 200  # at 16:00: it spends from 16:00
    await sandbox.set_clock("18:00", frozen=True)
    assert await spend_today(sandbox, "Prospecting - Lookalike") == pytest.approx(
        before["Prospecting - Lookalike"] * 13 / (10 + 1 / 3), rel=0.01)
    # Yesterday is history: what was done today does not change it.
    yesterday = await insights(sandbox, level="adset", date_preset="yesterday", fields="adset_name,spend")
    await sandbox.reset()
    again = await insights(sandbox, level="adset", date_preset="yesterday", fields="adset_name,spend")
    assert yesterday == again


async def _leads_on_facebook(sandbox: SandboxHandle, adset_name: str, since: str, until: str) -> float:
    rows = await insights(sandbox, level="adset", fields="adset_name,actions",
                          time_range=json.dumps({"since": since, "until": until}))
    row = next((r for r in rows if r["adset_name"] == adset_name), None)
    return action(row, "onsite_conversion.lead_grouped") if row else 0.0


@pytest.mark.parametrize("pause", [False, True])
async def test_moving_the_clock_forward_delivers_leads_and_a_paused_ad_set_gets_none(
    sandbox: SandboxHandle, pause: bool
) -> None:
    winner = "Prospecting - Lookalike"  # about 4.7 on-Facebook leads a day (its three ads' spend / CPL, 90%)
    start = (await sandbox.freeze_clock())["epoch"]
    if pause:
        assert (await sandbox.graph("POST", sandbox.state["adsets_by_name"][winner], status="PAUSED"))[0] == 200
    zone = ZoneInfo("America/New_York")
    first, last = (datetime.fromtimestamp(t, zone).date().isoformat() for t in (start, start + 2 * 86400))
    before = await _leads_on_facebook(sandbox, winner, first, last)
    records_before = (await sandbox.control("GET", "state"))["leads"]

    later = datetime.fromtimestamp(start + 2 * 86400, zone).isoformat()
    await sandbox.set_clock(later, frozen=True)
    new = await _leads_on_facebook(sandbox, winner, first, last) - before
    records = (await sandbox.control("GET", "state"))["leads"] - records_before
    if pause:
        assert new <= 2  # the hour it was paused in still delivers, then nothing
    else:
        assert 5 <= new <= 16  # two days of it: 9.4 expected
    assert records >= new  # every lead in insights is a record (other ad sets bring theirs)


async def test_a_clock_moved_years_ahead_delivers_only_the_leads_meta_still_keeps(sandbox: SandboxHandle) -> None:
    start = (await sandbox.freeze_clock())["epoch"]
    records = (await sandbox.control("GET", "state"))["leads"]
    later = datetime.fromtimestamp(start + 3 * 365 * 86400, ZoneInfo("America/New_York")).isoformat()
    assert (await sandbox.set_clock(later, frozen=True))["epoch"] == pytest.approx(start + 3 * 365 * 86400)
    # 285 leads make the seeded 30 days: 90 days bring about 850, three years would bring about 10,000.
    delivered = (await sandbox.control("GET", "state"))["leads"] - records
    assert 400 < delivered < 1500
    status, _, body = await sandbox.graph("GET", f"{sandbox.state['form_ids'][0]}/leads", fields="created_time",
                                          limit=500)
    assert status == 200, body
    assert body["data"], "the last 90 days delivered leads"
