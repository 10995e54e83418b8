"""The rules_engine service: composition root."""

from __future__ import annotations

from shared.service import Service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("rules_engine", settings)
    return service
