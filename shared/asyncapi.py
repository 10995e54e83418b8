"""The AsyncAPI document of every channel, generated from the services' FastStream brokers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml
from faststream.specification import AsyncAPI

from shared.service import ServiceSpec
from shared.settings import Settings

ASYNCAPI_PATH = Path(__file__).resolve().parent.parent / "contracts" / "asyncapi.yaml"


def render(settings: Settings, services: Sequence[ServiceSpec]) -> str:
    """The document for `services` (`services/registry.py`'s), as committed in contracts/asyncapi.yaml."""
    brokers = [spec.create_app(settings).broker for spec in services]
    spec = AsyncAPI(
        *brokers,
        title="leadwire",
        version="1",
        description=(
            "Messages on the `leadwire` topic exchange. Outside systems publish `ConversionRequested` with "
            "routing key `conversion.requested` and `CampaignCommand` with `campaign.command`, as persistent "
            "JSON messages in the envelope {message_id, type, schema_version, occurred_at, correlation_id, "
            "causation_id, payload}."
        ),
        schema_version="3.0.0",
    )
    # FastStream's channel order varies between runs; sorted keys keep the committed file stable.
    text = yaml.safe_dump(json.loads(spec.to_specification().to_json()), sort_keys=True, allow_unicode=True)
    # The broker URL may carry credentials: document the server without them.
    return text.replace(settings.broker.amqp_url.get_secret_value(), "amqp://rabbitmq:5672/")
