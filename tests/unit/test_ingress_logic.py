"""The ingress's plain logic: signatures, Meta delivery parsing, CRM event parsing."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from services.ingress import logic
from services.ingress.errors import BadRequest, Forbidden, Unauthorized, Unprocessable

SECRET = "app-secret"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_signature_is_checked_on_the_exact_bytes() -> None:
    # Meta signs the escaped-unicode form (docs/meta-api.md §6.2); re-serialising would change the bytes.
    body = b'{"name":"\\u00e4\\u00f6\\u00e5"}'
    logic.verify_meta_signature(SECRET, body, sign(body))
    logic.verify_meta_signature(SECRET, body, sign(body).upper().replace("SHA256=", "sha256="))
    reencoded = json.dumps(json.loads(body), ensure_ascii=False).encode()
    with pytest.raises(Forbidden):
        logic.verify_meta_signature(SECRET, reencoded, sign(body))


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha1=abc", "sha256=zz", sign(b"other")])
def test_bad_signatures(header: str | None) -> None:
    with pytest.raises(Forbidden):
        logic.verify_meta_signature(SECRET, b"{}", header)


def test_empty_secret_never_matches() -> None:
    assert not logic.signature_matches("", b"{}", sign(b"{}", ""))
    assert not logic.token_matches("", "")


def test_parse_every_leadgen_of_every_entry() -> None:
    body = {
        "object": "page",
        "entry": [
            {"id": "10", "time": 1, "changes": [
                {"field": "leadgen", "value": {"leadgen_id": 123456789012345678, "page_id": 10, "form_id": 20,
                                               "ad_id": 30, "adgroup_id": 30, "created_time": 1440120384}},
                {"field": "feed", "value": {}},
                {"field": "leadgen", "value": {"leadgen_id": "2", "form_id": "20"}},
            ]},
            {"id": "11", "time": 1, "changes": [{"field": "leadgen", "value": {"leadgen_id": 3, "page_id": 11}}]},
            {"id": "11", "time": 1, "changes": [{"field": "leadgen", "value": {"leadgen_id": 3, "page_id": 11}}]},
        ],
    }
    delivery = logic.parse_meta_delivery(json.dumps(body).encode())
    assert [lead.leadgen_id for lead in delivery.leadgens] == ["123456789012345678", "2", "3"]  # big ids exact
    first = delivery.leadgens[0]
    assert (first.page_id, first.form_id, first.ad_id, first.created_time) == ("10", "20", "30", 1440120384)
    assert delivery.leadgens[1].page_id == "10", "page id falls back to the entry id"
    assert delivery.ignored == {("page", "feed"): 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"entry": []}', "`object`"),
        (b'{"object": "page", "entry": {}}', "`entry` must be a list"),
        (b'{"object": "page", "entry": [1]}', "entry[0] must be an object"),
        (b'{"object": "page", "entry": [{"changes": {}}]}', "entry[0].changes must be a list"),
        (b'{"object": "page", "entry": [{"changes": [{"value": 1}]}]}', "string `field`"),
        (b'{"object": "page", "entry": [{"changes": [{"field": "leadgen", "value": 5}]}]}', "must be an object"),
        (b'{"object": "page", "entry": [{"id": "1", "changes": [{"field": "leadgen", "value": {}}]}]}',
         "entry[0].changes[0].value.leadgen_id"),
        (b'{"object": "page", "entry": [{"changes": [{"field": "leadgen", "value": {"leadgen_id": 1}}]}]}',
         "value.page_id"),
    ],
)
def test_malformed_deliveries(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as excinfo:
        logic.parse_meta_delivery(body)
    assert message in excinfo.value.message


def test_leadgen_errors_do_not_echo_values() -> None:
    body = {"object": "page", "entry": [{"id": "1", "changes": [
        {"field": "leadgen", "value": {"leadgen_id": "jane@example.com"}}]}]}
    with pytest.raises(BadRequest) as excinfo:
        logic.parse_meta_delivery(json.dumps(body).encode())
    assert "jane" not in excinfo.value.message


def test_other_objects_are_counted() -> None:
    body = {"object": "application", "entry": [{"id": "1", "changes": [{"field": "leadgen", "value": {}}]},
                                               {"id": "2", "messaging": [{}]}]}
    delivery = logic.parse_meta_delivery(json.dumps(body).encode())
    assert delivery.leadgens == []
    assert delivery.ignored == {("application", "leadgen"): 1, ("application", "messaging"): 1}


def test_metric_labels_are_bounded() -> None:
    body = {"object": "Page Évil" * 20, "entry": [{"changes": [{"field": "x" * 200}]}]}
    assert logic.parse_meta_delivery(json.dumps(body).encode()).ignored == {("other", "other"): 1}


def test_message_ids_are_deterministic_per_lead() -> None:
    assert logic.leadgen_message_id("1") == logic.leadgen_message_id("1")
    assert logic.leadgen_message_id("1") != logic.leadgen_message_id("2")


def test_crm_authentication() -> None:
    body = b'{"a": 1}'
    logic.authenticate_crm("s3cret", body, sign(body, "s3cret"), None)
    logic.authenticate_crm("s3cret", body, None, "Bearer s3cret")
    logic.authenticate_crm("s3cret", body, None, "bearer  s3cret ")
    for signature, authorization in [(None, None), (sign(body, "x"), None), (None, "Bearer x"),
                                     (None, "Basic s3cret"), ("bad", "Bearer s3cret")]:
        with pytest.raises(Unauthorized):
            logic.authenticate_crm("s3cret", body, signature, authorization)


def test_crm_events_one_or_many() -> None:
    event = {"event_name": "SignedCase", "event_time": 1_790_000_000, "user": {"lead_id": "123"}}
    assert len(logic.parse_crm_events(json.dumps(event).encode())) == 1
    events = logic.parse_crm_events(json.dumps([event, {**event, "event_name": "Lead"}]).encode())
    assert [e.event_name for e in events] == ["SignedCase", "Lead"]
    assert logic.conversion_message_id(events[0]) == logic.conversion_message_id(events[0])
    assert logic.conversion_message_id(events[0]) != logic.conversion_message_id(events[1])


def test_crm_events_errors_have_paths_not_values() -> None:
    events = [
        {"event_name": "Lead", "event_time": 1_790_000_000, "user": {"lead_id": "1"}},
        {"event_name": "Lead", "event_time": "soon", "user": {"email": "mary@example.com"}},
        {"event_name": "Lead", "event_time": 1_790_000_000, "user": {}},
    ]
    with pytest.raises(Unprocessable) as excinfo:
        logic.parse_crm_events(json.dumps(events).encode())
    problems = excinfo.value.problems
    assert {p["path"] for p in problems} == {"[1].event_time", "[2].user"}
    assert "soon" not in json.dumps(problems)
    assert "mary" not in json.dumps(problems)


@pytest.mark.parametrize("body", [b"[]", b"3", json.dumps([{}] * 1001).encode()])
def test_crm_events_bad_shapes(body: bytes) -> None:
    with pytest.raises(Unprocessable):
        logic.parse_crm_events(body)
