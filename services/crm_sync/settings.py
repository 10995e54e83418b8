"""Variables of crm_sync: which CRM adapters are on, where they are, and how lead answers map to CRM fields."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.ghl import FieldMap, GhlSettings, load_map


class CrmSyncSettings(GhlSettings):
    """The generic webhook's variables here; GoHighLevel's (GHL_*) are `shared.ghl.GhlSettings`, which `leadwire
    doctor` reads too."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    crm_webhook_url: str = ""
    crm_webhook_secret: SecretStr = Field(default=SecretStr(""), validate_default=True)
    # Meta question key -> CRM field name for the generic webhook (null drops the answer); merged over defaults.
    crm_field_map: Annotated[FieldMap, NoDecode] = Field(default_factory=dict)
    crm_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # LeadCaptured messages in flight per process: what concurrent deliveries can share one transaction.
    crm_prefetch: int = Field(default=100, ge=1, le=1000)

    _crm_maps = field_validator("crm_field_map", mode="before")(load_map)

    @field_validator("crm_webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("crm_webhook_secret")
    @classmethod
    def _secret_with_url(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # Lead answers are PII: the receiver must be able to tell our requests from anyone else's.
        if info.data.get("crm_webhook_url") and not value.get_secret_value():
            raise ValueError("required when CRM_WEBHOOK_URL is set")
        return value

    @property
    def webhook_enabled(self) -> bool:
        return bool(self.crm_webhook_url)

    def describe(self) -> dict[str, Any]:
        """What is configured, without secrets."""
        return {"webhook": self.webhook_enabled, "gohighlevel": self.gohighlevel_enabled}
