"""CRM adapters: the generic signed webhook and GoHighLevel (LeadConnector API v2).

An adapter returns the CRM's reference for the contact (or None) or raises `DeliveryFailure`, saying whether a
retry can help. Failure reasons carry status codes and error classes only: a CRM's error body may quote the
lead's answers back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from services.crm_sync import store
from services.crm_sync.mapping import ghl_contact, webhook_body
from shared.db.pool import create_pool
from shared.ghl import CustomFieldCache, GhlClient, GhlError, GhlRateLimited
from shared.leads import StoredLead
from shared.settings import DatabaseSettings

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

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


class ContactLedger:
    """`ghl_contacts` through connections of its own (at most two), never the delivery's: a contact id is committed
    the moment GoHighLevel gives it, whatever becomes of the delivery's transaction, and a delivery holding a pool
    connection never waits for a second one from the same pool."""

    def __init__(self, database: DatabaseSettings) -> None:
        self._settings = DatabaseSettings(database_url=database.database_url, db_pool_min=0, db_pool_max=2)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await create_pool(self._settings)
        return self._pool

    async def get(self, leadgen_id: str) -> tuple[str, bool] | None:
        return await store.ghl_contact(await self.pool(), leadgen_id)

    async def record(self, leadgen_id: str, location_id: str, contact_id: str) -> None:
        await store.record_ghl_contact(await self.pool(), leadgen_id, location_id, contact_id)

    async def note_added(self, leadgen_id: str) -> None:
        await store.mark_ghl_note(await self.pool(), leadgen_id)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class GoHighLevelAdapter:
    """A lead as a GoHighLevel contact (API v2, `shared.ghl`), in the order the spec asks for:

    1. custom field ids from the location's fields (read once, again on a miss; leadwire's own created if allowed);
    2. `POST /contacts/upsert` (found by e-mail or phone, GoHighLevel's duplicate rule) without `tags`, which would
       replace the contact's tags; with custom fields by id, ISO country, date of birth, gender, names;
    3. the contact id recorded at once (`ghl_contacts`), so a retry after a crash updates the same contact;
    4. `POST /contacts/{id}/tags`: leadwire's tags added to those the contact has (a returning contact keeps its own);
    5. the answers no field took: in the "Meta Lead Answers" field, or else one note (`POST /contacts/{id}/notes`).

    At least once per lead, and idempotent: every step repeated after a crash leaves the same contact (a lead with
    neither e-mail nor phone is updated through its recorded contact id), tags are a set, the note is recorded.
    """

    name = "gohighlevel"

    def __init__(self, client: GhlClient, ledger: ContactLedger, custom_fields: Mapping[str, str | None], *,
                 create_fields: bool = True) -> None:
        self.client = client
        self.ledger = ledger
        self.custom_fields = custom_fields
        self.fields = CustomFieldCache(client, create_missing=create_fields)
        self._warned: set[str] = set()

    async def deliver(self, lead: StoredLead) -> str | None:
        try:
            return await self._deliver(lead)
        except GhlRateLimited as exc:
            raise DeliveryFailure(exc.reason, transient=True, retry_after=exc.retry_after) from None
        except GhlError as exc:
            raise DeliveryFailure(exc.reason, transient=exc.transient) from None

    async def _deliver(self, lead: StoredLead) -> str:
        await self.fields.current()
        contact = ghl_contact(lead, self.client.location_id, self.fields.resolve, self.custom_fields)
        if contact.missing and await self.fields.refresh_on_miss():
            contact = ghl_contact(lead, self.client.location_id, self.fields.resolve, self.custom_fields)
        for target in contact.missing:
            if target not in self._warned:
                self._warned.add(target)
                logger.warning("GoHighLevel has no contact custom field %r (GHL_CUSTOM_FIELD_MAP): its answers go "
                               "with the unmapped answers", target)
        recorded = await self.ledger.get(lead.leadgen_id)
        if recorded is not None and not contact.matchable:
            contact_id = recorded[0]
            await self.client.update_contact(contact_id, contact.body)
        else:
            found, _ = await self.client.upsert_contact(contact.body)
            if found is None:
                raise GhlError(502, "the upsert answered no contact id")
            contact_id = found
            if recorded is None or recorded[0] != contact_id:
                await self.ledger.record(lead.leadgen_id, self.client.location_id, contact_id)
                recorded = (contact_id, False)
        await self.client.add_tags(contact_id, contact.tags)
        if contact.note and not (recorded is not None and recorded[1]):
            await self.client.add_note(contact_id, contact.note)
            await self.ledger.note_added(lead.leadgen_id)
        return contact_id

    async def close(self) -> None:
        await self.ledger.close()
