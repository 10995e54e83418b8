"""Variables of the ingress beyond the shared `IngressSettings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngressPublishSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # How long a request waits for the broker's confirms before answering 503 (Meta then retries).
    ingress_publish_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
