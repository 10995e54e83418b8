"""Deduplicated reach per window: the insights poller stores what the Graph sandbox answers for whole ranges, and the
rules snapshot uses it (only for the range it was read for) so the frequency cap sees unique people, not the sum of
daily reach.

The witness is the sandbox itself, asked the same question (`level`, `time_range`, no `time_increment`). The
sandbox does deduplicate over a range: it divides the summed daily reach of the group by 1 + 0.15 x (days with
delivery - 1) (`services/graph_sandbox/insights.py` `_format_row`), so over 7 days unique reach is ~1/1.9 of the sum.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from services.insights_poller.logic import DEFAULT_REACH_WINDOWS, Window, reach_window
from services.insights_poller.settings import InsightsSettings
from services.insights_poller.worker import Worker
from services.rules_engine.cli import run_backtest
from services.rules_engine.logic import evaluate
from services.rules_engine.model import EngineSettings, Snapshot
from services.rules_engine.rule_files import load_rules
from services.rules_engine.rule_terms import window_bounds
from services.rules_engine.rules import DEFAULT_RULES_DIR
from services.rules_engine.store import load_snapshot, load_state
from shared.graph import GraphClient
from shared.settings import MetaSettings
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.timeout(60)

MAIN = "act_1000000001"
NY = "America/New_York"
INTERESTS = "Prospecting - Interests"
DEFAULT_RULES = load_rules(DEFAULT_RULES_DIR)


@pytest.fixture
async def frozen_clock(sandbox: SandboxHandle) -> None:
    """The poller and the test read "today" at different moments, and Meta's today grows between them."""
    await sandbox.freeze_clock()


@pytest.fixture
async def clean(db: asyncpg.Pool, frozen_clock: None) -> None:
    """The sandbox's account id is fixed: forget what earlier tests stored for it (window reach cascades)."""
    async with db.acquire() as conn, conn.transaction():
        for table in ("insights_daily", "ads", "adsets", "campaigns", "ad_accounts"):
            await conn.execute(f"delete from {table} where account_id = $1", MAIN)  # noqa: S608
        await conn.execute("delete from rule_actions where account_id = $1", MAIN)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_poller(
    db: asyncpg.Pool, http: aiohttp.ClientSession, sandbox: SandboxHandle, **overrides: Any
) -> Worker:
    meta = MetaSettings(access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret),
                        graph_url=sandbox.url, ad_account_id=[MAIN], request_timeout_seconds=10)
    windows = {"app": 3600.0, "ad_account": 3600.0, "buc": 3600.0, "insights": 3600.0}
    graph = GraphClient(http, meta, registry=CollectorRegistry(), usage_windows=windows)
    overrides.setdefault("poll_seconds", 0.01)
    return Worker(db, graph, InsightsSettings(**overrides), [MAIN])


def today_ny() -> date:
    return datetime.now(ZoneInfo(NY)).date()


async def sandbox_reach(sandbox: SandboxHandle, level: str, window: Window) -> dict[str, tuple[int, int]]:
    """{object id: (reach, impressions)} as the sandbox answers for the whole range at `level`."""
    status, _, body = await sandbox.graph(
        "GET", f"{MAIN}/insights", level=level, time_range=json.dumps(window.time_range()), limit=5000,
        fields=f"{level}_id,reach,impressions",
    )
    assert status == 200, body
    assert "next" not in body.get("paging", {})
    return {row[f"{level}_id"]: (int(row["reach"]), int(row["impressions"])) for row in body["data"]}


async def stored_reach(db: asyncpg.Pool, level: str, label: str) -> dict[str, tuple[int, int]]:
    rows = await db.fetch("select object_id, reach, impressions from insights_window_reach "
                          "where account_id = $1 and level = $2 and window_label = $3", MAIN, level, label)
    return {r["object_id"]: (r["reach"], r["impressions"]) for r in rows}


async def adset_named(db: asyncpg.Pool, name: str) -> str:
    return await db.fetchval("select adset_id from adsets where account_id = $1 and name = $2", MAIN, name)


async def insights_gets(sandbox: SandboxHandle) -> int:
    return (await sandbox.calls())["by_path"].get(f"GET /{MAIN}/insights", 0)


# ------------------------------------------------------------------------------------------------ plain logic


@pytest.mark.parametrize("label", ["today", "yesterday", "last_1_day", "last_3_days", "last_7_days",
                                   "previous_7_days", "previous_30_days"])
def test_reach_windows_cover_the_days_the_rules_windows_cover(label: str) -> None:
    today = date(2026, 3, 1)
    lo, hi = window_bounds(label)
    assert hi is not None
    assert reach_window(label, today) == Window(today - timedelta(days=hi), today - timedelta(days=lo))


def test_reach_windows_setting_refuses_windows_without_a_range() -> None:
    assert InsightsSettings().reach_windows == list(DEFAULT_REACH_WINDOWS)
    assert InsightsSettings(reach_windows="last_7_days, today,last_7_days").reach_windows == ["last_7_days", "today"]
    assert InsightsSettings(reach_windows="").reach_windows == []
    for bad in ("lifetime", "last_7d", "last_0_days"):
        with pytest.raises(ValidationError, match="not a window with a date range"):
            InsightsSettings(reach_windows=bad)


# ------------------------------------------------------------------------------------------------ against the sandbox


async def test_refresh_stores_the_sandboxs_deduplicated_reach_per_window(db, http, sandbox, clean) -> None:
    today = today_ny()
    without = make_poller(db, http, sandbox, reach_windows=[])
    await sandbox.reset_calls()
    await without.refresh_account(MAIN, since=today - timedelta(days=6))
    daily_only = await insights_gets(sandbox)
    assert await db.fetchval("select count(*) from insights_window_reach where account_id = $1", MAIN) == 0

    await sandbox.reset_calls()
    outcome = await make_poller(db, http, sandbox).refresh_account(MAIN, since=today - timedelta(days=6))

    # One sync read per level and window (each fits one page here), nothing else added.
    assert await insights_gets(sandbox) - daily_only == 3 * len(DEFAULT_REACH_WINDOWS)
    stored_rows = 0
    for label in DEFAULT_REACH_WINDOWS:
        window = reach_window(label, today)
        for level in ("adset", "campaign", "ad"):
            expected = await sandbox_reach(sandbox, level, window)
            assert expected, f"the sandbox has {level} delivery over {label}"
            assert await stored_reach(db, level, label) == expected, (label, level)
            stored_rows += len(expected)
        ranges = await db.fetch("select distinct date_since, date_until from insights_window_reach "
                                "where account_id = $1 and window_label = $2", MAIN, label)
        assert [(r["date_since"], r["date_until"]) for r in ranges] == [(window.since, window.until)]
    assert outcome.reach_rows == stored_rows

    # The point of it: unique reach over 7 days is well below the sum of daily reach, so frequency is above 4.
    interests = await adset_named(db, INTERESTS)
    reach, impressions = (await stored_reach(db, "adset", "last_7_days"))[interests]
    summed = await db.fetchrow("select sum(reach) r, sum(impressions) i from insights_daily "
                               "where adset_id = $1 and date between $2 and $3",
                               interests, today - timedelta(days=6), today)
    assert impressions == summed["i"]  # same delivery, counted the same way
    assert summed["i"] / summed["r"] < 4.0 < impressions / reach


async def test_a_refresh_replaces_the_stored_window_reach(db, http, sandbox, clean) -> None:
    today = today_ny()
    await make_poller(db, http, sandbox).refresh_account(MAIN, since=today)
    before = await stored_reach(db, "adset", "last_3_days")

    await sandbox.restate(factor=1.5, days=3)
    await make_poller(db, http, sandbox, reach_windows=["last_3_days"]).refresh_account(MAIN, since=today)

    after = await stored_reach(db, "adset", "last_3_days")
    assert after == await sandbox_reach(sandbox, "adset", reach_window("last_3_days", today))
    assert set(after) == set(before)
    assert all(after[k][1] > before[k][1] for k in after)  # the restated numbers, not a second copy
    labels = await db.fetch("select distinct window_label from insights_window_reach where account_id = $1", MAIN)
    assert [r["window_label"] for r in labels] == ["last_3_days"]  # windows no longer read are gone


async def test_a_window_too_big_to_read_is_left_out(db, http, sandbox, clean) -> None:
    # Sync reads of more than 5 rows are refused: ad-level daily rows go async, ad sets (8) cannot be read sync,
    # campaigns (3) can.
    await sandbox.insights(sync_row_limit=5)
    outcome = await make_poller(db, http, sandbox, reach_windows=["last_7_days"]).refresh_account(
        MAIN, since=today_ny())

    assert outcome.ok
    assert outcome.mode == "async"
    assert await stored_reach(db, "adset", "last_7_days") == {}
    assert await stored_reach(db, "ad", "last_7_days") == {}
    campaigns = await stored_reach(db, "campaign", "last_7_days")
    assert campaigns == await sandbox_reach(sandbox, "campaign", reach_window("last_7_days", today_ny()))


async def test_the_frequency_cap_uses_unique_reach_for_its_own_range_only(db, http, sandbox, clean) -> None:
    today = today_ny()
    await make_poller(db, http, sandbox).refresh_account(MAIN, since=today - timedelta(days=6))
    interests = await adset_named(db, INTERESTS)
    stored = (await stored_reach(db, "adset", "last_7_days"))[interests][0]
    now = datetime.now(UTC)

    async with db.acquire() as conn:
        snap = await load_snapshot(conn, DEFAULT_RULES, [MAIN], now, lookback_cap=35, qualified_events=[],
                                   signed_events=[])
        tomorrow = await load_snapshot(conn, DEFAULT_RULES, [MAIN], now + timedelta(days=1), lookback_cap=35,
                                       qualified_events=[], signed_events=[])
        state = await load_state(conn, [MAIN], now, ceiling_major=None)

    assert snap.window_reach[(interests, "last_7_days")] == stored
    assert {w for _, w in snap.window_reach} == {"last_3_days", "last_7_days"}  # the windows the rules use
    # A day later the stored ranges are not that day's windows: nothing is used, the rules fall back.
    assert tomorrow.window_reach == {}

    def capped(snapshot: Snapshot) -> set[str]:
        decisions = evaluate(DEFAULT_RULES, snapshot, state, now, EngineSettings())
        return {d.entity_id for d in decisions if d.rule == "frequency-cap" and d.outcome != "not_matched"}

    assert capped(snap) == {interests}
    assert capped(Snapshot(entities=snap.entities, rows=snap.rows)) == set()  # summed daily reach: never fires


AD_FREQUENCY_RULE = """
name: ad-frequency
enabled: true
scope: {{level: ad, status: [ACTIVE]}}
conditions:
  all:
    - {{metric: frequency, window: last_7_days, op: ">", value: {threshold}}}
actions:
  - type: pause
"""


async def test_frequency_over_7_days_of_an_ad_comes_from_its_window_reach(
    db, http, sandbox, clean, tmp_path
) -> None:
    """Issue 15: an ad-level frequency rule never fired, its 7-day frequency computed from summed daily reach.
    Frequency over 7 days = impressions / Meta's deduplicated reach of the ad over those 7 days."""
    today = today_ny()
    await make_poller(db, http, sandbox, reach_windows=["last_7_days"]).refresh_account(
        MAIN, since=today - timedelta(days=6))
    window = await stored_reach(db, "ad", "last_7_days")
    assert window == await sandbox_reach(sandbox, "ad", reach_window("last_7_days", today))
    summed = {r["ad_id"]: (int(r["r"]), int(r["i"])) for r in await db.fetch(
        "select ad_id, sum(reach) r, sum(impressions) i from insights_daily where account_id = $1 "
        "and date between $2 and $3 group by ad_id", MAIN, today - timedelta(days=6), today)}
    assert all(summed[ad][1] == impressions for ad, (_, impressions) in window.items())  # same delivery
    windowed = {ad: impressions / reach for ad, (reach, impressions) in window.items() if reach}
    daily = {ad: i / r for ad, (r, i) in summed.items() if r}
    # A threshold above every ad's summed-reach frequency, below the highest true 7-day frequency.
    top = max(windowed, key=windowed.__getitem__)
    threshold = round(max(daily.values()) + 0.01, 2)
    assert threshold < windowed[top]
    (tmp_path / "ad_frequency.yaml").write_text(AD_FREQUENCY_RULE.format(threshold=threshold), encoding="utf-8")
    rules = load_rules(tmp_path)
    now = datetime.now(UTC)
    async with db.acquire() as conn:
        snap = await load_snapshot(conn, rules, [MAIN], now, lookback_cap=35, qualified_events=[], signed_events=[])
        state = await load_state(conn, [MAIN], now, ceiling_major=None)
    assert dict(snap.window_reach) == {
        (ad, "last_7_days"): reach for ad, (reach, _) in window.items()}

    def fired(snapshot: Snapshot) -> set[str]:
        decisions = evaluate(rules, snapshot, state, now, EngineSettings())
        return {d.entity_id for d in decisions if d.outcome != "skipped" and d.actions}

    expected = {ad for ad, f in windowed.items() if f > threshold}
    assert top in expected
    assert fired(snap) == expected
    assert fired(Snapshot(entities=snap.entities, rows=snap.rows)) == set()  # summed daily reach: never fires


async def test_the_backtest_asks_meta_for_each_days_window_reach(db, http, sandbox, clean, settings) -> None:
    """`leadwire rules backtest`: frequency over 7 days on each replayed day from Meta's reach of that range."""
    today = today_ny()
    await make_poller(db, http, sandbox, reach_windows=[]).refresh_account(MAIN, since=today - timedelta(days=9))
    meta = MetaSettings(access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret),
                        graph_url=sandbox.url, ad_account_id=[MAIN], request_timeout_seconds=10)
    with_meta = settings.replace(meta)
    await sandbox.reset_calls()

    text = await run_backtest(with_meta, DEFAULT_RULES_DIR, 3, [MAIN])

    # frequency-cap reads last_7_days at ad set level, refresh-reminder at ad level: 3 days x 2 levels, one call
    # each (one page).
    assert "window reach: 6 ranges asked from Meta" in text
    assert await insights_gets(sandbox) == 6
    capped = [line for line in text.splitlines() if "frequency-cap" in line and INTERESTS in line]
    assert any(" acted " in f" {line} " and "pause" in line for line in capped), text

    summed = await run_backtest(with_meta, DEFAULT_RULES_DIR, 3, [MAIN], meta_reach=False)
    assert "window reach: not asked from Meta" in summed
    assert not [line for line in summed.splitlines() if "frequency-cap" in line and " acted " in f" {line} "]
