"""crm_sync's plain parts: field mapping, request bodies, failure classification, settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.crm_sync.adapters import is_transient_status, retry_after_seconds
from services.crm_sync.mapping import field_map, ghl_contact, webhook_body
from services.crm_sync.settings import CrmSyncSettings
from shared.leads import StoredLead
from shared.settings import SettingsError, _load


def lead(answers: dict[str, object] | None = None, names: dict[str, object] | None = None) -> StoredLead:
    return StoredLead.from_row({
        "leadgen_id": "100", "page_id": "1", "form_id": "2", "ad_id": "3", "adset_id": "4", "campaign_id": "5",
        "created_time": datetime(2026, 11, 20, tzinfo=UTC), "is_organic": False, "platform": "fb",
        "fields": answers if answers is not None else {
            "full_name": "Mary Ann Smith", "email": "mary@example.com", "phone_number": ["+15555550100"],
            "case_details": "rear-ended", "empty": "",
        },
        "names": names if names is not None else {"campaign_name": "PI Q4", "ad_name": "Video A"},
    })


def test_repr_never_shows_answers() -> None:
    assert "mary" not in repr(lead())
    assert "Mary" not in repr(lead())


def test_webhook_body_maps_defaults_overrides_and_passes_the_rest() -> None:
    body = webhook_body(lead(), field_map({"email": "email_address", "case_details": None}))
    assert body["fields"] == {"name": "Mary Ann Smith", "email_address": "mary@example.com",
                              "phone": "+15555550100"}
    assert body["campaign_name"] == "PI Q4"
    assert body["adset_name"] is None
    assert body["created_time"] == "2026-11-20T00:00:00+00:00"
    json.dumps(body)  # serialisable


FIELDS = {"contact.case_details": "f-case", "contact.meta_lead_id": "f-lead", "contact.meta_lead_form": "f-form",
          "contact.meta_campaign": "f-camp", "contact.meta_lead_answers": "f-answers"}


def resolver(fields: dict[str, str]) -> Callable[[str], str | None]:
    def resolve(target: str) -> str | None:
        if target in fields.values():
            return target
        return fields.get(target if target.startswith("contact.") else f"contact.{target}")

    return resolve


def test_ghl_contact_by_the_spec() -> None:
    contact = ghl_contact(lead(), "loc", resolver(FIELDS), {"case_details": "case_details", "missing": "contact.x"})
    body = contact.body
    assert body["locationId"] == "loc"
    assert (body["firstName"], body["lastName"], body["name"]) == ("Mary", "Ann Smith", "Mary Ann Smith")
    assert (body["email"], body["phone"]) == ("mary@example.com", "+15555550100")
    assert body["source"] == "Meta Lead Ads: PI Q4"
    assert "tags" not in body  # the upsert's tags replace the contact's: tags go through POST /contacts/{id}/tags
    assert contact.tags == ["meta lead ads", "paid", "campaign: PI Q4", "ad set: 4", "ad: Video A", "form: 2"]
    assert body["customFields"] == [
        {"id": "f-case", "field_value": "rear-ended"}, {"id": "f-lead", "field_value": "100"},
        {"id": "f-form", "field_value": "2"}, {"id": "f-camp", "field_value": "PI Q4"},
    ]
    assert contact.unmapped is None
    assert contact.note is None
    assert contact.matchable


def test_ghl_contact_converts_country_birth_date_and_gender_and_keeps_the_rest() -> None:
    answers = {"email": "a@b.co", "country": "United States", "date_of_birth": "2/16/1997", "gender": "F",
               "favourite_colour": "green", "state": "AZ"}
    contact = ghl_contact(lead(answers, {}), "l", resolver({}), {"favourite_colour": "contact.colour"})
    assert (contact.body["country"], contact.body["dateOfBirth"], contact.body["gender"]) == ("US", "1997-02-16",
                                                                                           "female")
    assert contact.missing == ["contact.colour"]
    assert contact.unmapped == "favourite_colour: green"  # the location has no such field: kept, not dropped
    assert contact.note is not None
    assert "favourite_colour: green" in contact.note
    assert "customFields" not in contact.body


def test_ghl_contact_unconvertible_answers_are_kept_not_sent_wrong() -> None:
    answers = {"phone_number": "+15555550100", "country": "Atlantis", "date_of_birth": "someday", "gender": "other"}
    contact = ghl_contact(lead(answers, {}), "l", resolver(FIELDS), {})
    assert not {"country", "dateOfBirth", "gender"} & set(contact.body)
    answers_field = next(f["field_value"] for f in contact.body["customFields"] if f["id"] == "f-answers")
    assert answers_field.splitlines() == ["country: Atlantis", "date_of_birth: someday", "gender: other"]
    assert contact.note is None


def test_ghl_contact_keeps_given_first_and_last_names() -> None:
    contact = ghl_contact(lead({"first_name": "Ann", "last_name": "Lee", "full_name": "Dr Ann Lee"}, {}), "l",
                          resolver({}), {})
    assert (contact.body["firstName"], contact.body["lastName"]) == ("Ann", "Lee")
    assert "customFields" not in contact.body
    assert contact.body["source"] == "Meta Lead Ads: 5"
    assert not contact.matchable  # neither e-mail nor phone: the adapter updates its recorded contact instead


@pytest.mark.parametrize(("status", "transient"),
                         [(500, True), (502, True), (503, True), (408, True), (429, True), (400, False),
                          (401, False), (403, False), (404, False), (409, False), (422, False), (301, False)])
def test_transient_statuses(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient


def test_retry_after() -> None:
    assert retry_after_seconds("30") == 30
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert retry_after_seconds(None) is None


def test_settings_demand_the_webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_WEBHOOK_URL", "https://crm.example.com/hook")
    monkeypatch.delenv("CRM_WEBHOOK_SECRET", raising=False)
    with pytest.raises(SettingsError, match="CRM_WEBHOOK_SECRET"):
        _load(CrmSyncSettings)


def test_settings_ghl_needs_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_API_TOKEN", "token-123456")
    monkeypatch.delenv("GHL_LOCATION_ID", raising=False)
    with pytest.raises(SettingsError, match="GHL_LOCATION_ID"):
        _load(CrmSyncSettings)


def test_field_map_from_json_or_yaml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRM_FIELD_MAP", '{"phone_number": "mobile"}')
    assert _load(CrmSyncSettings).crm_field_map == {"phone_number": "mobile"}
    mapping = tmp_path / "map.yaml"
    mapping.write_text("phone_number: mobile\ncase_details: null\n")
    monkeypatch.setenv("CRM_FIELD_MAP", str(mapping))
    assert _load(CrmSyncSettings).crm_field_map == {"phone_number": "mobile", "case_details": None}
    monkeypatch.setenv("CRM_FIELD_MAP", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError, match="CRM_FIELD_MAP"):
        _load(CrmSyncSettings)


def test_no_adapter_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CRM_WEBHOOK_URL", "CRM_WEBHOOK_SECRET", "GHL_API_TOKEN", "GHL_LOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    settings = CrmSyncSettings(_env_file=None)
    assert settings.describe() == {"webhook": False, "gohighlevel": False}
