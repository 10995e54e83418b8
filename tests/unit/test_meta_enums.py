"""Enum-typed contract fields take Meta's values, from the facebook-business SDK through contracts/meta_enums.py."""

from __future__ import annotations

import json
import typing
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import meta_enums
from contracts.commands import CampaignCommand, CreateCampaignCommand
from shared.meta import sdk_enums

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "contracts"


def test_the_committed_enum_module_matches_the_installed_sdk() -> None:
    assert sdk_enums.MODULE_PATH.read_text(encoding="utf-8") == sdk_enums.render(), (
        "contracts/meta_enums.py is stale for the installed facebook-business SDK: run `make contracts`"
    )


@pytest.mark.parametrize("source", sdk_enums.SOURCES, ids=lambda s: s.name)
def test_each_literal_holds_the_sdks_values(source: sdk_enums.EnumSource) -> None:
    literal = getattr(meta_enums, source.name)
    assert list(typing.get_args(literal)) == sdk_enums.sdk_values(source)
    assert typing.get_args(literal), "an empty enum would refuse every command"


def test_the_create_commands_own_narrower_choices_are_meta_values() -> None:
    statuses = typing.get_args(CreateCampaignCommand.model_fields["status"].annotation)
    assert set(statuses) <= set(typing.get_args(meta_enums.ObjectStatus))


def _create(**changes: Any) -> dict[str, Any]:
    body = json.loads((RESOURCES / "campaign_command_create_campaign_v1.json").read_text(encoding="utf-8"))
    payload = body["payload"]
    payload["command_id"] = str(uuid.uuid4())
    for path, value in changes.items():
        section, key = path.split(".")
        payload[section][key] = value
    return payload


@pytest.mark.parametrize(
    ("path", "wrong", "right"),
    [
        ("ad_set.optimization_goal", "LEADS", "LEAD_GENERATION"),  # issue 15: "LEADS" reached Meta, failed mid-batch
        ("ad_set.billing_event", "IMPRESSION", "IMPRESSIONS"),
        ("ad_set.bid_strategy", "LOWEST_COST", "COST_CAP"),
        ("campaign.bid_strategy", "BID_CAP", "LOWEST_COST_WITH_BID_CAP"),
        ("campaign.objective", "LEAD_GENERATION", "OUTCOME_LEADS"),  # legacy objective: refused on new campaigns
        ("creative.call_to_action", "SIGNUP", "APPLY_NOW"),
    ],
)
def test_a_value_meta_does_not_know_is_refused_before_it_reaches_meta(path: str, wrong: str, right: str) -> None:
    with pytest.raises(ValidationError) as exc:
        CampaignCommand.model_validate(_create(**{path: wrong}))
    assert path.split(".")[1] in str(exc.value)
    command = CampaignCommand.model_validate(_create(**{path: right})).root
    section, key = path.split(".")
    assert getattr(getattr(command, section), key) == right


def test_special_ad_categories_take_metas_current_list() -> None:
    ok = CampaignCommand.model_validate(_create(**{"campaign.special_ad_categories": ["CREDIT"],
                                                   "campaign.special_ad_category_country": ["US"]}))
    assert ok.root.campaign.special_ad_categories == ["CREDIT"]
    with pytest.raises(ValidationError):
        CampaignCommand.model_validate(_create(**{"campaign.special_ad_categories": ["LOANS"]}))
