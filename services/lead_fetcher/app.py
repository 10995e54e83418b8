"""The lead_fetcher service: composition root."""

from __future__ import annotations

from shared.service import Service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("lead_fetcher", settings)
    return service
