"""The ingress's variables: where it listens, how big a request may be, how long it waits for the broker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import AfterValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.ingress.ghl import GHL_RSA_PUBLIC_KEY, GhlEventsConfig, OutcomeMap, load_public_key
from services.ingress.keys import IngressConfig
from shared.ghl import load_map
from shared.settings import iso_country

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
    # CRM events' identifiers are hashed here, before they are published: a national phone number takes this
    # country (the event's own `country` first). The same variable as capi_sender's.
    default_country: Annotated[str, AfterValidator(iso_country)] = "US"


class GhlEventsSettings(BaseSettings):
    """`POST /crm/events/ghl` (services/ingress/ghl.py): how GoHighLevel proves itself, and what its events mean."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Shared secret of GoHighLevel workflow Webhook actions: `Authorization: Bearer <it>` or custom data `secret`.
    ghl_events_secret: SecretStr = SecretStr("")
    # GoHighLevel's Ed25519 public key (PEM text or a file) for app webhooks' X-GHL-Signature.
    ghl_webhook_public_key: str = ""
    # The RSA public key for the older X-WH-Signature; empty: the one GoHighLevel documents.
    ghl_webhook_rsa_public_key: str = ""
    ghl_webhook_max_age_seconds: float = Field(default=300.0, gt=0)
    # Stage (id or name) or tag -> event: {"stages": {"Retainer signed": {"event_name": "SignedCase",
    # "value": 5000}}, "tags": {"qualified": "QualifiedLead"}, "currency": "USD"}; JSON, or a YAML/JSON file path.
    ghl_outcome_map: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)

    @field_validator("ghl_outcome_map", mode="before")
    @classmethod
    def _map(cls, value: object) -> object:
        loaded = load_map(value)
        if isinstance(loaded, dict):
            OutcomeMap.parse(loaded)  # ValueError names the bad entry
        return loaded

    @field_validator("ghl_webhook_public_key", "ghl_webhook_rsa_public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if value.strip():
            load_public_key(value)
        return value

    def config(self) -> GhlEventsConfig:
        ed25519_key = rsa_key = None
        for pem in (self.ghl_webhook_public_key, self.ghl_webhook_rsa_public_key or GHL_RSA_PUBLIC_KEY):
            if pem.strip():
                key = load_public_key(pem)
                if isinstance(key, rsa.RSAPublicKey):
                    rsa_key = rsa_key or key
                else:
                    ed25519_key = key
        return GhlEventsConfig(
            secret=self.ghl_events_secret.get_secret_value(), outcome_map=OutcomeMap.parse(self.ghl_outcome_map),
            ed25519_key=ed25519_key, rsa_key=rsa_key, max_age_seconds=self.ghl_webhook_max_age_seconds,
        )


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
        default_country=ingress.default_country,
    )
