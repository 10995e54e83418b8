"""The campaign_executor service: composition root."""

from __future__ import annotations

from shared.service import Service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("campaign_executor", settings)
    return service
