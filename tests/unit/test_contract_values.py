"""Value rules of the contracts (contracts/values.py): ASCII-digit ids, finite numbers, plausible epochs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.commands import AdSetSpec, CommandResult, PauseCommand
from contracts.conversions import ConversionRequested
from contracts.insights import InsightsUpdated
from contracts.leads import LeadgenReceived, RedeliverLead
from shared.meta.customer_data import InvalidFieldError, normalize_lead_id

ARABIC_INDIC = "١٢٣٤٥٦٧٨٩٠١٢٣٤٥"  # 15 Arabic-Indic digits: `\d` and str.isdigit() accept them
FULLWIDTH = "１２３４５６７８９０１２３４５"
NOT_ASCII = [ARABIC_INDIC, FULLWIDTH, "12345６"]


@pytest.mark.parametrize("digits", NOT_ASCII)
@pytest.mark.parametrize("field", ["leadgen_id", "page_id", "form_id", "ad_id", "adgroup_id"])
def test_webhook_ids_must_be_ascii_digits(field: str, digits: str) -> None:
    good = {"leadgen_id": "123456789012345", "page_id": "987654321"}
    LeadgenReceived(**good)
    with pytest.raises(ValidationError, match=field):
        LeadgenReceived(**{**good, field: digits})


@pytest.mark.parametrize("digits", NOT_ASCII)
def test_command_and_other_ids_must_be_ascii_digits(digits: str) -> None:
    with pytest.raises(ValidationError):
        RedeliverLead(leadgen_id=digits)
    with pytest.raises(ValidationError):
        PauseCommand(object_id=digits, level="ad", account_id="act_1", requested_by="t", reason="t")
    with pytest.raises(ValidationError):
        PauseCommand(object_id="123", level="ad", account_id=f"act_{digits}", requested_by="t", reason="t")
    with pytest.raises(ValidationError):
        InsightsUpdated(account_id=f"act_{digits}", date_since="2026-01-01", date_until="2026-01-02", rows_changed=0)
    with pytest.raises(InvalidFieldError):
        normalize_lead_id(digits)
    assert normalize_lead_id("123456789012345") == "123456789012345"


def _event(**changes: Any) -> dict[str, Any]:
    return {"event_name": "SignedCase", "event_time": 1795208645, "user": {"lead_id": "123456789012345"}, **changes}


@pytest.mark.parametrize("digits", NOT_ASCII)
def test_crm_event_pixel_and_time_must_be_ascii_digits(digits: str) -> None:
    ConversionRequested.model_validate(_event(pixel_id="123"))
    with pytest.raises(ValidationError, match="pixel_id"):
        ConversionRequested.model_validate(_event(pixel_id=digits))
    with pytest.raises(ValidationError, match="event_time"):
        ConversionRequested.model_validate(_event(event_time="1795208645".replace("1", "١")))


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "Infinity", "-Infinity", "NaN"])
@pytest.mark.parametrize(
    ("template", "where"),
    [
        ('{"custom_data": {"value": %s}}', "custom_data.value"),
        ('{"custom_data": {"case_value": %s}}', "custom_data.case_value"),
        ('{"custom_data": {"nested": {"list": [1, %s]}}}', "custom_data.nested.list[1]"),
        ('{"event_time": %s}', "event_time"),
    ],
)
def test_non_finite_numbers_fail_validation_anywhere_in_a_crm_event(literal: str, template: str, where: str) -> None:
    body = json.dumps(_event())[:-1] + ", " + (template % literal)[1:]
    with pytest.raises(ValidationError) as caught:
        ConversionRequested.model_validate_json(body)
    assert where.split(".")[0] in str(caught.value)
    assert "finite" in str(caught.value)


def test_non_finite_numbers_fail_in_free_form_command_fields() -> None:
    spec = {"name": "x", "targeting": {"geo_locations": {"countries": ["US"]}, "age_min": 25}, "page_id": "1"}
    AdSetSpec.model_validate(spec)
    with pytest.raises(ValidationError, match=r"targeting\.age_min: must be a finite number"):
        AdSetSpec.model_validate_json(json.dumps(spec).replace("25", "1e400"))
    result = {"command_id": "6f0c9a52-3b7e-4c36-9a8e-2d1f4b0e7a11", "kind": "pause", "status": "ok",
              "after": {"daily_budget": 1.5}}
    CommandResult.model_validate(result)
    with pytest.raises(ValidationError, match="finite"):
        CommandResult.model_validate_json(json.dumps(result).replace("1.5", "NaN"))


@pytest.mark.parametrize("created_time", [1_795_208_645_000, 10**20, -1])
def test_webhook_created_time_is_range_checked(created_time: int) -> None:
    LeadgenReceived(leadgen_id="123", page_id="456", created_time=1_795_208_645)
    with pytest.raises(ValidationError, match="created_time"):
        LeadgenReceived(leadgen_id="123", page_id="456", created_time=created_time)
