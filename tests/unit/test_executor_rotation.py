"""The executor's re-checks of a rotate_creative command against the ads as Meta shows them at execution."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from contracts.commands import CampaignCommand, RotateCreativeCommand
from services.campaign_executor.logic import Refusal, lock_key
from services.campaign_executor.rotation import AdState, Step, next_step, plan_of, reserve_delivers

AD, RESERVE, ADSET = "120000000000000101", "120000000000000201", "120000000000000011"
COMMAND = RotateCreativeCommand(command_id=uuid.uuid4(), requested_by="rules_engine:rotate", object_id=AD,
                                reserve_ad_id=RESERVE, adset_id=ADSET, account_id="act_1")


def ad(status: str = "ACTIVE", effective: str | None = None) -> AdState:
    return AdState(AD, "Crash - video A", status, effective or status, "act_1")


def reserve(status: str = "PAUSED", effective: str | None = None, name: str = "[reserve] Crash - video B") -> AdState:
    return AdState(RESERVE, name, status, effective or status, "act_1")


def guardrail(found: Step | Refusal) -> str:
    assert isinstance(found, Refusal), found
    return found.guardrail


def test_the_command_carries_ids_only_and_parses_from_the_broker() -> None:
    body = {"kind": "rotate_creative", "command_id": str(uuid.uuid4()), "requested_by": "x", "object_id": AD,
            "reserve_ad_id": RESERVE, "adset_id": ADSET}
    parsed = CampaignCommand.model_validate(body).root
    assert isinstance(parsed, RotateCreativeCommand)
    assert parsed.level == "ad"
    with pytest.raises(ValidationError, match="another ad"):
        CampaignCommand.model_validate({**body, "reserve_ad_id": AD})
    with pytest.raises(ValidationError):
        CampaignCommand.model_validate({**body, "reserve_ad_id": "[reserve] video B"})
    # Two rotations in one ad set are serialized on the ad set's ads.
    assert lock_key(parsed) == f"adset-ads:{ADSET}"


def test_a_first_attempt_activates_the_reserve_then_pauses_the_ad() -> None:
    assert next_step(COMMAND, ad(), reserve(), None) == Step(activate=True, pause=True)
    assert plan_of(ad(), reserve()) == {"ad": "PAUSED", "reserve": "ACTIVE",
                                        "from": {"ad": "ACTIVE", "reserve": "PAUSED"}}


@pytest.mark.parametrize(("now_ad", "now_reserve", "expected"), [
    (ad("PAUSED"), reserve(), "ad_not_active"),  # paused in Ads Manager since the decision
    (ad("ARCHIVED"), reserve(), "ad_not_active"),
    (ad(), reserve("ACTIVE"), "reserve_not_paused"),  # someone used the reserve
    (ad(), reserve(name="Crash - video B"), "reserve_not_paused"),  # no longer tagged
    (ad(), reserve("PAUSED", "DISAPPROVED"), "reserve_not_ready"),  # activating it would not deliver
    (ad(), reserve("PAUSED", "WITH_ISSUES"), "reserve_not_ready"),
    (None, reserve(), "not_in_adset"),  # moved, archived or deleted
    (ad(), None, "not_in_adset"),
])
def test_a_first_attempt_is_refused_when_meta_no_longer_agrees(
    now_ad: AdState | None, now_reserve: AdState | None, expected: str
) -> None:
    assert guardrail(next_step(COMMAND, now_ad, now_reserve, None)) == expected


def test_a_reserve_in_a_paused_ad_set_is_ready() -> None:
    assert next_step(COMMAND, ad("ACTIVE", "ADSET_PAUSED"), reserve("PAUSED"), None) == Step(True, True)


def test_a_retry_finishes_or_abandons_what_an_earlier_attempt_started() -> None:
    plan = plan_of(ad(), reserve())
    # Nothing was applied: decided again with every check.
    assert next_step(COMMAND, ad(), reserve(), plan) == Step(activate=True, pause=True)
    # The reserve was activated, the pause did not happen: finish it (the reserve is not "no longer paused").
    assert next_step(COMMAND, ad(), reserve("ACTIVE"), plan) == Step(activate=False, pause=True)
    # Both done: nothing to do.
    assert next_step(COMMAND, ad("PAUSED"), reserve("ACTIVE"), plan).done  # type: ignore[union-attr]
    # The ad was paused while the reserve never was activated: someone else did it.
    assert guardrail(next_step(COMMAND, ad("PAUSED"), reserve(), plan)) == "changed_elsewhere"
    # The reserve was archived since: abandoned, never re-applied from the old plan.
    found = next_step(COMMAND, ad(), reserve("ARCHIVED"), plan)
    assert guardrail(found) == "changed_elsewhere"
    assert "neither the PAUSED an earlier attempt started from nor its target ACTIVE" in found.detail  # type: ignore
    # Activated by the earlier attempt but disapproved since: the ad keeps running.
    assert guardrail(next_step(COMMAND, ad(), reserve("ACTIVE", "DISAPPROVED"), plan)) == "no_active_ad"


def test_the_ad_is_paused_only_once_the_reserve_delivers() -> None:
    assert reserve_delivers(reserve("ACTIVE"), ad()) is None
    assert reserve_delivers(reserve("ACTIVE", "CAMPAIGN_PAUSED"), ad()) is None
    held = reserve_delivers(reserve("ACTIVE", "PENDING_REVIEW"), ad())
    assert held is not None
    assert held.guardrail == "no_active_ad"
    assert "was left running so that the ad set keeps an active ad" in held.detail
    assert reserve_delivers(reserve("PAUSED"), ad()) is not None
