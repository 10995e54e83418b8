"""Several ad accounts from one configuration (LEADWIRE_ACCOUNTS_FILE): parsing, the settings, and what each
consumer picks per account (rules, pixel, doctor). Pure: files in tmp_path, no services."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.campaign_executor import logic
from services.capi_sender.cli import pixel_for_test_event
from services.capi_sender.events import LeadContact
from services.capi_sender.settings import CapiSettings
from services.capi_sender.worker import Worker
from services.lead_fetcher.cli import pages_to_scan
from services.rules_engine.account_rules import load_account_rules
from shared.accounts import AccountsConfigError, load_accounts, parse_accounts
from shared.doctor import account_findings
from shared.settings import BudgetGuardrailSettings, MetaSettings, SettingsError, _load

GOOD = """
accounts:
  - id: act_1000000001
    name: Houston
    page_ids: [102030405060708]     # unquoted: YAML reads a number
    pixel_id: 778899001122334
  - id: act_1000000002
    page_ids: ["555"]
    pixel_id: "778899001122335"
    rules_dir: tokyo_rules
"""

RULE = """
name: {name}
scope: {{level: adset{accounts}}}
conditions: {{all: [{{metric: spend, window: today, op: ">", value: 100}}]}}
actions: [notify]
"""


def write(tmp_path: Path, text: str, name: str = "accounts.yaml") -> Path:
    (tmp_path / "tokyo_rules").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rule(directory: Path, name: str, accounts: str = "") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(RULE.format(name=name, accounts=accounts), encoding="utf-8")


def test_a_good_file_gives_each_account_its_pages_pixel_and_rules(tmp_path: Path) -> None:
    parsed = load_accounts(write(tmp_path, GOOD))
    houston, tokyo = parsed.accounts
    assert (houston.id, houston.name, houston.page_ids, houston.pixel_id, houston.rules_dir) == (
        "act_1000000001", "Houston", ("102030405060708",), "778899001122334", None)
    assert tokyo.rules_dir == tmp_path / "tokyo_rules", "relative to the file, not to the working directory"
    assert parsed.page_ids == ["102030405060708", "555"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("accounts:\n  - id: act_1\n    pixel: '1'\n", "accounts[0] (act_1).pixel: Extra inputs are not permitted"),
        ("accounts: []\nextra: 1\n", "extra: Extra inputs are not permitted"),
        ("accounts:\n  - {id: act_1}\n  - {id: act_1}\n", "account act_1 is listed twice"),
        ("accounts:\n  - {id: '1000000001'}\n", "accounts[0] (1000000001).id: String should match pattern"),
        ("accounts:\n  - {id: act_1, page_ids: ['12a']}\n", "accounts[0] (act_1).page_ids[0]: String should match"),
        ("accounts:\n  - {id: act_1, pixel_id: 'px-1'}\n", "accounts[0] (act_1).pixel_id: String should match"),
        ("accounts:\n  - {id: act_1, page_ids: ['5']}\n  - {id: act_2, page_ids: ['5']}\n",
         "Page 5 is listed under act_1 and act_2"),
        ("accounts:\n  - {id: act_1, page_ids: ['5', '5']}\n", "Page 5 is listed twice"),
        ("accounts:\n  - {id: act_1, rules_dir: nowhere}\n", "is not a directory"),
        ("accounts: []\n", "accounts: Tuple should have at least 1 item"),
        ("- act_1\n", "a mapping with an `accounts` list"),
        ("accounts: [\n", "not valid YAML at line"),
    ],
)
def test_bad_files_are_refused_naming_the_account_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(AccountsConfigError) as caught:
        load_accounts(write(tmp_path, text))
    assert expected in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AccountsConfigError, match=r"cannot read .*missing\.yaml"):
        load_accounts(tmp_path / "missing.yaml")


def test_without_a_file_the_environment_is_the_one_configuration() -> None:
    meta = MetaSettings(_env_file=None, ad_account_id=["act_1", "act_2"], page_ids=["9"], pixel_id="77")
    assert [(a.id, a.page_ids, a.pixel_id, a.rules_dir) for a in meta.accounts] == [
        ("act_1", ("9",), "77", None), ("act_2", ("9",), "77", None)]
    assert meta.pixel_for_page("9") == "77"
    assert meta.pixels_by_page() == {}
    assert meta.rules_dirs() == {}
    assert account_findings(meta) == []


def test_the_file_supplies_the_accounts_and_pages_every_service_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADWIRE_ACCOUNTS_FILE", str(write(tmp_path, GOOD)))
    monkeypatch.setenv("META_PIXEL_ID", "111")
    meta = _load(MetaSettings)
    assert meta.ad_account_id == ["act_1000000001", "act_1000000002"]
    assert meta.page_ids == ["102030405060708", "555"]
    assert meta.pixel_for_page("555") == "778899001122335"
    assert meta.pixel_for_page("102030405060708") == "778899001122334"
    assert meta.pixel_for_page("999") == "111", "a Page of no account: META_PIXEL_ID"
    assert meta.rules_dirs() == {"act_1000000002": tmp_path / "tokyo_rules"}
    assert [f.ok for f in account_findings(meta)] == [True, True]


def test_the_environment_may_only_list_what_the_file_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADWIRE_ACCOUNTS_FILE", str(write(tmp_path, GOOD)))
    monkeypatch.setenv("META_AD_ACCOUNT_ID", "act_1000000001")
    assert _load(MetaSettings).ad_account_id == ["act_1000000001", "act_1000000002"]
    monkeypatch.setenv("META_PAGE_IDS", "102030405060708,444")
    with pytest.raises(SettingsError) as caught:
        _load(MetaSettings)
    assert str(caught.value) == ("invalid setting LEADWIRE_ACCOUNTS_FILE: META_PAGE_IDS lists 444, which the "
                                 "accounts file does not: list every account and Page in the file (or unset the "
                                 "variable)")


def test_a_bad_file_stops_the_settings_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADWIRE_ACCOUNTS_FILE", str(write(tmp_path, "accounts:\n  - {id: act_1, color: red}\n")))
    with pytest.raises(SettingsError, match=r"^invalid setting LEADWIRE_ACCOUNTS_FILE: accounts\[0\] \(act_1\)\.color"):
        _load(MetaSettings)


def test_an_account_without_pages_or_pixel_is_reported_by_the_doctor() -> None:
    meta = MetaSettings(_env_file=None, accounts_file=parse_accounts({"accounts": [
        {"id": "act_1", "page_ids": ["5"], "pixel_id": "6"}, {"id": "act_2"}]}))
    ok, lacking = account_findings(meta)
    assert (ok.ok, ok.subject) == (True, "act_1")
    assert (lacking.ok, lacking.subject, lacking.severity) == (False, "act_2", "warning")
    assert "no Pages" in lacking.summary
    assert "no pixel" in lacking.summary


def test_capi_picks_the_pixel_of_the_leads_account() -> None:
    meta = MetaSettings(_env_file=None, pixel_id="111", accounts_file=parse_accounts({"accounts": [
        {"id": "act_1", "page_ids": ["5"], "pixel_id": "6"}, {"id": "act_2", "page_ids": ["7"]}]}))
    sender = Worker(pool=None, post=None, settings=CapiSettings(_env_file=None),  # type: ignore[arg-type]
                    default_pixel_id=meta.pixel_id, pixels_by_page=meta.pixels_by_page())
    assert sender.pixel_for(LeadContact(page_id="5")) == "6"
    assert sender.pixel_for(LeadContact(page_id="7")) == "111", "an account without a pixel: META_PIXEL_ID"
    assert sender.pixel_for(LeadContact()) == "111"
    assert sender.pixel_for(None) == "111"


def test_each_accounts_rules_judge_that_account_only(tmp_path: Path) -> None:
    default, tokyo = tmp_path / "default", tmp_path / "tokyo"
    rule(default, "pause-losers")
    rule(default, "scoped-elsewhere", accounts=", accounts: [act_2]")
    rule(tokyo, "tokyo-cap")
    rules, problems = load_account_rules(default, {"act_2": tokyo}, ["act_1", "act_2", "act_3"])
    assert problems == []
    scopes = {r.name: r.scope.accounts for r in rules}
    assert scopes == {"pause-losers": ["act_1", "act_3"], "tokyo-cap": ["act_2"]}, (
        "RULES_DIR judges the accounts without rules of their own; a rule naming only such an account is dropped")


def test_a_rule_name_used_twice_is_skipped_and_reported(tmp_path: Path) -> None:
    default, tokyo = tmp_path / "default", tmp_path / "tokyo"
    rule(default, "scale-winners")
    rule(tokyo, "scale-winners")
    rule(tokyo, "other", accounts=", accounts: [act_1]")
    rules, problems = load_account_rules(default, {"act_2": tokyo}, ["act_1", "act_2"])
    assert [(r.name, r.scope.accounts) for r in rules] == [("scale-winners", ["act_1"])]
    messages = sorted(str(p) for p in problems)
    assert any("rule name 'scale-winners' is also used in" in m and "act_2" in m for m in messages), messages
    assert any("names other accounts only" in m for m in messages), messages


def test_without_accounts_of_their_own_the_rules_are_rules_dir_unchanged(tmp_path: Path) -> None:
    rule(tmp_path, "pause-losers", accounts=", accounts: [act_9]")
    rules, problems = load_account_rules(tmp_path, {}, [])
    assert [(r.name, r.scope.accounts) for r in rules] == [("pause-losers", ["act_9"])]
    assert problems == []


def test_a_broken_file_in_an_accounts_rules_is_located_with_the_account(tmp_path: Path) -> None:
    default, tokyo = tmp_path / "default", tmp_path / "tokyo"
    rule(default, "pause-losers")
    tokyo.mkdir()
    (tokyo / "bad.yaml").write_text("name: bad\nactions: [explode]\n", encoding="utf-8")
    rules, problems = load_account_rules(default, {"act_2": tokyo}, ["act_1", "act_2"])
    assert [r.name for r in rules] == ["pause-losers"]
    assert problems
    assert all(p.file.startswith("act_2: bad.yaml") for p in problems)


def test_a_backfill_scans_every_accounts_pages_or_only_the_chosen_accounts() -> None:
    meta = MetaSettings(_env_file=None, accounts_file=parse_accounts({"accounts": [
        {"id": "act_1", "page_ids": ["5", "6"]}, {"id": "act_2", "page_ids": ["7"]}]}))
    assert pages_to_scan(meta, [], []) == ["5", "6", "7"]
    assert pages_to_scan(meta, [], ["act_2"]) == ["7"]
    assert pages_to_scan(meta, ["6", "7"], ["act_1"]) == ["6"]
    assert pages_to_scan(meta, ["9"], []) == ["9"]
    with pytest.raises(ValueError, match="no ad account act_3 is configured"):
        pages_to_scan(meta, [], ["act_3"])


def test_an_accounts_own_budget_ceiling_replaces_budget_daily_ceiling_for_it() -> None:
    meta = MetaSettings(_env_file=None, accounts_file=parse_accounts({"accounts": [
        {"id": "act_1", "daily_budget_ceiling": 500}, {"id": "act_2"}]}))
    assert meta.budget_ceilings() == {"act_1": 500}
    limits = BudgetGuardrailSettings(_env_file=None, daily_ceiling=800)
    assert logic.account_ceiling(limits, "JPY", 25_000, meta.budget_ceilings().get("act_1")) == (
        500, " (the account's daily_budget_ceiling, LEADWIRE_ACCOUNTS_FILE)")
    assert logic.account_ceiling(limits, "USD", 25_000, meta.budget_ceilings().get("act_2")) == (
        80_000, " (BUDGET_DAILY_CEILING)")


@pytest.mark.parametrize("ceiling", [0, -5, "inf", "nan", "lots"])
def test_a_bad_budget_ceiling_is_refused(ceiling: object) -> None:
    with pytest.raises(AccountsConfigError, match=r"accounts\[0\] \(act_1\)\.daily_budget_ceiling"):
        parse_accounts({"accounts": [{"id": "act_1", "daily_budget_ceiling": ceiling}]})


def test_a_capi_test_event_goes_to_the_chosen_accounts_pixel() -> None:
    meta = MetaSettings(_env_file=None, pixel_id="111", accounts_file=parse_accounts({"accounts": [
        {"id": "act_1", "pixel_id": "6"}, {"id": "act_2"}]}))
    assert pixel_for_test_event(meta, None, None) == "111"
    assert pixel_for_test_event(meta, None, "act_1") == "6"
    assert pixel_for_test_event(meta, None, "act_2") == "111"
    assert pixel_for_test_event(meta, "42", "act_1") == "42"
    with pytest.raises(ValueError, match="no ad account act_9 is configured"):
        pixel_for_test_event(meta, None, "act_9")
