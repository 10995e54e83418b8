"""CRM adapters: the generic signed webhook and GoHighLevel (LeadConnector API v2).

An adapter returns the CRM's reference for the contact (or None) or raises `DeliveryFailure`, saying whether a
retry can help. Failure reasons carry status codes and error classes only: a CRM's error body may quote the
lead's answers back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from services.crm_sync.mapping import ghl_contact, webhook_body
from shared.leads import StoredLead

GHL_API_VERSION = "2021-07-28"
USER_AGENT = "leadwire-crm-sync/1"


class DeliveryFailure(Exception):
    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


class Adapter(Protocol):
    name: str

    async def deliver(self, lead: StoredLead) -> str | None: ...


def is_transient_status(status: int) -> bool:
    """5xx, 408 and 429 may pass on retry; any other 4xx (and 3xx: a misconfigured URL) will not."""
    return status >= 500 or status in (408, 429)


def retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our backoff


async def post_json(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> dict[str, Any] | None:
    """POST and classify the outcome; returns the JSON answer of a 2xx (None if it is not JSON)."""
    try:
        async with session.post(url, data=body, headers={**headers, "User-Agent": USER_AGENT}) as resp:
            if 200 <= resp.status < 300:
                try:
                    answer = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    return None
                return answer if isinstance(answer, dict) else None
            await resp.read()
            raise DeliveryFailure(
                f"HTTP {resp.status}",
                transient=is_transient_status(resp.status),
                retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
            )
    except TimeoutError:
        raise DeliveryFailure("timeout", transient=True) from None
    except aiohttp.ClientError as exc:
        raise DeliveryFailure(f"connection error ({type(exc).__name__})", transient=True) from None


class WebhookAdapter:
    """POST the lead as JSON to CRM_WEBHOOK_URL, signed with CRM_WEBHOOK_SECRET, keyed by the lead id."""

    name = "webhook"

    def __init__(self, session: aiohttp.ClientSession, url: str, secret: str,
                 mapping: Mapping[str, str | None]) -> None:
        self.session = session
        self.url = url
        self.secret = secret.encode()
        self.mapping = mapping

    async def deliver(self, lead: StoredLead) -> str | None:
        body = json.dumps(webhook_body(lead, self.mapping), separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Leadwire-Signature": "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest(),
            "Idempotency-Key": lead.leadgen_id,
        }
        answer = await post_json(self.session, self.url, body, headers)
        reference = (answer or {}).get("id")
        return str(reference) if reference is not None else None


class GoHighLevelAdapter:
    """Upsert a contact in a GoHighLevel location (POST /contacts/upsert, API version 2021-07-28)."""

    name = "gohighlevel"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str, location_id: str,
                 custom_fields: Mapping[str, str | None]) -> None:
        self.session = session
        self.url = f"{base_url}/contacts/upsert"
        self.token = token
        self.location_id = location_id
        self.custom_fields = custom_fields

    async def deliver(self, lead: StoredLead) -> str | None:
        body = json.dumps(ghl_contact(lead, self.location_id, self.custom_fields), ensure_ascii=False).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Version": GHL_API_VERSION,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        answer = await post_json(self.session, self.url, body, headers)
        contact = (answer or {}).get("contact")
        reference = contact.get("id") if isinstance(contact, dict) else None
        return str(reference) if reference is not None else None

