"""Insights refreshes."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from contracts.envelope import Payload
from contracts.values import ACT_ID


class InsightsUpdated(Payload):
    """Stored insights for an ad account were refreshed for a date window."""

    account_id: str = Field(pattern=ACT_ID, examples=["act_1000000001"])
    level: Literal["ad", "adset", "campaign", "account"] = "ad"
    date_since: date
    date_until: date
    rows_changed: int = Field(ge=0)
