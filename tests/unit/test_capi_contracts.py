"""The conversion.requested / conversion.sent payloads: validation, tolerance, fixtures, event_id derivation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.conversions import (
    ActionSource,
    ConversionRequested,
    ConversionSent,
    ConversionUser,
    derive_event_id,
    to_unix_seconds,
)
from contracts.messages import ConversionRequestedMessage, ConversionSentMessage

FIXTURES = Path(__file__).resolve().parents[1] / "resources" / "contracts"
T0 = 1_795_208_645  # 2026-11-20T21:04:05Z


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_routing_keys() -> None:
    # Pinned for outside systems: CRMs publish ConversionRequested with this routing key.
    assert ConversionRequestedMessage.routing_key == "conversion.requested"
    assert ConversionSentMessage.routing_key == "conversion.sent.v2"


def test_minimal_crm_fixture() -> None:
    payload = ConversionRequested.model_validate(load("conversion_requested_v1.json"))
    assert payload.event_name == "SignedCase"
    assert payload.event_time == int(datetime(2026, 11, 20, 21, 4, 5, tzinfo=UTC).timestamp())
    assert payload.user.lead_id == "1234567890123456"
    assert payload.action_source is ActionSource.SYSTEM_GENERATED
    assert payload.event_id is None
    assert payload.pixel_id is None
    assert payload.crm_name == "Litify"


def test_full_pii_fixture_and_unknown_fields_tolerated() -> None:
    raw = load("conversion_requested_v1_full_pii.json")
    assert "crm_status_raw" in raw
    payload = ConversionRequested.model_validate(raw)
    assert payload.event_time == T0
    assert payload.custom_data is not None
    assert payload.custom_data.currency == "USD"
    assert payload.custom_data.model_dump()["case_type"] == "auto_accident"  # free keys kept
    assert not hasattr(payload, "crm_status_raw")
    assert payload.data_processing_options == ["LDU"]
    # Round trip through JSON keeps the model equal (what the broker does).
    assert ConversionRequested.model_validate_json(payload.model_dump_json()) == payload


@pytest.mark.parametrize(
    "event_time",
    [
        T0,
        str(T0),
        float(T0) + 0.9,
        "2026-11-20T21:04:05Z",
        "2026-11-20T21:04:05+00:00",
        "2026-11-20T15:04:05-06:00",
        "2026-11-20T21:04:05+0000",  # Meta's own created_time format
        datetime(2026, 11, 20, 21, 4, 5, tzinfo=UTC),
        datetime(2026, 11, 20, 22, 4, 5, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_event_time_forms(event_time: object) -> None:
    payload = ConversionRequested(event_name="Lead", event_time=event_time, user=ConversionUser(lead_id="1" * 16))
    assert payload.event_time == T0


@pytest.mark.parametrize(
    ("event_time", "message"),
    [
        ("2026-11-20T21:04:05", "offset"),  # naive: which zone?
        (T0 * 1000, "milliseconds"),
        (0, "positive"),
        (-5, "positive"),
        (True, "boolean"),
        ("yesterday", "ISO 8601"),
        (None, "ISO 8601"),
    ],
)
def test_event_time_rejected_with_clear_error(event_time: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ConversionRequested(event_name="Lead", event_time=event_time)
    assert message in str(caught.value)
    assert caught.value.errors()[0]["loc"] == ("event_time",)


def test_bad_action_source_rejected_with_clear_error() -> None:
    with pytest.raises(ValidationError) as caught:
        ConversionRequested.model_validate({"event_name": "Lead", "event_time": T0, "action_source": "crm"})
    error = caught.value.errors()[0]
    assert error["loc"] == ("action_source",)
    assert "system_generated" in error["msg"]
    assert "website" in error["msg"]


def test_action_source_enum_matches_official_sdk() -> None:
    from facebook_business.adobjects.serverside.action_source import ActionSource as SdkActionSource

    assert {member.value for member in ActionSource} == {member.value for member in SdkActionSource}


@pytest.mark.parametrize(
    "change",
    [
        {"event_name": ""},
        {"pixel_id": "pixel-1"},
        {"event_source_url": "example.com/page"},
        {"custom_data": {"value": 10, "currency": "dollars"}},
        {"custom_data": {"value": -1, "currency": "USD"}},
        {"data_processing_options": ["GDPR"]},
        {"data_processing_options_country": 1, "data_processing_options_state": 1000},  # without LDU
        {"data_processing_options": ["LDU"], "data_processing_options_country": 1},  # state missing
        {"data_processing_options": ["LDU"], "data_processing_options_country": 2, "data_processing_options_state": 0},
    ],
)
def test_invalid_payloads(change: dict) -> None:
    with pytest.raises(ValidationError):
        ConversionRequested.model_validate({"event_name": "Lead", "event_time": T0, **change})


def test_loose_user_values() -> None:
    user = ConversionUser.model_validate(
        {"lead_id": 1234567890123456, "zip": 2134, "phone": 16505551212, "email": "  ", "city": "", "nick": "x"}
    )
    assert user.lead_id == "1234567890123456"
    assert user.zip == "2134"
    assert user.phone == "16505551212"
    assert user.email is None
    assert user.city is None
    with pytest.raises(ValidationError):
        ConversionUser.model_validate({"email": True})


def test_models_are_frozen() -> None:
    payload = ConversionRequested(event_name="Lead", event_time=T0)
    with pytest.raises(ValidationError):
        payload.event_name = "Purchase"  # type: ignore[misc]


def test_pixel_id_accepts_number() -> None:
    assert ConversionRequested(event_name="Lead", event_time=T0, pixel_id=123456789012345).pixel_id == (
        "123456789012345"
    )


def test_json_schema_documents_fields_with_examples() -> None:
    schema = ConversionRequested.model_json_schema()
    for name in ("event_name", "event_time", "event_id", "action_source", "pixel_id", "crm_name"):
        assert schema["properties"][name].get("description"), name
        assert schema["properties"][name].get("examples"), name
    user_schema = schema["$defs"]["ConversionUser"]["properties"]
    assert all(user_schema[name].get("description") for name in ConversionUser.model_fields)
    # The model-level examples are themselves valid payloads.
    for example in schema["examples"]:
        ConversionRequested.model_validate(example)
    accepted = {option["type"] for option in schema["properties"]["event_time"]["anyOf"]}
    assert accepted == {"integer", "string"}
    assert ConversionRequested.model_json_schema(mode="serialization")["properties"]["event_time"]["type"] == (
        "integer"
    )
    assert schema["$defs"]["ConversionCustomData"]["additionalProperties"] is True
    sent = ConversionSent.model_json_schema()
    assert {"pixel_id", "events_received", "fbtrace_id", "events"} <= set(sent["properties"])
    assert {"event_name", "event_id", "requested_by", "correlation_id"} <= set(sent["$defs"]["SentEvent"]["properties"])


# --- event_id ------------------------------------------------------------------------------------------------


def test_event_id_given_is_used() -> None:
    payload = ConversionRequested(event_name="Lead", event_time=T0, event_id=" abc ")
    assert payload.resolved_event_id() == "abc"


def test_derived_event_id_is_deterministic_and_distinct() -> None:
    user = ConversionUser(lead_id="1234567890123456")
    first = derive_event_id("SignedCase", T0, user)
    assert first == derive_event_id("SignedCase", T0, ConversionUser(lead_id="1234567890123456"))
    assert first.startswith("lw-")
    assert len(first) == 35
    assert first != derive_event_id("QualifiedLead", T0, user)
    assert first != derive_event_id("SignedCase", T0 + 1, user)
    assert first != derive_event_id("SignedCase", T0, ConversionUser(lead_id="1234567890123457"))
    payload = ConversionRequested(event_name="SignedCase", event_time=T0, user=user)
    assert payload.resolved_event_id() == first


def test_derived_event_id_pinned() -> None:
    # Pinned so a refactor cannot silently change ids (which would defeat dedupe of redelivered events).
    import hashlib

    expected = "lw-" + hashlib.sha256(f"lead:1234567890123456|SignedCase|{T0}".encode()).hexdigest()[:32]
    assert derive_event_id("SignedCase", T0, ConversionUser(lead_id="1234567890123456")) == expected


def test_derived_event_id_prefers_lead_id_over_email() -> None:
    with_email = ConversionUser(lead_id="1234567890123456", email="mary@example.com")
    assert derive_event_id("Lead", T0, with_email) == derive_event_id(
        "Lead", T0, ConversionUser(lead_id="1234567890123456")
    )


def test_derived_event_id_from_email_same_for_clear_and_hashed_and_has_no_pii() -> None:
    import hashlib

    clear = derive_event_id("Lead", T0, ConversionUser(email=" Mary@Example.com "))
    hashed = derive_event_id("Lead", T0, ConversionUser(email=hashlib.sha256(b"mary@example.com").hexdigest()))
    assert clear == hashed
    assert "mary" not in clear


def test_derived_event_id_from_other_fields_and_empty_user() -> None:
    fbp_only = derive_event_id("Lead", T0, ConversionUser(fbp="fb.1.1596403881668.1116446470"))
    assert fbp_only.startswith("lw-")
    with pytest.raises(ValueError, match="empty"):
        derive_event_id("Lead", T0, ConversionUser())


def test_to_unix_seconds_is_reusable() -> None:
    assert to_unix_seconds("2026-11-20T21:04:05Z") == T0
