"""Each ad account judged against its own cost targets, end to end: the sandbox's USD account and its JPY account read
by the real insights poller, the console's Performance page over HTTP and the daily report as it is rendered.

The witness for the costs is the sandbox's insights API (each campaign's 7 days); the targets are set relative to
them (the USD account's CPL target 10% under its costs, the JPY account's twice its costs, in yen), and the global
CONSOLE_TARGET_CPL is a dollar amount so small that any cost judged by it would be red.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from pydantic import SecretStr

from services.reports import render
from services.reports import worker as reports_worker
from services.reports.settings import ReportSettings
from shared.accounts import AccountsFile, parse_accounts
from shared.money import offset
from shared.settings import CrmOutcomeSettings, MetaSettings, NotifySettings, Settings, TargetSettings
from shared.targets import TargetBook
from tests.fixtures.console import running_console
from tests.fixtures.infra import AMQP_URL
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_accounts import refresh
from tests.integration.test_daily_report import sandbox_numbers
from tests.integration.test_rules_engine import JPY, MAIN

pytestmark = pytest.mark.timeout(120)

TINY_USD = Decimal("0.01")  # the global CPL target: any cost judged by it is red


@dataclass
class Accounts:
    db: asyncpg.Pool
    sandbox: SandboxHandle
    zones: dict[str, ZoneInfo]
    currencies: dict[str, str]


def file(targets: dict[str, dict[str, Any]]) -> AccountsFile:
    return parse_accounts({"accounts": [{"id": account, **({"targets": targets[account]} if account in targets else {})}
                                        for account in (MAIN, JPY)]})


def meta(sandbox: SandboxHandle, accounts: AccountsFile) -> MetaSettings:
    return MetaSettings(_env_file=None, access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret),
                        graph_url=sandbox.url, request_timeout_seconds=10, accounts_file=accounts)


@pytest.fixture
async def two_accounts(console_db: asyncpg.Pool, sandbox: SandboxHandle) -> Accounts:
    await sandbox.freeze_clock()  # Meta's "today" grows while the test runs: hold it
    await refresh(console_db, meta(sandbox, file({})))
    state = sandbox.state["accounts"]
    zones = {a: ZoneInfo(state[a]["timezone_name"]) for a in (MAIN, JPY)}
    currencies = {a: str(state[a]["currency"]) for a in (MAIN, JPY)}
    assert currencies == {MAIN: "USD", JPY: "JPY"}
    return Accounts(console_db, sandbox, zones, currencies)


def major(spend_minor: int, leads: int, currency: str) -> Decimal:
    return Decimal(spend_minor) / leads / offset(currency)


def expected_state(cost: Decimal, target: Decimal) -> str:
    """The colour as the README states it, written out: at or under, up to 25% over, beyond."""
    return "ok" if cost <= target else "warn" if cost <= target * Decimal("1.25") else "bad"


def cpl_cells(page: str) -> dict[str, tuple[str, str]]:
    """Campaign id -> (the CPL cell's state class, its tooltip) on the Performance page."""
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        found = re.search(r'campaign=(\d+)">.*?<td class="num target (\w*)" data-testid="cpl"(?: title="([^"]*)")?',
                          row, re.S)
        if found:
            out[found[1]] = (found[2], found[3] or "")
    return out


async def seven_days(accounts: Accounts, account: str, last: date) -> dict[str, Decimal]:
    """Each campaign's CPL (major units) over the 7 days ending on `last`, as the sandbox's insights say."""
    numbers = await sandbox_numbers(accounts.sandbox, account, last - timedelta(days=6), last, "campaign")
    return {c: major(spend, leads, accounts.currencies[account]) for c, (spend, leads) in numbers.items() if leads}


def two_decimals(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def dollars(value: Decimal) -> str:
    """A target as the pages show it: `$45.45`, `$45` when whole."""
    return f"${value:,.2f}".removesuffix(".00")


async def test_performance_judges_each_accounts_campaigns_by_its_own_targets(
    two_accounts: Accounts, settings: Settings, console_dsn: str
) -> None:
    today = {a: datetime.now(z).date() for a, z in two_accounts.zones.items()}
    usd = await seven_days(two_accounts, MAIN, today[MAIN])
    jpy = await seven_days(two_accounts, JPY, today[JPY])
    assert usd, "the sandbox's USD account brought leads that week"
    assert jpy, "the sandbox's JPY account brought leads that week"
    usd_target = two_decimals(max(usd.values()) / Decimal("1.1"))  # its dearest campaign ~10% over: amber
    jpy_target = (max(jpy.values()) * 2).quantize(Decimal(1))  # yen: every campaign under it: green
    own = file({MAIN: {"cpl": float(usd_target)}, JPY: {"cpl": int(jpy_target)}})

    async with running_console(settings.replace(meta(two_accounts.sandbox, own)), console_dsn,
                               target_cpl=TINY_USD) as console:
        await console.login()
        status, page, _ = await console.get("/performance?days=7")
    assert status == 200
    cells = cpl_cells(page)
    assert set(usd) | set(jpy) <= set(cells)
    for campaign, cpl in usd.items():
        assert cells[campaign] == (expected_state(cpl, usd_target), f"target {dollars(usd_target)}"), campaign
    for campaign in jpy:
        assert cells[campaign] == ("ok", f"target {int(jpy_target):,} JPY"), campaign
    dearest = max(usd, key=lambda c: usd[c])
    assert cells[dearest][0] == "warn"
    # The two accounts' targets differ: no column head claims one.
    assert 'data-testid="target-cpl"' not in page
    assert 'data-testid="unjudged"' not in page

    # Without targets of its own, the JPY account is left uncoloured, never judged by the dollar default.
    async with running_console(settings.replace(meta(two_accounts.sandbox, file({MAIN: {"cpl": float(usd_target)}}))),
                               console_dsn, target_cpl=TINY_USD) as console:
        await console.login()
        _, page, _ = await console.get("/performance?days=7")
    cells = cpl_cells(page)
    for campaign in jpy:
        assert cells[campaign] == ("", ""), campaign
    assert cells[dearest][0] == "warn"
    assert f"{JPY} is in JPY; CONSOLE_TARGET_* are in USD" in page
    # The ad sets of a JPY campaign: that account's targets only, named in the column head.
    async with running_console(settings.replace(meta(two_accounts.sandbox, own)), console_dsn,
                               target_cpl=TINY_USD) as console:
        await console.login()
        _, page, _ = await console.get(f"/performance?days=7&campaign={max(jpy, key=lambda c: jpy[c])}")
    assert f'<small data-testid="target-cpl">target {int(jpy_target):,} JPY</small>' in page


async def test_the_daily_report_judges_each_account_by_its_own_targets(two_accounts: Accounts) -> None:
    day = {a: datetime.now(z).date() - timedelta(days=1) for a, z in two_accounts.zones.items()}
    week = {}
    for account in (MAIN, JPY):
        [(spend, leads)] = (await sandbox_numbers(two_accounts.sandbox, account, day[account] - timedelta(days=6),
                                                  day[account], "account")).values()
        assert leads, f"the sandbox's {account} brought leads that week"
        week[account] = (spend, major(spend, leads, two_accounts.currencies[account]))
    usd_target = two_decimals(week[MAIN][1] / Decimal("1.1"))
    jpy_target = (week[JPY][1] * 2).quantize(Decimal(1))
    defaults = TargetSettings(_env_file=None, cpl=TINY_USD)

    def worker(accounts: AccountsFile) -> reports_worker.Worker:
        book = TargetBook.build(defaults.defaults(), defaults.currency, accounts.accounts)
        return reports_worker.Worker(two_accounts.db, ReportSettings(_env_file=None), NotifySettings(_env_file=None),
                                     CrmOutcomeSettings(_env_file=None), AMQP_URL, book)

    reports = worker(file({MAIN: {"cpl": float(usd_target)}, JPY: {"cpl": int(jpy_target)}}))
    [usd] = await reports.build(MAIN, day[MAIN], parked={})
    [jpy] = await reports.build(JPY, day[JPY], parked={})
    for report, mark, target in ((usd, "▲", dollars(usd_target)), (jpy, "✓", f"{int(jpy_target):,} JPY")):
        text = render.text(report)
        line = next(line for line in text.splitlines() if line.startswith("Cost per lead"))
        assert f"{report.money(report.total.week.cpl)} {mark} " in line, line
        assert f"{mark}{mark[0]}" not in line  # ▲ (up to 25% over), not ▲▲
        assert f"Targets: cost per lead {target} " in text
        colour = {"▲": "color:#b54708;", "✓": "color:#027a48;"}[mark]
        assert f'{colour}background:' in render.email_html(report, None)
    # The costs judged are the sandbox's.
    assert (usd.total.week.spend_minor, jpy.total.week.spend_minor) == (week[MAIN][0], week[JPY][0])

    # The JPY account without targets of its own: no marks, and why; the dollar default never judges it.
    [bare] = await worker(file({MAIN: {"cpl": float(usd_target)}})).build(JPY, day[JPY], parked={})
    text = render.text(bare)
    assert "▲" not in text
    assert "✓" not in text
    assert f"Costs not judged: {JPY} is in JPY; CONSOLE_TARGET_* are in USD" in text
