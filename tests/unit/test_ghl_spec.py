"""The GoHighLevel stand-in reads GoHighLevel's own spec strictly: the shapes the issue found wrong are refused,
the adapter's shapes pass, and the rate-limit bookkeeping of the client follows GoHighLevel's headers."""

from __future__ import annotations

from datetime import UTC, datetime

from services.crm_sync.mapping import ghl_contact
from shared.ghl import DAILY_LIMIT_WAIT, RateLimit, field_key
from shared.leads import StoredLead
from tests.fixtures.ghl import Spec, problems

SPEC = Spec()
CONTACTS = "apps/contacts.json"


def upsert_problems(body: dict[str, object]) -> list[str]:
    schema = SPEC.request_schema(CONTACTS, "POST", "/contacts/upsert")
    assert schema is not None
    return problems(schema, body)


def test_the_old_custom_field_shape_is_refused() -> None:
    # What the adapter sent before: `key` without `id`; the spec requires each item's id.
    found = upsert_problems({"locationId": "l", "customFields": [{"key": "contact.injured", "field_value": "yes"}]})
    assert found
    assert "'id' is a required property" in found[0]


def test_unknown_properties_and_a_bad_birth_date_are_refused() -> None:
    found = upsert_problems({"locationId": "l", "leadgen_id": "1", "dateOfBirth": "16 Feb 1997"})
    assert "property leadgen_id should not exist" in found
    assert any(p.startswith("dateOfBirth:") for p in found)
    assert upsert_problems({"firstName": "x"}) == ["body: required ['locationId'] not satisfied"]


def test_what_the_adapter_sends_passes() -> None:
    lead = StoredLead.from_row({
        "leadgen_id": "100", "page_id": "1", "form_id": "2", "ad_id": "3", "adset_id": "4", "campaign_id": "5",
        "created_time": datetime(2026, 11, 20, tzinfo=UTC), "is_organic": False, "platform": "fb",
        "fields": {"first_name": "Mary Ann", "last_name": "Smith", "email": "m@example.com", "country": "Germany",
                   "date_of_birth": "1997-02-16", "gender": "male", "phone_number": "+4930123456", "q1": "a"},
        "names": {"campaign_name": "C"},
    })
    ids = {"contact.meta_lead_id": "id1", "contact.meta_lead_answers": "id2"}
    contact = ghl_contact(lead, "loc", ids.get, {})
    assert contact.body["country"] == "DE"
    assert upsert_problems(contact.body) == []
    tags = SPEC.request_schema(CONTACTS, "POST", "/contacts/{contactId}/tags")
    assert tags is not None
    assert problems(tags, {"tags": contact.tags}) == []
    assert problems(tags, {"tag": "x"}) != []


def test_answers_are_checked_against_the_response_schemas() -> None:
    answer = SPEC.response_schema(CONTACTS, "POST", "/contacts/upsert", 200)
    assert answer is not None
    assert problems(answer, {"new": True, "contact": {"id": "c1", "tags": ["a"]}, "traceId": "t"}) == []
    assert problems(answer, {"new": "yes"}) != []
    unauthorized = SPEC.response_schema(CONTACTS, "POST", "/contacts/upsert", 401)
    assert unauthorized is not None
    assert problems(unauthorized, {"statusCode": 401, "message": "m", "error": "e"}) == []


def test_scopes_come_from_the_spec() -> None:
    assert SPEC.scopes(CONTACTS, "POST", "/contacts/upsert") == {"contacts.write"}
    assert SPEC.scopes("apps/locations.json", "POST", "/locations/{locationId}/customFields") == {
        "locations/customFields.write"}


def test_field_keys_as_ghl_makes_them() -> None:
    assert field_key("Meta Lead ID") == "contact.meta_lead_id"
    assert field_key("  Accident date / time ") == "contact.accident_date_time"


def test_rate_limit_bookkeeping() -> None:
    rate = RateLimit()
    headers = {"X-RateLimit-Max": "3", "X-RateLimit-Remaining": "1", "X-RateLimit-Interval-Milliseconds": "10000",
               "X-RateLimit-Limit-Daily": "200000", "X-RateLimit-Daily-Remaining": "199000"}
    rate.update(headers, now=100.0)
    assert rate.reserve(100.0) == 0  # the last request of the window
    assert rate.reserve(100.5) == 9.5  # then wait for the window to end
    assert rate.reserve(110.0) == 0  # a new window: the budget is the maximum again
    assert rate.remaining == 2
    assert rate.throttled({"Retry-After": "4"}, now=111.0) == 4
    assert rate.reserve(112.0) == 3
    rate.update({"X-RateLimit-Daily-Remaining": "0"}, now=120.0)
    assert rate.throttled({}, now=120.0) == DAILY_LIMIT_WAIT
