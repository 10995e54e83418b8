"""Operational alerts any service may raise (token expiring, permission lost, messages parked)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Payload


class AlertRaised(Payload):
    severity: Literal["info", "warning", "critical"]
    code: str = Field(description="Stable machine-readable code, e.g. token_expiring, lead_access_denied.",
                      examples=["token_expiring"])
    summary: str = Field(description="One sentence for a human; never contains secrets or lead PII.")
    service: str
    subject: str | None = Field(default=None, description="What it is about: a page id, ad account id, rule.")
    fix: str | None = Field(default=None, description="How to fix it, when known.")
