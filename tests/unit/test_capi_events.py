"""Building Conversions API server events, parking what Meta would reject, dedupe keys, batching, bisection."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from contracts.conversions import ConversionRequested, ConversionSent, ConversionUser, SentEvent
from contracts.messages import ConversionRequestedMessage
from services.capi_sender.events import (
    DEFAULT_CRM_NAME,
    MAX_EVENT_AGE_SECONDS,
    LeadContact,
    Parked,
    ParkReason,
    PreparedEvent,
    RequestBatch,
    bisect_batch,
    check_event,
    chunk,
    conversions_sent,
    dedupe_key,
    plan_requests,
    prepare_event,
)

FIXTURES = Path(__file__).resolve().parents[1] / "resources" / "contracts"
NOW = 1_795_208_645  # 2026-11-20T21:04:05Z
PIXEL = "123456789012345"
LEAD_ID = "1234567890123456"


def h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request(**fields: object) -> ConversionRequested:
    base: dict[str, object] = {"event_name": "SignedCase", "event_time": NOW - 3600, "user": {"lead_id": LEAD_ID}}
    return ConversionRequested.model_validate(base | fields)


def prepared(req: ConversionRequested, **kwargs: object) -> PreparedEvent:
    result = prepare_event(req, now=NOW, default_pixel_id=PIXEL, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, PreparedEvent), result
    return result


def parked(req: ConversionRequested, **kwargs: object) -> Parked:
    result = prepare_event(req, now=NOW, default_pixel_id=PIXEL, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, Parked), result
    return result


# --- building ------------------------------------------------------------------------------------------------


def test_crm_stage_with_only_lead_id_is_conversion_leads_form() -> None:
    req = ConversionRequested.model_validate(json.loads((FIXTURES / "conversion_requested_v1.json").read_text()))
    event = prepare_event(req, now=req.event_time + 600, default_pixel_id=PIXEL)
    assert isinstance(event, PreparedEvent)
    assert event.pixel_id == PIXEL
    assert event.test_event_code is None
    assert event.server_event == {
        "event_name": "SignedCase",
        "event_time": req.event_time,
        "event_id": req.resolved_event_id(),
        "action_source": "system_generated",
        "user_data": {"lead_id": LEAD_ID},
        "custom_data": {"event_source": "crm", "lead_event_source": "Litify"},
    }


def test_full_pii_fixture() -> None:
    raw = json.loads((FIXTURES / "conversion_requested_v1_full_pii.json").read_text())
    req = ConversionRequested.model_validate(raw)
    event = prepare_event(req, now=req.event_time + 60, default_pixel_id="999")
    assert isinstance(event, PreparedEvent)
    assert event.pixel_id == PIXEL  # the message's pixel beats META_PIXEL_ID
    assert event.event_id == "litify-case-8812-qualified"
    assert event.test_event_code == "TEST12345"
    assert event.dropped == []
    server = event.server_event
    assert server["user_data"] == {
        "em": h("mary.smith@example.com"),
        "ph": h("16505551212"),
        "fn": h("mary"),
        "ln": h("osmith"),
        "ct": h("sanfrancisco"),
        "st": h("ca"),
        "zp": h("94105"),
        "country": h("us"),
        "ge": h("f"),
        "db": h("19970216"),
        "external_id": h("lit-contact-48213"),
        "lead_id": LEAD_ID,
        "fbc": "fb.1.1763600000000.IwAR2xYz_AbCdEfGh",
        "fbp": "fb.1.1763600000000.1116446470",
        "client_ip_address": "2001:db8::1",
        "client_user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
    }
    assert server["custom_data"] == {
        "value": 25000.0,
        "currency": "USD",
        "case_type": "auto_accident",
        "intake_office": "SF",
        "event_source": "crm",
        "lead_event_source": "Litify",
    }
    assert server["data_processing_options"] == ["LDU"]
    assert server["data_processing_options_country"] == 1
    assert server["data_processing_options_state"] == 1000
    assert "test_event_code" not in server  # request-level, not per event
    # Nothing clear-text leaks into the event.
    dumped = json.dumps(server)
    for secret in ("Mary", "mary", "Smith", "555", "Francisco", "1997"):
        assert secret not in dumped


def test_crm_values_cannot_override_conversion_leads_markers() -> None:
    event = prepared(request(custom_data={"event_source": "web", "lead_event_source": "x"}, crm_name="Clio"))
    assert event.server_event["custom_data"] == {"event_source": "crm", "lead_event_source": "Clio"}


def test_crm_name_fallbacks() -> None:
    assert prepared(request(), default_crm_name="HubSpot").server_event["custom_data"]["lead_event_source"] == (
        "HubSpot"
    )
    assert prepared(request()).server_event["custom_data"]["lead_event_source"] == DEFAULT_CRM_NAME


def test_non_crm_event_has_no_crm_markers() -> None:
    event = prepared(
        request(
            event_name="Contact",
            action_source="phone_call",
            user={"phone": "(650)555-1212"},
            custom_data={"call_minutes": 12},
        )
    )
    assert event.server_event["action_source"] == "phone_call"
    assert event.server_event["custom_data"] == {"call_minutes": 12}


def test_stored_lead_fills_in_and_crm_takes_precedence() -> None:
    lead = LeadContact(
        lead_id=LEAD_ID,
        email="stored@example.com",
        phone="(650)555-1212",
        first_name="Stored",
        last_name="Person",
        created_time=NOW - 86400,
    )
    event = prepared(request(user={"lead_id": LEAD_ID, "email": "crm@example.com"}), lead=lead)
    assert event.server_event["user_data"] == {
        "em": h("crm@example.com"),  # CRM wins
        "ph": h("16505551212"),
        "fn": h("stored"),
        "ln": h("person"),
        "lead_id": LEAD_ID,
    }


def test_stored_lead_from_mapping_with_meta_created_time() -> None:
    event = prepared(
        request(),
        lead={"lead_id": int(LEAD_ID), "email": "a@example.com", "created_time": "2026-11-19T21:04:05+0000"},
    )
    assert event.server_event["user_data"]["em"] == h("a@example.com")


def test_event_id_does_not_depend_on_stored_lead() -> None:
    req = request(user={"lead_id": LEAD_ID})
    with_lead = prepared(req, lead=LeadContact(email="x@example.com"))
    without = prepared(req)
    assert with_lead.event_id == without.event_id == req.resolved_event_id()


def test_event_id_from_stored_lead_when_crm_sent_none_of_the_anchors() -> None:
    req = request(user={"first_name": "Mary", "last_name": "Smith"})
    event = prepared(req, lead=LeadContact(lead_id=LEAD_ID))
    assert event.event_id.startswith("lw-")


def test_dropped_fields_reported_but_event_sent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    event = prepared(request(user={"lead_id": LEAD_ID, "email": "mary-at-example"}))
    assert event.dropped == ["email"]
    assert "mary-at-example" not in caplog.text


# --- parking -------------------------------------------------------------------------------------------------


def test_park_no_pixel() -> None:
    result = prepare_event(request(), now=NOW)
    assert isinstance(result, Parked)
    assert result.reason is ParkReason.NO_PIXEL_ID


def test_park_nothing_to_match_on() -> None:
    result = parked(request(user={"email": "broken", "phone": "12"}))
    assert result.reason is ParkReason.NO_IDENTIFIERS
    assert result.dropped == ["email", "phone"]
    assert "email" in result.detail
    assert "broken" not in result.detail
    assert parked(request(user={})).reason is ParkReason.NO_IDENTIFIERS


@pytest.mark.parametrize(
    "user",
    [
        {"first_name": "Mary", "gender": "f"},
        {"last_name": "Smith", "gender": "f"},
        {"first_name": "Mary"},
        {"date_of_birth": "1997-02-16", "client_user_agent": "Mozilla/5.0"},
        {"city": "Austin", "state": "TX", "zip": "73301", "country": "US", "gender": "m"},
        {"country": "US"},
        {"client_user_agent": "Mozilla/5.0"},
    ],
)
def test_park_rejected_combinations(user: dict[str, str]) -> None:
    result = parked(request(user=user))
    assert result.reason is ParkReason.REJECTED_COMBINATION
    assert "Mary" not in result.detail


@pytest.mark.parametrize(
    "user",
    [
        {"first_name": "Mary", "last_name": "Smith"},
        {"first_name": "Mary", "gender": "f", "zip": "94035"},
        {"city": "Austin", "country": "US", "client_ip_address": "203.0.113.9"},
        {"email": "mary@example.com"},
    ],
)
def test_combinations_meta_accepts(user: dict[str, str]) -> None:
    assert isinstance(prepare_event(request(user=user), now=NOW, default_pixel_id=PIXEL), PreparedEvent)


def test_park_website_missing_fields() -> None:
    website = {"action_source": "website", "event_name": "Lead"}
    result = parked(request(**website, user={"email": "a@example.com"}))
    assert result.reason is ParkReason.WEBSITE_MISSING_FIELDS
    assert "event_source_url" in result.detail
    assert "client_user_agent" in result.detail
    result = parked(request(**website, user={"email": "a@example.com"}, event_source_url="https://x.example/"))
    assert result.detail == "website event without client_user_agent"
    ok = prepared(
        request(
            **website,
            event_source_url="https://x.example/",
            user={"email": "a@example.com", "client_user_agent": "Mozilla/5.0"},
        )
    )
    assert "custom_data" not in ok.server_event


def test_park_app_event() -> None:
    assert parked(request(action_source="app")).reason is ParkReason.APP_EVENT_UNSUPPORTED


def test_park_too_old_with_safety_margin() -> None:
    assert parked(request(event_time=NOW - MAX_EVENT_AGE_SECONDS - 1)).reason is ParkReason.EVENT_TOO_OLD
    # Inside Meta's limit but too close to survive transit: parked.
    assert parked(request(event_time=NOW - MAX_EVENT_AGE_SECONDS + 60)).reason is ParkReason.EVENT_TOO_OLD
    prepared(request(event_time=NOW - MAX_EVENT_AGE_SECONDS + 3600))
    prepared(request(event_time=NOW - 6 * 86400))


def test_park_future_with_clock_skew() -> None:
    prepared(request(event_time=NOW + 60))
    assert parked(request(event_time=NOW + 61)).reason is ParkReason.EVENT_IN_FUTURE


def test_park_crm_event_before_lead_creation() -> None:
    lead = LeadContact(lead_id=LEAD_ID, created_time=NOW - 100)
    result = parked(request(event_time=NOW - 101), lead=lead)
    assert result.reason is ParkReason.BEFORE_LEAD_CREATED
    prepared(request(event_time=NOW - 100), lead=lead)
    # Not a CRM-stage event: the creation-time rule does not apply.
    prepared(request(event_time=NOW - 101, action_source="phone_call"), lead=lead)


def test_park_purchase_without_value() -> None:
    assert parked(request(event_name="Purchase")).reason is ParkReason.PURCHASE_WITHOUT_VALUE
    assert parked(request(event_name="Purchase", custom_data={"value": 10})).reason is ParkReason.PURCHASE_WITHOUT_VALUE
    prepared(request(event_name="Purchase", custom_data={"value": 0, "currency": "USD"}))


def test_check_event_can_be_rerun_before_send() -> None:
    event = prepared(request(event_time=NOW - 6 * 86400))
    later = NOW + 2 * 86400
    result = check_event(event.server_event, now=later)
    assert isinstance(result, Parked)
    assert result.reason is ParkReason.EVENT_TOO_OLD
    assert result.event_id == event.event_id


def test_now_as_datetime() -> None:
    from datetime import UTC, datetime

    result = prepare_event(request(), now=datetime.fromtimestamp(NOW, tz=UTC), default_pixel_id=PIXEL)
    assert isinstance(result, PreparedEvent)


# --- dedupe key ------------------------------------------------------------------------------------------------


def test_dedupe_key() -> None:
    key = dedupe_key(PIXEL, "SignedCase", "abc")
    assert key == dedupe_key(PIXEL, "SignedCase", "abc")
    assert len(key) == 64
    assert key != dedupe_key("999", "SignedCase", "abc")
    assert key != dedupe_key(PIXEL, "QualifiedLead", "abc")
    assert key != dedupe_key(PIXEL, "SignedCase", "abd")
    # No separator ambiguity.
    assert dedupe_key(PIXEL, "A:B", "C") != dedupe_key(PIXEL, "A", "B:C")
    assert prepared(request(event_id="abc")).dedupe_key == key


# --- batching and bisection --------------------------------------------------------------------------------------


def test_chunk_2500() -> None:
    parts = chunk(list(range(2500)))
    assert [len(part) for part in parts] == [1000, 1000, 500]
    assert [item for part in parts for item in part] == list(range(2500))


def test_chunk_edges() -> None:
    assert chunk([]) == []
    assert chunk([1, 2, 3], 2) == [[1, 2], [3]]
    assert [len(part) for part in chunk(list(range(1000)))] == [1000]
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        chunk([1], 1001)
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        chunk([1], 0)


def test_bisect() -> None:
    assert bisect_batch([1, 2, 3, 4]) == ([1, 2], [3, 4])
    assert bisect_batch([1, 2, 3]) == ([1, 2], [3])
    assert bisect_batch([1, 2]) == ([1], [2])
    with pytest.raises(ValueError, match="park"):
        bisect_batch([1])


def test_bisection_isolates_the_bad_event() -> None:
    events = list(range(1000))
    bad = 637
    batch = events
    for _ in range(10):  # log2(1000) rounded up; bounded so a broken bisect fails instead of hanging
        if len(batch) == 1:
            break
        first, second = bisect_batch(batch)
        assert first
        assert second
        assert first + second == batch
        batch = first if bad in first else second
    assert batch == [bad]


def _event(pixel: str, event_id: str, test_code: str | None = None) -> PreparedEvent:
    return PreparedEvent(
        pixel_id=pixel,
        event_name="Lead",
        event_id=event_id,
        event_time=NOW,
        test_event_code=test_code,
        server_event={"event_name": "Lead", "event_id": event_id},
    )


def test_plan_requests_groups_dedupes_and_chunks() -> None:
    events = [_event("1", f"e{i}") for i in range(1500)]
    events += [_event("2", "x"), _event("1", "e0"), _event("1", "t", "TEST1")]
    batches = plan_requests(events)
    assert [(b.pixel_id, b.test_event_code, len(b.events)) for b in batches] == [
        ("1", None, 1000),
        ("1", None, 500),
        ("2", None, 1),
        ("1", "TEST1", 1),
    ]
    assert batches[3].body() == {"data": [{"event_name": "Lead", "event_id": "t"}], "test_event_code": "TEST1"}
    assert "test_event_code" not in batches[0].body()


def test_conversions_sent_is_one_receipt_per_request_naming_each_events_message() -> None:
    events = [_event("1", "a"), _event("1", "b")]
    events[1].dropped.append("zip")
    batch = RequestBatch(pixel_id="1", test_event_code=None, events=events)
    asked = {e.dedupe_key: ConversionRequestedMessage.new(request(event_id=e.event_id)) for e in events}
    sent = conversions_sent(batch, {"events_received": 2, "messages": [], "fbtrace_id": "AbC"}, asked)
    assert sent == ConversionSent(
        pixel_id="1",
        events_received=2,
        fbtrace_id="AbC",
        events=[
            SentEvent(event_name="Lead", event_id=e.event_id, requested_by=asked[e.dedupe_key].message_id,
                      correlation_id=asked[e.dedupe_key].correlation_id, dropped_fields=dropped)
            for e, dropped in zip(events, ([], ["zip"]), strict=True)
        ],
    )
    assert conversions_sent(batch, {}, asked).events_received == 0


def test_user_model_accepted_directly() -> None:
    # The wiring may hand a ConversionUser built elsewhere; nothing in prepare_event needs a dict.
    req = ConversionRequested(event_name="Lead", event_time=NOW, user=ConversionUser(lead_id=LEAD_ID))
    assert prepared(req).server_event["user_data"] == {"lead_id": LEAD_ID}
