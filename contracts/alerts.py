"""Operational alerts any service may raise (token expiring, permission lost, messages parked)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from contracts.envelope import Payload


class Incident(Payload):
    """What an incident alert is about: one per (service, dependency, kind), sent when it opens, as a reminder at
    most every ALERT_REMINDER_MINUTES while it lasts, and when it resolves."""

    dependency: str = Field(description="What failed or piles up: `crm:webhook`, `database`, or the consumer whose "
                                        "parking queue holds messages (`crm_sync/lead_captured`).",
                            examples=["crm:webhook"])
    kind: str = Field(description="`unavailable` (a circuit breaker opened) or `parked`.", examples=["unavailable"])
    state: Literal["opened", "reminder", "resolved"]
    since: datetime = Field(description="When the incident opened.")
    waiting: int | None = Field(default=None, ge=0,
                                description="Messages waiting (breaker) or parked (parking queue), when known.")


class AlertRaised(Payload):
    severity: Literal["info", "warning", "critical"]
    code: str = Field(description="Stable machine-readable code, e.g. token_expiring, lead_access_denied.",
                      examples=["token_expiring"])
    summary: str = Field(description="One sentence for a human; never contains secrets or lead PII.")
    service: str
    subject: str | None = Field(default=None, description="What it is about: a page id, ad account id, rule.")
    fix: str | None = Field(default=None, description="How to fix it, when known: a `leadwire` command or a setting.")
    incident: Incident | None = Field(
        default=None,
        description="Set on incident alerts (a dependency down, messages parked): one alert per incident when it "
                    "opens, at most one reminder per ALERT_REMINDER_MINUTES, one when it resolves.",
    )

