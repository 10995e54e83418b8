"""The committed JSON Schemas and AsyncAPI document match the models; envelopes behave."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import SecretStr, ValidationError

from contracts import schemas
from contracts.leads import LeadgenReceived
from contracts.messages import MESSAGES, LeadgenReceivedMessage
from services.registry import SERVICES
from shared.asyncapi import ASYNCAPI_PATH, render
from shared.settings import BrokerSettings, Settings


def test_committed_json_schemas_are_current() -> None:
    rendered = schemas.render()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in schemas.SCHEMA_DIR.glob("*.json")}
    assert on_disk == rendered, "contracts/schemas is stale: run `make contracts` and commit the result"


def test_committed_asyncapi_is_current() -> None:
    # The document names the default broker (`make contracts`), whichever broker this run uses (`make test` may run
    # on a RabbitMQ node of its own, on another port).
    settings = Settings(broker=BrokerSettings(amqp_url=SecretStr("amqp://guest:guest@127.0.0.1:5672/")))
    assert ASYNCAPI_PATH.read_text(encoding="utf-8") == render(settings, SERVICES), (
        "contracts/asyncapi.yaml is stale: run `make contracts` and commit the result"
    )


def test_every_message_type_is_unique_and_routed() -> None:
    types = [cls.model_fields["type"].default for cls in MESSAGES]
    assert len(types) == len(set(types))
    assert all(cls.routing_key for cls in MESSAGES)


def test_caused_message_carries_correlation() -> None:
    first = LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=1, page_id=2))
    second = LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=3, page_id=2), caused_by=first)
    assert second.correlation_id == first.correlation_id
    assert second.causation_id == first.message_id
    assert first.payload.leadgen_id == "1"  # Meta's numeric ids become strings


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "LeadCaptured"}, "type"),
        ({"schema_version": 2}, "schema_version"),
        ({"message_id": "not-a-uuid"}, "message_id"),
    ],
)
def test_envelope_rejects_unknown_type_version_or_bad_id(change: dict[str, object], field: str) -> None:
    body = {**LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=1, page_id=2)).model_dump(mode="json"), **change}
    with pytest.raises(ValidationError) as caught:
        LeadgenReceivedMessage.model_validate(body)
    assert caught.value.errors()[0]["loc"][0] == field


def test_unknown_fields_are_tolerated() -> None:
    body = LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=1, page_id=2)).model_dump(mode="json")
    body["new_envelope_field"] = True
    body["payload"]["new_payload_field"] = "x"
    message = LeadgenReceivedMessage.model_validate_json(json.dumps(body))
    assert isinstance(message.message_id, uuid.UUID)


def test_redeliver_lead_fixture_parses_and_refuses_a_non_numeric_lead_id() -> None:
    from pathlib import Path

    from contracts.messages import RedeliverLeadMessage

    body = json.loads((Path(__file__).parents[1] / "resources" / "contracts" / "redeliver_lead_v1.json").read_text())
    message = RedeliverLeadMessage.model_validate(body)
    assert message.payload.leadgen_id == "1234567890123456"
    assert RedeliverLeadMessage.routing_key == "lead.redeliver.v1"
    with pytest.raises(ValidationError):
        RedeliverLeadMessage.model_validate({**body, "payload": {"leadgen_id": "jane@example.com"}})
