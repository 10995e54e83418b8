"""The ingress's variables: where it listens, how big a request may be, how long it waits for the broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.ingress.keys import IngressConfig

if TYPE_CHECKING:
    from shared.settings import Settings


class IngressSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    ingress_host: str = "0.0.0.0"
    # The webhooks and the ingress's /healthz /readyz /metrics share this port; OPS_PORT does not move it.
    ingress_port: int = Field(default=8080, ge=0, le=65535)
    ingress_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Processes serving INGRESS_PORT together (SO_REUSEPORT); one Python process tops out near one core.
    ingress_workers: int = Field(default=1, ge=1, le=64)
    crm_events_secret: SecretStr = SecretStr("")
    # How long a request waits for the broker's confirms before answering 503 (Meta then retries).
    ingress_publish_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A connection must send a whole request head within this many seconds of connecting (or of its previous
    # answer, when kept alive), and a request's body within the body timeout: slow clients cannot hold sockets.
    ingress_header_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    ingress_body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)


def ingress_config(settings: Settings) -> IngressConfig:
    """What the request handlers need to know, from the process settings (secrets as plain strings)."""
    ingress = settings.block(IngressSettings)
    return IngressConfig(
        app_secret=settings.meta.app_secret.get_secret_value(),
        verify_token=settings.meta.webhook_verify_token.get_secret_value(),
        crm_events_secret=ingress.crm_events_secret.get_secret_value(),
        max_body_bytes=ingress.ingress_max_body_bytes,
        publish_timeout=ingress.ingress_publish_timeout_seconds,
        body_timeout=ingress.ingress_body_timeout_seconds,
    )
