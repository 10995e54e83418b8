"""GoHighLevel (LeadConnector) API v2: the one client crm_sync's adapter and `leadwire doctor` share.

Written to GoHighLevel's own OpenAPI documents (the `GoHighLevel/highlevel-api-docs` repository: `apps/contacts.json`,
`apps/locations.json`; the copies the tests' stand-in validates against are in `tests/resources/ghl/`):

- every request carries `Authorization: Bearer <token>` and `Version: 2021-07-28` (a required header of every
  operation used here);
- rate limits (docs/oauth/Authorization.md): 100 requests per 10 s and 200,000 per day per app and location, told on
  every answer by `X-RateLimit-Max`, `X-RateLimit-Remaining`, `X-RateLimit-Interval-Milliseconds`,
  `X-RateLimit-Limit-Daily` and `X-RateLimit-Daily-Remaining`. The client reads them on every answer: with the burst
  window spent it waits for the window before its next request (at most `MAX_PACING_WAIT`), and a 429 becomes
  `GhlRateLimited` with the wait those headers imply (`Retry-After` first when given), which the caller hands back
  to its queue as a delayed retry;
- custom fields are addressed by id (`customFields[].id` is required by every item schema of `UpsertContactDto`):
  `CustomFieldCache` reads the location's contact fields once, keeps them, reads again on a miss (at most once per
  `REFRESH_MIN_SECONDS`), and creates the few leadwire needs (`LEADWIRE_FIELDS`) when the token may.

Error texts carry GoHighLevel's status and message only, never a request body (lead answers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import aiohttp
import yaml
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger(__name__)

API_VERSION = "2021-07-28"
DEFAULT_BASE_URL = "https://services.leadconnectorhq.com"
USER_AGENT = "leadwire/1"
MAX_PACING_WAIT = 10.0  # the burst window is 10 s: never hold a request longer than one window
RATE_LIMIT_RETRIES = 3  # 429s waited out in place (each at most MAX_PACING_WAIT) before the caller is told
DAILY_LIMIT_WAIT = 3600.0  # the daily quota is spent: GoHighLevel does not say when it resets; look again in an hour
REFRESH_MIN_SECONDS = 60.0
MESSAGE_LIMIT = 200

# The custom fields leadwire keeps on each contact: (purpose, field name, GoHighLevel data type). GoHighLevel derives
# the field's key from its name (`contact.meta_lead_id`); leadwire finds them by that key.
LEADWIRE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("lead_id", "Meta Lead ID", "TEXT"),
    ("form", "Meta Lead Form", "TEXT"),
    ("campaign", "Meta Campaign", "TEXT"),
    ("answers", "Meta Lead Answers", "LARGE_TEXT"),
)

FieldMap = dict[str, str | None]


def field_key(name: str) -> str:
    """The key GoHighLevel gives a contact field named `name` ("Meta Lead ID" -> "contact.meta_lead_id")."""
    return "contact." + re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


LEADWIRE_FIELD_KEYS: dict[str, str] = {purpose: field_key(name) for purpose, name, _ in LEADWIRE_FIELDS}


def load_map(value: object) -> object:
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


class GhlSettings(BaseSettings):
    """Where GoHighLevel is, for crm_sync's adapter and `leadwire doctor` (crm_sync's settings extend these)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    ghl_api_token: SecretStr = SecretStr("")
    ghl_location_id: str = Field(default="", validate_default=True)
    ghl_base_url: str = DEFAULT_BASE_URL
    # Meta question key -> GoHighLevel contact custom field: its key ("contact.accident_date" or "accident_date") or
    # its id. Sent by id; a key the location lacks is read again once, then the answer is kept in the catch-all.
    ghl_custom_field_map: Annotated[FieldMap, NoDecode] = Field(default_factory=dict)
    # Create leadwire's own custom fields (Meta Lead ID, Meta Lead Form, Meta Campaign, Meta Lead Answers) when the
    # location lacks them and the token has locations/customFields.write; else `leadwire doctor` names them.
    ghl_create_custom_fields: bool = True

    _maps = field_validator("ghl_custom_field_map", mode="before")(load_map)

    @field_validator("ghl_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

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
    def gohighlevel_enabled(self) -> bool:
        return bool(self.ghl_api_token.get_secret_value())


# -- errors ------------------------------------------------------------------------------------------------------


class GhlError(Exception):
    """GoHighLevel answered an error (`status`), or could not be reached (`status` 0)."""

    def __init__(self, status: int, message: str = "", *, transient: bool | None = None) -> None:
        self.status = status
        self.message = message[:MESSAGE_LIMIT]
        self.transient = (status == 0 or status >= 500 or status in (408, 429)) if transient is None else transient
        super().__init__(f"HTTP {status}" + (f": {self.message}" if self.message else "") if status else message)

    @property
    def reason(self) -> str:
        """Status only (an error message may quote a lead's answer back): for logs and delivery records."""
        return f"HTTP {self.status}" if self.status else self.message

    @property
    def scope_denied(self) -> bool:
        """The token lacks the scope (GoHighLevel: 401 "The token is not authorized for this scope.") or the
        location (403)."""
        return self.status == 403 or (self.status == 401 and "scope" in self.message.lower())


class GhlRateLimited(GhlError):
    """429: `retry_after` seconds until GoHighLevel's headers say a request may pass."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(429, message)
        self.retry_after = retry_after


# -- rate limits -------------------------------------------------------------------------------------------------


@dataclass
class RateLimit:
    """The burst budget as the `X-RateLimit-*` headers tell it, spent locally by each request sent (several may be in
    flight before an answer tells the new count). None: not told yet."""

    remaining: int | None = None
    maximum: int | None = None
    interval: float | None = None  # seconds
    daily_remaining: int | None = None
    daily_limit: int | None = None
    window_ends: float = 0.0  # monotonic time the spent burst window ends (0: not spent)

    def update(self, headers: Mapping[str, str], now: float) -> None:
        def number(name: str) -> int | None:
            try:
                return int(float(headers[name]))
            except (KeyError, ValueError):
                return None

        interval_ms = number("X-RateLimit-Interval-Milliseconds")
        if interval_ms is not None:
            self.interval = max(0.0, interval_ms / 1000)
        self.maximum = number("X-RateLimit-Max") or self.maximum
        self.daily_limit = number("X-RateLimit-Limit-Daily") or self.daily_limit
        daily = number("X-RateLimit-Daily-Remaining")
        if daily is not None:
            self.daily_remaining = daily
        remaining = number("X-RateLimit-Remaining")
        if remaining is not None and (self.remaining is None or remaining < self.remaining):
            self.remaining = remaining
        if self.remaining is not None and self.remaining <= 0 and not self.window_ends:
            self.window_ends = now + self._interval

    @property
    def _interval(self) -> float:
        return self.interval if self.interval is not None else MAX_PACING_WAIT

    def reserve(self, now: float) -> float:
        """Take one request from the budget: 0 to go now, else the seconds until the window ends."""
        if self.window_ends:
            if now < self.window_ends:
                return self.window_ends - now
            self.window_ends = 0.0
            self.remaining = self.maximum  # a new window
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.window_ends = now + self._interval
        return 0.0

    def throttled(self, headers: Mapping[str, str], now: float) -> float:
        """After a 429: the wait it implies (`Retry-After`, else a spent daily quota: an hour, else the burst
        window), and the window marked spent until then."""
        wait: float | None = None
        given = headers.get("Retry-After")
        if given is not None:
            try:
                wait = max(0.0, float(given))
            except ValueError:
                wait = None
        if wait is None:
            spent_today = self.daily_remaining is not None and self.daily_remaining <= 0
            wait = DAILY_LIMIT_WAIT if spent_today else self._interval
        self.remaining = 0
        self.window_ends = max(self.window_ends, now + wait)
        return wait


# -- the client --------------------------------------------------------------------------------------------------


class GhlClient:
    """Calls to one GoHighLevel location with one token. Safe to share between concurrent tasks."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str, location_id: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.location_id = location_id
        self._headers = {"Authorization": f"Bearer {token}", "Version": API_VERSION, "Accept": "application/json",
                         "User-Agent": USER_AGENT}
        self._clock = clock
        self.rate = RateLimit()

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: GhlSettings) -> GhlClient:
        return cls(session, settings.ghl_base_url, settings.ghl_api_token.get_secret_value(),
                   settings.ghl_location_id)

    async def request(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                      params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One call; the JSON object GoHighLevel answered (empty when it answered none).

        Raises:
            GhlRateLimited: 429 beyond a short wait (`MAX_PACING_WAIT`, waited out here up to RATE_LIMIT_RETRIES
                times), with the wait its headers imply.
            GhlError: any other non-2xx (`transient` for 5xx/408), or no answer (status 0, transient).
        """
        for _ in range(RATE_LIMIT_RETRIES):
            try:
                return await self._once(method, path, body, params)
            except GhlRateLimited as exc:
                if exc.retry_after > MAX_PACING_WAIT:
                    raise
                logger.info("GoHighLevel rate limit: waiting %.1fs", exc.retry_after)
        return await self._once(method, path, body, params)

    async def _once(self, method: str, path: str, body: Mapping[str, Any] | None,
                    params: Mapping[str, str] | None) -> dict[str, Any]:
        while (wait := self.rate.reserve(self._clock())) > 0:
            if wait > MAX_PACING_WAIT:
                raise GhlRateLimited(wait, "rate limit window spent")
            await asyncio.sleep(wait)
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            async with self.session.request(method, self.base_url + path, data=data, params=params,
                                            headers=headers) as resp:
                raw = await resp.read()
                now = self._clock()
                answer = _json_object(raw)
                if resp.status == 429:
                    self.rate.update(resp.headers, now)
                    raise GhlRateLimited(self.rate.throttled(resp.headers, now), _message(answer))
                self.rate.update(resp.headers, now)
                if 200 <= resp.status < 300:
                    return answer
                raise GhlError(resp.status, _message(answer))
        except TimeoutError:
            raise GhlError(0, "timeout") from None
        except aiohttp.ClientError as exc:
            raise GhlError(0, f"connection error ({type(exc).__name__})") from None

    # -- the operations leadwire uses (operationIds of the spec) ------------------------------------------------

    async def get_location(self) -> dict[str, Any]:
        """`get-location`: the location the token is for."""
        answer = await self.request("GET", f"/locations/{quote(self.location_id, safe='')}")
        location = answer.get("location")
        return location if isinstance(location, dict) else {}

    async def custom_fields(self) -> list[dict[str, Any]]:
        """`get-custom-fields` with model=contact."""
        answer = await self.request("GET", f"/locations/{quote(self.location_id, safe='')}/customFields",
                                    params={"model": "contact"})
        fields = answer.get("customFields")
        return [f for f in fields if isinstance(f, dict)] if isinstance(fields, list) else []

    async def create_custom_field(self, name: str, data_type: str) -> dict[str, Any]:
        """`create-custom-field` (scope locations/customFields.write)."""
        answer = await self.request("POST", f"/locations/{quote(self.location_id, safe='')}/customFields",
                                    body={"name": name, "dataType": data_type, "model": "contact"})
        created = answer.get("customField")
        return created if isinstance(created, dict) else {}

    async def upsert_contact(self, contact: Mapping[str, Any]) -> tuple[str | None, bool]:
        """`upsert-contact`: (contact id, new)."""
        answer = await self.request("POST", "/contacts/upsert", body=contact)
        found = answer.get("contact")
        contact_id = found.get("id") if isinstance(found, dict) else None
        return (str(contact_id) if contact_id else None), bool(answer.get("new"))

    async def update_contact(self, contact_id: str, contact: Mapping[str, Any]) -> None:
        """`update-contact` (the upsert's body without `locationId`)."""
        body = {k: v for k, v in contact.items() if k not in ("locationId", "createNewIfDuplicateAllowed", "gender")}
        await self.request("PUT", f"/contacts/{quote(contact_id, safe='')}", body=body)

    async def add_tags(self, contact_id: str, tags: Sequence[str]) -> list[str]:
        """`add-tags`: adds to the contact's tags (the upsert's `tags` would replace them all)."""
        answer = await self.request("POST", f"/contacts/{quote(contact_id, safe='')}/tags", body={"tags": list(tags)})
        now = answer.get("tags")
        return [str(t) for t in now] if isinstance(now, list) else []

    async def add_note(self, contact_id: str, text: str) -> None:
        """`create-note`."""
        await self.request("POST", f"/contacts/{quote(contact_id, safe='')}/notes", body={"body": text})


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _message(answer: Mapping[str, Any]) -> str:
    message = answer.get("message")
    if isinstance(message, list):
        return "; ".join(str(m) for m in message)
    return str(message) if message else ""


# -- custom fields -----------------------------------------------------------------------------------------------


@dataclass
class CustomFieldCache:
    """The location's contact custom fields, by key and by id: read once, read again on a miss.

    `ensure_leadwire_fields` creates the missing fields of `LEADWIRE_FIELDS` when allowed; a token without the
    scope is remembered (`cannot_create`) and not asked again.
    """

    client: GhlClient
    create_missing: bool = True
    clock: Callable[[], float] = time.monotonic
    by_key: dict[str, str] = field(default_factory=dict)  # fieldKey -> id
    ids: set[str] = field(default_factory=set)
    loaded_at: float | None = None
    cannot_create: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def load(self) -> None:
        fields = await self.client.custom_fields()
        self.by_key = {str(f["fieldKey"]): str(f["id"]) for f in fields if f.get("fieldKey") and f.get("id")}
        self.ids = set(self.by_key.values()) | {str(f["id"]) for f in fields if f.get("id")}
        self.loaded_at = self.clock()

    async def current(self) -> dict[str, str]:
        """fieldKey -> id, read from GoHighLevel the first time (leadwire's own fields created then)."""
        if self.loaded_at is None:
            async with self._lock:
                if self.loaded_at is None:
                    await self.load()
                    await self._ensure_leadwire_fields()
        return self.by_key

    async def refresh_on_miss(self) -> bool:
        """Read the fields again after a miss (not more often than REFRESH_MIN_SECONDS); True if it did."""
        async with self._lock:
            if self.loaded_at is not None and self.clock() - self.loaded_at < REFRESH_MIN_SECONDS:
                return False
            await self.load()
            await self._ensure_leadwire_fields()
            return True

    def resolve(self, target: str) -> str | None:
        """A field id for a configured target: an id, a key ("contact.x"), or a bare key ("x")."""
        if target in self.ids:
            return target
        key = target if target.startswith("contact.") else f"contact.{target}"
        return self.by_key.get(key)

    def missing_leadwire_fields(self) -> list[str]:
        return [name for purpose, name, _ in LEADWIRE_FIELDS if LEADWIRE_FIELD_KEYS[purpose] not in self.by_key]

    async def _ensure_leadwire_fields(self) -> None:
        if not self.create_missing or self.cannot_create:
            return
        for purpose, name, data_type in LEADWIRE_FIELDS:
            key = LEADWIRE_FIELD_KEYS[purpose]
            if key in self.by_key:
                continue
            try:
                created = await self.client.create_custom_field(name, data_type)
            except GhlError as exc:
                if exc.status == 400:  # already there (another copy created it meanwhile): read the fields again
                    await self.load()
                    if key in self.by_key:
                        continue
                if exc.scope_denied or exc.status in (400, 401, 422):
                    self.cannot_create = True
                    logger.warning("cannot create GoHighLevel custom field %r (%s): create it in Settings > Custom "
                                   "Fields, or grant the token locations/customFields.write; `leadwire doctor` "
                                   "lists what is missing", name, exc.reason)
                    return
                raise
            if created.get("id"):
                created_key = str(created.get("fieldKey") or key)
                self.by_key[created_key] = str(created["id"])
                self.ids.add(str(created["id"]))
                logger.info("created GoHighLevel custom field %r (%s)", name, created_key)
