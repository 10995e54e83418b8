"""Campaign command contracts, money helpers, guardrails and audience hashing: pure logic, no I/O."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.commands import (
    ChangeBudgetCommand,
    CreateCampaignCommand,
    SetBudgetCommand,
)
from contracts.messages import CampaignCommandMessage, CommandResultMessage
from services.campaign_executor import audiences, logic
from services.campaign_executor.logic import BudgetFacts, ObjectState
from shared import money
from shared.budget_guardrails import MAX_BUDGET_CHANGES_PER_HOUR, daily_ceiling_minor, spend_floor
from shared.graph.errors import GraphError
from shared.poison import describe
from shared.settings import BudgetGuardrailSettings

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "contracts"
MARY_SHA = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"  # docs/meta-api.md §12.3
PHONE_SHA = "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e"  # 15559876543


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESOURCES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", sorted(RESOURCES.glob("campaign_command_*_v1.json")), ids=lambda p: p.name)
def test_json_examples_parse_and_round_trip(path: Path) -> None:
    body = json.loads(path.read_text(encoding="utf-8"))
    cls = CommandResultMessage if body["type"] == "CommandResult" else CampaignCommandMessage
    message = cls.model_validate(body)
    again = cls.model_validate_json(message.model_dump_json())
    assert again == message
    if cls is CampaignCommandMessage:
        assert message.payload.root.kind == body["payload"]["kind"]
        # The wire JSON is flat: payload.kind, no wrapper object around the command.
        assert json.loads(message.model_dump_json())["payload"]["kind"] == body["payload"]["kind"]


RETIRED_UPLOAD = "retired_campaign_command_upload_audience_v1.json"


def test_a_retired_upload_audience_is_refused_with_the_reason_and_no_row_values() -> None:
    # An old-format message, exactly as senders wrote it before the kind was retired: it still arrives.
    body = _load(RETIRED_UPLOAD)
    with pytest.raises(ValidationError) as caught:
        CampaignCommandMessage.model_validate(body)
    reason = describe(caught.value)
    assert "command kind 'upload_audience' is retired" in reason
    assert "sync_audience" in reason
    assert caught.value.error_count() == 1, "one clear reason, not one error per union member"
    for value in ("mary", "555", "smith", "f1904cf1"):
        assert value not in reason.lower()


def test_the_retired_kind_is_gone_from_the_published_schema() -> None:
    schema = CampaignCommandMessage.model_json_schema()
    kinds = set(schema["$defs"]["CampaignCommand"]["discriminator"]["mapping"])
    assert "sync_audience" in kinds
    assert "upload_audience" not in kinds
    assert "UploadAudienceCommand" not in schema["$defs"]


def _command(**payload: Any) -> dict[str, Any]:
    base = {"command_id": str(uuid.uuid4()), "requested_by": "test"}
    return {"type": "CampaignCommand", "schema_version": 1, "payload": {**base, **payload}}


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"kind": "explode", "object_id": "1", "level": "adset"}, "payload"),
        ({"kind": "set_budget", "object_id": "1", "level": "adset", "amount_minor": -5}, "amount_minor"),
        ({"kind": "set_budget", "object_id": "1", "level": "ad", "amount_minor": 5}, "level"),
        ({"kind": "change_budget", "object_id": "1", "level": "adset"}, "exactly one"),
        ({"kind": "change_budget", "object_id": "1", "level": "adset", "percent": 5, "amount_minor": 5},
         "exactly one"),
        ({"kind": "pause", "object_id": "act_1", "level": "adset"}, "object_id"),
        ({"kind": "pause", "level": "adset"}, "object_id"),
        ({"kind": "upload_audience", "audience_id": "1", "schema": ["EMAIL"], "rows": [["a@b.co"]]}, "retired"),
    ],
)
def test_invalid_commands_fail_validation_with_a_useful_message(payload: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CampaignCommandMessage.model_validate(_command(**payload))
    assert where in describe(caught.value)


def test_validation_errors_do_not_echo_row_values() -> None:
    bad = _command(kind="sync_audience", audience="jane@example.com")
    with pytest.raises(ValidationError) as caught:
        CampaignCommandMessage.model_validate(bad)
    assert "jane" not in describe(caught.value)


def test_create_campaign_needs_exactly_one_budget() -> None:
    body = _load("campaign_command_create_campaign_v1.json")
    body["payload"]["campaign"]["budget"] = {"kind": "daily", "amount_minor": 1000}
    with pytest.raises(ValidationError, match="exactly one budget"):
        CampaignCommandMessage.model_validate(body)


def test_defaults_are_safe() -> None:
    command = CampaignCommandMessage.model_validate(_load("campaign_command_create_campaign_v1.json")).payload.root
    assert isinstance(command, CreateCampaignCommand)
    assert (command.status, command.dry_run, command.force) == ("PAUSED", False, False)


# -- money -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "major", "minor"),
    [("USD", "115.00", 11500), ("usd", "0.015", 2), ("EUR", 7, 700), ("JPY", "8000", 8000), ("TWD", "12", 12),
     ("HUF", "1500", 1500), ("KRW", "1000.4", 1000), ("BHD", "1.23", 123)],
)
def test_major_minor_conversion_uses_the_currency_offset(currency: str, major: Any, minor: int) -> None:
    assert money.to_minor(major, currency) == minor


def test_minor_to_major_and_formatting() -> None:
    assert money.to_major(1150, "USD") == Decimal("11.50")
    assert money.to_major(1150, "JPY") == Decimal(1150)
    assert money.format_money(7500, "USD") == "$75.00"
    assert money.format_money(6240, "USD") == "$62.40"
    assert money.format_money(5000, "USD", exact=False) == "$50"
    assert money.format_money(8000, "JPY") == "8,000 JPY"
    assert money.format_money(123456, "BHD") == "1,234.56 BHD"
    assert money.parse_minor("7500") == 7500
    assert money.parse_minor("0") is None
    assert money.apply_percent(7500, 15) == 8625
    assert money.apply_percent(999, -10) == 899  # 899.1 rounds half up to a whole minor unit


# -- guardrails --------------------------------------------------------------------------------------------------


def _set(amount: int, **kw: Any) -> SetBudgetCommand:
    return SetBudgetCommand(command_id=uuid.uuid4(), requested_by="t", object_id="1", level="adset",
                            amount_minor=amount, **kw)


def _facts(current: int, target: int, **kw: Any) -> BudgetFacts:
    return BudgetFacts(current=current, target=target, currency="USD", changes_last_hour=kw.pop("changes", 0),
                       ceiling=50_000, **kw)


LIMITS = BudgetGuardrailSettings(max_step_pct=20, max_changes_per_hour=4)


@pytest.mark.parametrize(
    ("current", "target", "extra", "guardrail"),
    [
        (10_000, 12_000, {}, None),  # exactly 20 %: allowed
        (10_000, 12_001, {}, "budget_step"),
        (10_000, 7_999, {}, "budget_step"),
        (10_000, 11_000, {"changes": 4}, "budget_changes_per_hour"),
        (10_000, 11_000, {"changes": 3}, None),
        (10_000, 9_000, {"spent": 8_500}, "spend_floor"),  # 9000 < 1.1 * 8500 = 9350
        (10_000, 9_500, {"spent": 8_500}, None),
    ],
)
def test_budget_guardrails(current: int, target: int, extra: dict[str, Any], guardrail: str | None) -> None:
    refusal = logic.budget_refusal(_set(target), _facts(current, target, **extra), LIMITS)
    assert (refusal.guardrail if refusal else None) == guardrail


@pytest.mark.parametrize(
    ("current", "target", "extra", "guardrail"),
    [
        (10_000, 11_000, {"account_daily_total": 49_500}, "daily_ceiling"),
        (10_000, 11_000, {"account_daily_total": 49_000}, None),
        (10_000, 9_000, {"account_daily_total": 90_000}, None),  # lowering is always allowed by the ceiling
        (5_280, 10_000_000, {"first_seen": 5_280}, "hard_max_budget"),  # the issue's $52.80 -> $100,000
        (5_280, 10_560, {"first_seen": 5_280}, None),  # exactly 2x: allowed
        (5_280, 10_561, {"first_seen": 5_280}, "hard_max_budget"),
        (20_000, 15_000, {"first_seen": 5_280}, None),  # above the limit already (a human raised it): may lower
        (10_000, 11_000, {"increases_last_week": 3}, "budget_increases_per_week"),
        (10_000, 11_000, {"increases_last_week": 2}, None),
        (10_000, 9_000, {"increases_last_week": 9}, None),  # decreases are not counted nor limited
    ],
)
def test_hard_budget_limits(current: int, target: int, extra: dict[str, Any], guardrail: str | None) -> None:
    limits = BudgetGuardrailSettings(max_multiple_of_first_seen=2, max_increases_per_week=3)
    refusal = logic.hard_budget_refusal(_set(target), _facts(current, target, **extra), limits)
    assert (refusal.guardrail if refusal else None) == guardrail


def test_metas_budget_block_counts_as_the_hourly_limit_reached() -> None:
    until = datetime(2026, 11, 20, 16, 30, tzinfo=UTC)
    refusal = logic.budget_refusal(_set(11_000), _facts(10_000, 11_000, meta_blocked_until=until), LIMITS)
    assert refusal is not None
    assert refusal.guardrail == "budget_changes_per_hour"
    assert "613/1487632" in refusal.detail
    assert "2026-11-20 16:30 UTC" in refusal.detail
    assert logic.is_budget_block(GraphError("x", code=613, subcode=1487632))
    assert not logic.is_budget_block(GraphError("x", code=613, subcode=5044001))


@pytest.mark.parametrize(
    ("now", "plan", "abandoned"),
    [
        (10_000, {"daily_budget": 12_000, "from": 10_000}, False),  # not applied: decide again
        (12_000, {"daily_budget": 12_000, "from": 10_000}, False),  # applied: finished
        (2_000, {"daily_budget": 12_000, "from": 10_000}, True),  # the operator set $20 meanwhile
        (2_000, {"daily_budget": 12_000}, False),  # an old plan without "from": re-checked like a new decision
    ],
)
def test_an_object_changed_since_an_earlier_attempt_abandons_the_command(
    now: int, plan: dict[str, int], abandoned: bool
) -> None:
    refusal = logic.changed_elsewhere("daily_budget", plan, now, "USD")
    assert (refusal is not None) == abandoned
    if refusal is not None:
        assert refusal.guardrail == "changed_elsewhere"
        assert "$20.00" in refusal.detail
        assert "$100.00" in refusal.detail
        assert "$120.00" in refusal.detail
    assert logic.changed_elsewhere("status", {"status": "PAUSED", "from": "ACTIVE"}, "ARCHIVED") is not None
    assert logic.changed_elsewhere("status", {"status": "PAUSED", "from": "ACTIVE"}, "ACTIVE") is None


def test_a_hard_refusal_says_which_limit_and_why() -> None:
    limits = BudgetGuardrailSettings(max_multiple_of_first_seen=2)
    refusal = logic.hard_budget_refusal(_set(10_000_000), _facts(5_280, 10_000_000, first_seen=5_280), limits)
    assert refusal == logic.Refusal(
        "hard_max_budget",
        "$100,000.00 is above this ad set's limit of $105.60 (2× the $52.80 leadwire first saw)",
    )


def test_the_account_ceiling_is_on_by_default_from_the_first_seen_total(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BUDGET_DAILY_CEILING", "RULES_ACCOUNT_DAILY_BUDGET_CEILING", "BUDGET_MAX_MULTIPLE_OF_FIRST_SEEN"):
        monkeypatch.delenv(name, raising=False)
    defaults = BudgetGuardrailSettings(_env_file=None)
    assert (defaults.max_multiple_of_first_seen, defaults.max_increases_per_week) == (2, 3)
    ceiling, basis = logic.account_ceiling(defaults, "USD", 25_000)
    assert ceiling == 50_000
    assert "2× the $250.00 leadwire first saw" in basis
    set_ceiling = BudgetGuardrailSettings(_env_file=None, daily_ceiling=800)
    assert logic.account_ceiling(set_ceiling, "JPY", 25_000) == (800, " (BUDGET_DAILY_CEILING)")


def test_a_forced_command_needs_a_reason() -> None:
    with pytest.raises(ValidationError, match="forced command must carry a reason"):
        _set(100, force=True)
    with pytest.raises(ValidationError, match="forced command must carry a reason"):
        _set(100, force=True, reason="  ")
    assert _set(100, force=True, reason="the firm's partner asked for it").force


@pytest.mark.parametrize(("spent", "floor"), [(100, 110), (8_500, 9_350), (1, 2), (0, 0), (101, 112)])
def test_spend_floor_is_110_percent_rounded_up_exactly(spent: int, floor: int) -> None:
    assert spend_floor(spent) == floor


def test_one_set_of_budget_settings_reads_the_new_and_the_old_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BUDGET_DAILY_CEILING", "BUDGET_MAX_STEP_PCT", "BUDGET_MAX_CHANGES_PER_HOUR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RULES_ACCOUNT_DAILY_BUDGET_CEILING", "1500")
    monkeypatch.setenv("EXECUTOR_MAX_BUDGET_STEP_PCT", "15")
    old = BudgetGuardrailSettings(_env_file=None)
    assert (old.daily_ceiling, old.max_step_pct, old.max_changes_per_hour) == (1500, 15, MAX_BUDGET_CHANGES_PER_HOUR)
    monkeypatch.setenv("BUDGET_DAILY_CEILING", "800")
    assert BudgetGuardrailSettings(_env_file=None).daily_ceiling == 800


def test_the_daily_ceiling_is_in_major_units_of_each_account_currency() -> None:
    assert daily_ceiling_minor(500, "USD") == 50_000
    assert daily_ceiling_minor(80_000, "JPY") == 80_000
    assert daily_ceiling_minor(None, "USD") is None


@pytest.mark.parametrize(
    ("status", "total", "refused"),
    [("ACTIVE", 30_001, True), ("ACTIVE", 30_000, False), ("PAUSED", 90_000, False)],  # a $200 daily create
)
def test_an_active_create_must_fit_under_the_daily_ceiling(status: str, total: int, refused: bool) -> None:
    body = _load("campaign_command_create_campaign_v1.json")
    body["payload"]["status"] = status
    command = CampaignCommandMessage.model_validate(body).payload.root
    refusal = logic.create_ceiling_refusal(command, total, "USD", 50_000)
    assert (refusal.guardrail if refusal else None) == ("daily_ceiling" if refused else None)
    assert logic.create_ceiling_refusal(command, total, "USD", None) is None


def test_stale_decision_is_refused() -> None:
    refusal = logic.budget_refusal(_set(11_000, expected_current_minor=9_000), _facts(10_000, 11_000), LIMITS)
    assert refusal is not None
    assert refusal.guardrail == "stale_decision"


def test_relative_change_target_is_absolute() -> None:
    pct = ChangeBudgetCommand(command_id=uuid.uuid4(), requested_by="t", object_id="1", level="adset", percent=10)
    delta = ChangeBudgetCommand(command_id=uuid.uuid4(), requested_by="t", object_id="1", level="adset",
                                amount_minor=-500)
    assert logic.budget_target(pct, 7500) == 8250
    assert logic.budget_target(delta, 7500) == 7000
    assert logic.budget_target(_set(9000), 7500) == 9000


@pytest.mark.parametrize(
    ("kind", "status", "refused"),
    [("pause", "DELETED", True), ("unpause", "ARCHIVED", True), ("delete", "ARCHIVED", False),
     ("pause", "ACTIVE", False)],
)
def test_deleted_and_archived_objects(kind: str, status: str, refused: bool) -> None:
    obj = ObjectState("1", "act_1", status, status, None, None)
    assert (logic.object_status_refusal(kind, obj) is not None) == refused


def test_object_state_from_graph_reads_money_strings() -> None:
    obj = ObjectState.from_graph({"id": "9", "account_id": "1000000001", "status": "ACTIVE",
                                  "effective_status": "CAMPAIGN_PAUSED", "daily_budget": "7500"})
    assert (obj.account_id, obj.daily_budget, obj.lifetime_budget) == ("act_1000000001", 7500, None)


def test_create_operations_reference_earlier_steps_and_default_to_paused() -> None:
    command = CampaignCommandMessage.model_validate(_load("campaign_command_create_campaign_v1.json")).payload.root
    ops = {name: (path, params) for name, path, params in logic.create_operations(command)}
    assert list(ops) == ["campaign", "adset", "creative", "ad"]
    campaign = ops["campaign"][1]
    assert campaign["status"] == "PAUSED"
    assert campaign["special_ad_categories"] == []
    assert campaign["is_adset_budget_sharing_enabled"] is False  # budgets on the ad set (v24+)
    assert ops["adset"][1]["campaign_id"] == "{result=campaign:$.id}"
    assert ops["adset"][1]["daily_budget"] == 20000
    assert ops["adset"][1]["promoted_object"] == {"page_id": "102030405060708"}
    assert ops["ad"][1]["creative"] == {"creative_id": "{result=creative:$.id}"}
    link = ops["creative"][1]["object_story_spec"]["link_data"]
    assert link["call_to_action"]["value"]["lead_gen_form_id"] == "120210000000000011"


# -- audiences ---------------------------------------------------------------------------------------------------


def test_values_are_normalized_and_hashed_like_meta_expects() -> None:
    prepared = audiences.prepare_rows(
        ["EMAIL", "PHONE", "FN", "FI", "COUNTRY", "EXTERN_ID", "DOBM"],
        [[" Mary@Example.com ", "(555) 987-6543", "Mary", "Mary", "US", "crm-42", "3"],
         [MARY_SHA.upper(), "", "", "", "", "", ""]],
        "US",
    )
    first, second = prepared.rows
    assert first[0] == MARY_SHA
    assert first[1] == PHONE_SHA  # country code added: 15559876543
    assert first[2] == audiences.sha256_hex("mary")
    assert first[3] == audiences.sha256_hex("m")
    assert first[4] == audiences.sha256_hex("us")
    assert first[5] == "crm-42"  # EXTERN_ID is sent unhashed
    assert first[6] == audiences.sha256_hex("03")
    assert second == [MARY_SHA, "", "", "", "", "", ""]  # already hashed: passed through, lowercased
    assert (prepared.values_hashed, prepared.values_passed_through) == (6, 2)


def test_unusable_values_become_empty_not_hashed_garbage() -> None:
    prepared = audiences.prepare_rows(["EMAIL", "PHONE"], [["not-an-email", "12"], ["x@example.com", "12"]], "US")
    assert prepared.rows == [[audiences.sha256_hex("x@example.com"), ""]]
    assert prepared.values_dropped == 3
    assert prepared.rows_dropped == 1  # nothing usable was left of the first row: not sent


@pytest.mark.parametrize(
    ("schema", "row", "sent"),
    [
        (["EMAIL", "PHONE"], ["", ""], False),  # all empty
        (["EMAIL", "GEN", "COUNTRY"], ["", "f", "US"], False),  # nothing that tells people apart
        (["FN", "LN"], ["Mary", "Smith"], False),  # a name alone matches too many people
        (["FN", "LN", "ZIP"], ["Mary", "Smith", "77001"], True),
        (["FI", "LN", "DOBY"], ["M", "Smith", "1980"], True),
        (["PHONE"], ["+1 202 555 0100"], True),
        (["MADID"], ["6D92078A-8246-4BA4-AE5B-76104861E7DC"], True),
        (["EXTERN_ID", "EMAIL"], ["crm-1", ""], True),
    ],
)
def test_rows_without_a_usable_identifier_are_left_out(schema: list[str], row: list[str], sent: bool) -> None:
    prepared = audiences.prepare_rows(schema, [row], "US")
    assert (len(prepared.rows), prepared.rows_dropped) == ((1, 0) if sent else (0, 1))


def test_rows_are_sent_in_batches_of_ten_thousand() -> None:
    rows = [["x"]] * 25_000
    assert [len(b) for b in audiences.request_chunks(rows)] == [10_000, 10_000, 5_000]


@pytest.mark.parametrize(
    ("effective_status", "budget", "total", "guardrail"),
    [("PAUSED", 10_000, 40_001, "daily_ceiling"), ("PAUSED", 10_000, 40_000, None),
     ("ACTIVE", 10_000, 90_000, None), ("PAUSED", None, 90_000, None)],
)
def test_an_unpause_must_fit_under_the_daily_ceiling(
    effective_status: str, budget: int | None, total: int, guardrail: str | None
) -> None:
    obj = ObjectState("1", "act_1", effective_status, effective_status, budget, None)
    refusal = logic.unpause_ceiling_refusal(obj, total, "USD", 50_000)
    assert (refusal.guardrail if refusal else None) == guardrail
