"""Per-account cost targets (LEADWIRE_ACCOUNTS_FILE `targets:`, CONSOLE_TARGET_*): parsing, which target an account
is judged against, the colour a cost gets, and both consumers (the console's Performance rows, the daily report)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.console import logic as console
from services.reports import logic as report_logic
from services.reports import render
from shared.accounts import AccountsConfigError, load_accounts, parse_accounts
from shared.settings import MetaSettings, Settings, SettingsError, TargetSettings, _load
from shared.targets import TargetBook, Targets, target_state

USD, JPY = "act_1000000001", "act_1000000002"
FILE = f"""
accounts:
  - id: {USD}
    targets: {{cpl: 40, cost_per_signed: 450.5}}
  - id: {JPY}
    targets:
      cpl: 3000
      cost_per_qualified: 9000
      cost_per_signed: 60000
  - id: act_1000000003
"""


def test_targets_in_the_file_are_read_per_account_in_major_units(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(FILE, encoding="utf-8")
    usd, jpy, bare = load_accounts(path).accounts
    assert usd.targets is not None
    assert jpy.targets is not None
    assert (usd.targets.cpl, usd.targets.cost_per_qualified, usd.targets.cost_per_signed) == (
        Decimal(40), None, Decimal("450.5"))
    assert (jpy.targets.cpl, jpy.targets.cost_per_qualified, jpy.targets.cost_per_signed) == (
        Decimal(3000), Decimal(9000), Decimal(60000))
    assert bare.targets is None


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("{cpl: 0}", "accounts[0] (act_1).targets.cpl: Input should be greater than 0"),
        ("{cpl: -5}", "accounts[0] (act_1).targets.cpl: Input should be greater than 0"),
        ("{cost_per_signed: .inf}", "accounts[0] (act_1).targets.cost_per_signed: Input should be a finite number"),
        ("{cost_per_qualified: .nan}", "accounts[0] (act_1).targets.cost_per_qualified: Input should be a finite"),
        ("{cpl: '$30'}", "accounts[0] (act_1).targets.cpl: must be a number"),
        ("{cpl: '30'}", "accounts[0] (act_1).targets.cpl: must be a number"),
        ("{cpl: true}", "accounts[0] (act_1).targets.cpl: must be a number"),
        ("{cpm: 12}", "accounts[0] (act_1).targets.cpm: Extra inputs are not permitted"),
        ("{target_cpl: 12}", "accounts[0] (act_1).targets.target_cpl: Extra inputs are not permitted"),
        ("30", "accounts[0] (act_1).targets: Input should be a valid dictionary"),
    ],
)
def test_bad_targets_are_refused_naming_the_account_and_field(targets: str, expected: str) -> None:
    import yaml

    with pytest.raises(AccountsConfigError) as caught:
        parse_accounts(yaml.safe_load(f"accounts:\n  - id: act_1\n    targets: {targets}\n"))
    assert expected in str(caught.value)


def test_bad_default_targets_stop_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in (("CONSOLE_TARGET_CPL", "-1"), ("CONSOLE_TARGET_CPL", "inf"),
                            ("CONSOLE_TARGET_CURRENCY", "dollars")):
        monkeypatch.setenv(variable, value)
        with pytest.raises(SettingsError) as caught:
            _load(TargetSettings)
        assert variable in str(caught.value)
        monkeypatch.delenv(variable)
    monkeypatch.setenv("CONSOLE_TARGET_CURRENCY", "jpy")
    assert _load(TargetSettings).currency == "JPY"


@pytest.mark.parametrize(
    ("cost_minor", "target", "currency", "state"),
    [(5000, Decimal(50), "USD", "ok"), (6250, Decimal(50), "USD", "warn"), (6251, Decimal(50), "USD", "bad"),
     (None, Decimal(50), "USD", ""), (5000, None, "USD", ""),
     # JPY has no minor unit: 3,750 yen is 25% over a 3,000 yen target, 3,751 beyond.
     (3000, Decimal(3000), "JPY", "ok"), (3750, Decimal(3000), "JPY", "warn"), (3751, Decimal(3000), "JPY", "bad"),
     # The same 3,000 read as cents would be $30: against a $40 target, ok; read as yen against 40 yen, bad.
     (3000, Decimal(40), "USD", "ok"), (3000, Decimal(40), "JPY", "bad")],
)
def test_the_colour_of_a_cost(cost_minor: int | None, target: Decimal | None, currency: str, state: str) -> None:
    assert target_state(None if cost_minor is None else Decimal(cost_minor), target, currency) == state


def book(currency: str = "USD", **defaults: Decimal) -> TargetBook:
    meta = MetaSettings(accounts_file=parse_accounts({"accounts": [
        {"id": USD, "targets": {"cpl": 40}},
        {"id": JPY, "targets": {"cpl": 3000, "cost_per_signed": 60000}},
        {"id": "act_1000000003"},
    ]}))
    return Settings(meta=meta, targets=TargetSettings(currency=currency, **defaults)).target_book()


def test_each_account_has_its_own_targets_and_the_defaults_only_in_their_currency() -> None:
    targets = book(cpl=Decimal(60), cost_per_qualified=Decimal(150), cost_per_signed=Decimal(500))
    # Its own CPL; the other two from the defaults, which are in its currency.
    assert targets.for_account(USD, "usd") == Targets(Decimal(40), Decimal(150), Decimal(500))
    # A yen account: its own only; the dollar defaults never judge it.
    assert targets.for_account(JPY, "JPY") == Targets(Decimal(3000), None, Decimal(60000))
    assert targets.unjudged(JPY, "JPY") == ""  # it is judged (by its own)
    # An account without targets in USD takes the defaults; in EUR, nothing, and the reason is given.
    assert targets.for_account("act_1000000003", "USD") == Targets(Decimal(60), Decimal(150), Decimal(500))
    assert not targets.for_account("act_1000000003", "EUR")
    assert targets.unjudged("act_1000000003", "EUR") == (
        "act_1000000003 is in EUR; CONSOLE_TARGET_* are in USD (CONSOLE_TARGET_CURRENCY): give it `targets:` of "
        "its own in LEADWIRE_ACCOUNTS_FILE")
    # Defaults declared in yen judge yen accounts instead.
    in_yen = book("JPY", cost_per_qualified=Decimal(9000))
    assert in_yen.for_account(JPY, "JPY") == Targets(Decimal(3000), Decimal(9000), Decimal(60000))
    assert in_yen.for_account(USD, "USD") == Targets(Decimal(40))
    # No defaults: nothing to explain.
    assert book().unjudged("act_1000000003", "EUR") == ""


def spend_row(account: str, currency: str, campaign: str, spend_minor: int, leads: int) -> dict[str, Any]:
    return {"account_id": account, "currency": currency, "campaign_id": campaign, "adset_id": None,
            "campaign_name": campaign, "adset_name": None, "spend_minor": spend_minor, "impressions": 1000,
            "meta_leads": leads}


def test_performance_rows_judge_each_account_by_its_own_targets() -> None:
    targets = book(cpl=Decimal(60), cost_per_signed=Decimal(500))
    spend = [spend_row(USD, "USD", "us", 9_000, 2),  # $45 CPL: over its own $40 by < 25%
             spend_row(JPY, "JPY", "jp", 9_000, 2),  # 4,500 yen: over 3,000 by > 25%
             spend_row("act_1000000003", "EUR", "eu", 9_000, 2)]  # €45: no target in EUR
    leads = [{"campaign_id": "us", "adset_id": None, "qualified": 1, "signed": 1},
             {"campaign_id": "jp", "adset_id": None, "qualified": 1, "signed": 1}]
    us, jp, eu = console.performance_rows(spend, leads, targets)
    assert (us["cpl_state"], us["cpsc_state"], us["targets"]) == (
        "warn", "ok", {"cpl": "$40", "per_qualified": "", "per_signed": "$500"})
    assert (jp["cpl_state"], jp["cpsc_state"], jp["targets"]["cpl"]) == ("bad", "ok", "3,000 JPY")
    assert (eu["cpl_state"], eu["cpql_state"], eu["cpsc_state"]) == ("", "", "")
    # Different targets per row: no column head claims one; one account's rows: its own.
    assert console.shared_targets([us, jp, eu]) == {"cpl": "", "per_qualified": "", "per_signed": ""}
    assert console.shared_targets([us]) == us["targets"]
    assert console.unjudged_accounts(spend, targets) == [targets.unjudged("act_1000000003", "EUR")]


def report(currency: str, targets: Targets, spend_minor: int, leads: int,
           unjudged: str = "") -> report_logic.DailyReport:
    day = date(2026, 12, 1)
    rows = report_logic.campaign_rows(
        [{"date": day, "campaign_id": "1", "campaign_name": "Search", "spend_minor": spend_minor, "impressions": 10,
          "leads": leads}], [], day)
    stuck = report_logic.Stuck({}, None, {}, [])
    return report_logic.DailyReport(
        "act_1", "Main", currency, "UTC", day, rows, report_logic.total_row(rows), report_logic.Windows(),
        report_logic.rules_summary([], [], []), stuck, report_logic.daily_series([], day), targets=targets,
        unjudged=unjudged)


def test_the_daily_report_marks_costs_against_the_accounts_targets() -> None:
    over = report("JPY", Targets(cpl=Decimal(3000)), 4_000, 1)  # 4,000 yen per lead: 33% over
    text = render.text(over)
    assert "Targets: cost per lead 3,000 JPY (✓ at or under, ▲ up to 25% over, ▲▲ more)" in text
    assert "4,000 JPY ▲▲" in text
    html = render.email_html(over, None)
    assert "color:#d92d20;background:#fef3f2;font-weight:bold;\">4,000 JPY</td>" in html
    assert ":red_circle:" in str(render.slack(over))
    within = render.text(report("JPY", Targets(cpl=Decimal(3000)), 3_600, 1))
    assert "3,600 JPY ▲" in within
    assert "3,600 JPY ▲▲" not in within
    assert "2,000 JPY ✓" in render.text(report("JPY", Targets(cpl=Decimal(3000)), 2_000, 1))
    # No targets: no marks, and the reason when defaults exist in another currency.
    plain = report("JPY", Targets(), 4_000, 1, unjudged="act_1 is in JPY; CONSOLE_TARGET_* are in USD")
    assert "▲" not in render.text(plain)
    assert "✓" not in render.text(plain)
    assert "Costs not judged: act_1 is in JPY; CONSOLE_TARGET_* are in USD" in render.text(plain)
    assert "font-weight:bold;" not in render.email_html(report("USD", Targets(), 4_000, 1), None)
