"""The envelope every leadwire message travels in.

`message_id` is the idempotency key: a consumer acts on a given id at most once. `type` and `schema_version`
are literals on each concrete message class, so a message of an unknown type or version fails validation and
is parked by the consumer instead of being half-understood.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class Payload(BaseModel):
    """Base of every payload: immutable; unknown fields from newer producers are ignored; numbers are finite."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


class Envelope(BaseModel, Generic[PayloadT]):
    """Metadata common to all messages, around a typed payload."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    routing_key: ClassVar[str]

    message_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="Unique id of this message; consumers process each id at most once.",
    )
    type: str = Field(description="Message type name, e.g. LeadgenReceived.")
    schema_version: int = Field(description="Version of this message type's payload schema.")
    occurred_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When the fact happened or the command was issued (ISO 8601 with offset).",
    )
    correlation_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="Shared by every message caused, directly or not, by the same origin (e.g. one lead).",
    )
    causation_id: uuid.UUID | None = Field(
        default=None, description="message_id of the message that caused this one, if any."
    )
    payload: PayloadT

    @classmethod
    def new(cls, payload: PayloadT, *, caused_by: Envelope[Any] | None = None, **meta: object) -> Self:
        """Wrap a payload; with `caused_by`, carry its correlation id and point back at it."""
        if caused_by is not None:
            meta.setdefault("correlation_id", caused_by.correlation_id)
            meta.setdefault("causation_id", caused_by.message_id)
        return cls(payload=payload, **meta)  # type: ignore[arg-type]
