"""Variables of crm_sync: which CRM adapters are on, where they are, and how lead answers map to CRM fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

FieldMap = dict[str, str | None]


def _load_map(value: object) -> object:
    """A JSON object inline, or the path of a YAML/JSON file holding one; empty means no overrides."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        return json.loads(text)
    path = Path(text)
    if not path.is_file():
        raise ValueError("must be a JSON object or the path of a YAML/JSON file")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


class CrmSyncSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    crm_webhook_url: str = ""
    crm_webhook_secret: SecretStr = Field(default=SecretStr(""), validate_default=True)
    # Meta question key -> CRM field name for the generic webhook (null drops the answer); merged over defaults.
    crm_field_map: Annotated[FieldMap, NoDecode] = Field(default_factory=dict)
    crm_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # LeadCaptured messages in flight per process: what concurrent deliveries can share one transaction.
    crm_prefetch: int = Field(default=100, ge=1, le=1000)

    ghl_api_token: SecretStr = SecretStr("")
    ghl_location_id: str = Field(default="", validate_default=True)
    ghl_base_url: str = "https://services.leadconnectorhq.com"
    # Meta question key -> GoHighLevel custom field key (e.g. {"accident_date": "contact.accident_date"}).
    ghl_custom_field_map: Annotated[FieldMap, NoDecode] = Field(default_factory=dict)

    _maps = field_validator("crm_field_map", "ghl_custom_field_map", mode="before")(_load_map)

    @field_validator("crm_webhook_url", "ghl_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("ghl_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("crm_webhook_secret")
    @classmethod
    def _secret_with_url(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # Lead answers are PII: the receiver must be able to tell our requests from anyone else's.
        if info.data.get("crm_webhook_url") and not value.get_secret_value():
            raise ValueError("required when CRM_WEBHOOK_URL is set")
        return value

    @field_validator("ghl_location_id")
    @classmethod
    def _location_with_token(cls, value: str, info: ValidationInfo) -> str:
        token = info.data.get("ghl_api_token")
        if token is not None and token.get_secret_value() and not value:
            raise ValueError("required when GHL_API_TOKEN is set")
        if value and (token is None or not token.get_secret_value()):
            raise ValueError("set GHL_API_TOKEN too, or leave GHL_LOCATION_ID empty")
        return value

    @property
    def webhook_enabled(self) -> bool:
        return bool(self.crm_webhook_url)

    @property
    def gohighlevel_enabled(self) -> bool:
        return bool(self.ghl_api_token.get_secret_value())

    def describe(self) -> dict[str, Any]:
        """What is configured, without secrets."""
        return {"webhook": self.webhook_enabled, "gohighlevel": self.gohighlevel_enabled}
