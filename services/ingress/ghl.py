"""`POST /crm/events/ghl`: GoHighLevel's outcomes (a pipeline stage reached, a tag added) as ConversionRequested.

Two kinds of sender, told apart by how they prove themselves:

- **App webhooks** (a Marketplace app subscribed to `OpportunityStageUpdate` and `ContactTagUpdate`), signed by
  GoHighLevel over the raw body: `X-GHL-Signature` (Ed25519, base64; the key GoHighLevel publishes, in
  GHL_WEBHOOK_PUBLIC_KEY) or the older `X-WH-Signature` (RSA-SHA256 PKCS#1 v1.5, base64; the public key of
  GoHighLevel's docs/oauth/WebhookAuthentication.md by default). A body whose `timestamp` is older than
  GHL_WEBHOOK_MAX_AGE_SECONDS is refused (replays); the payloads are those of GoHighLevel's webhook events docs.
- **Workflow "Webhook" actions** (a workflow step that POSTs the contact), with the shared secret GHL_EVENTS_SECRET
  as `Authorization: Bearer <secret>` (the Custom Webhook action can set headers) or as the custom data key `secret`
  (the plain Webhook action can only add custom data). Its body: the contact's fields (`contact_id`, `email`,
  `phone`, `first_name`, `last_name`, `tags`), the opportunity's when the trigger is one (`pipeline_stage`,
  `pipeline_id`, `opportunity_value`/`lead_value`), and `customData`.

What an event means comes from GHL_OUTCOME_MAP (`OutcomeMap`): a pipeline stage (by id or name) or a tag names the
event (QualifiedLead, SignedCase, ...) with an optional value and currency; a workflow may also say it itself
(`customData.event_name`, `value`, `currency`). The event carries the contact id as `user.external_id`, which
capi_sender and the rules engine resolve to the stored lead through the contact id crm_sync recorded
(`stored_crm_contacts`), then `lead_id` (from `customData.lead_id` or the contact's "Meta Lead ID" field) and the
contact's e-mail, phone and names. Its `event_id` is `ghl-<contact>-<event>`: a stage reached twice, or a tag
update repeating the tags, is the same event, sent once.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from pydantic import ValidationError

from contracts.conversions import ConversionRequested
from contracts.messages import ConversionRequestedMessage
from services.ingress import metrics
from services.ingress.errors import BadRequest, NotConfigured, PayloadTooLarge, Unauthorized, Unprocessable
from services.ingress.keys import CONFIG, CONVERSION_PUBLISHER
from services.ingress.logic import conversion_message_id, without_clear_identifiers
from services.ingress.publishing import publish_all

logger = logging.getLogger(__name__)

CRM_NAME = "HighLevel"
APP_EVENTS = ("OpportunityStageUpdate", "ContactTagUpdate")

# GoHighLevel's public key for `X-WH-Signature` (docs/oauth/WebhookAuthentication.md of GoHighLevel/highlevel-api-docs,
# commit 0af86a4; tests/resources/ghl/docs/WebhookAuthentication.md).
GHL_RSA_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
"""


# -- configuration -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a stage or tag means: the event's name, and its value and currency when it has one."""

    event_name: str
    value: float | None = None
    currency: str | None = None


@dataclass(frozen=True)
class OutcomeMap:
    """GHL_OUTCOME_MAP: `{"stages": {<stage id or name>: <outcome>}, "tags": {<tag>: <outcome>}, "currency": "USD"}`,
    an outcome being an event name or `{"event_name", "value", "currency"}`. Names and tags compare without case."""

    stages: Mapping[str, Outcome] = field(default_factory=dict)
    tags: Mapping[str, Outcome] = field(default_factory=dict)
    currency: str = "USD"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> OutcomeMap:
        """Raises ValueError with the offending path."""
        unknown = set(raw) - {"stages", "tags", "currency"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}: use stages, tags, currency")
        currency = str(raw.get("currency") or "USD").upper()
        parsed: dict[str, dict[str, Outcome]] = {}
        for part in ("stages", "tags"):
            entries = raw.get(part) or {}
            if not isinstance(entries, Mapping):
                raise ValueError(f"{part}: must be an object")
            parsed[part] = {str(k).strip().lower(): _outcome(v, f"{part}.{k}") for k, v in entries.items()}
        return cls(parsed["stages"], parsed["tags"], currency)

    def stage(self, *names: object) -> Outcome | None:
        return next((self.stages[k] for n in names if n and (k := str(n).strip().lower()) in self.stages), None)

    def for_tags(self, tags: list[str]) -> list[Outcome]:
        found: dict[str, Outcome] = {}
        for tag in tags:
            outcome = self.tags.get(tag.strip().lower())
            if outcome is not None:
                found.setdefault(outcome.event_name, outcome)
        return list(found.values())


def _outcome(value: object, where: str) -> Outcome:
    if isinstance(value, str) and value.strip():
        return Outcome(value.strip())
    if isinstance(value, Mapping) and isinstance(value.get("event_name"), str) and value["event_name"].strip():
        amount = value.get("value")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0):
            raise ValueError(f"{where}.value: must be a number >= 0")
        currency = value.get("currency")
        return Outcome(value["event_name"].strip(), float(amount) if amount is not None else None,
                       str(currency).upper() if currency else None)
    raise ValueError(f"{where}: must be an event name or an object with event_name")


@dataclass(frozen=True)
class GhlEventsConfig:
    """What the handler needs; secrets as plain strings, never logged."""

    secret: str
    outcome_map: OutcomeMap
    ed25519_key: ed25519.Ed25519PublicKey | None
    rsa_key: rsa.RSAPublicKey | None
    max_age_seconds: float = 300.0

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.ed25519_key is not None)


def load_public_key(pem: str) -> ed25519.Ed25519PublicKey | rsa.RSAPublicKey:
    """A PEM public key (the text itself, `\\n` escapes allowed, or a file path). Raises ValueError."""
    text = pem.strip().replace("\\n", "\n")
    if not text.startswith("-----BEGIN"):
        with open(text, encoding="utf-8") as handle:
            text = handle.read()
    key = serialization.load_pem_public_key(text.encode())
    if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise ValueError("must be an Ed25519 or RSA public key")
    return key


# -- authentication ----------------------------------------------------------------------------------------------


def _signature(value: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("signature is not base64") from None


def verify_app_signature(config: GhlEventsConfig, raw: bytes, headers: Mapping[str, str]) -> bool:
    """True when the body carries GoHighLevel's signature and it verifies; False when it carries none.

    Raises:
        Unauthorized: a signature that does not verify, or one leadwire has no key for.
    """
    ghl = headers.get("X-GHL-Signature")
    if ghl is not None:
        if config.ed25519_key is None:
            raise Unauthorized("X-GHL-Signature: set GHL_WEBHOOK_PUBLIC_KEY to GoHighLevel's Ed25519 public key")
        try:
            config.ed25519_key.verify(_signature(ghl), raw)
        except InvalidSignature:
            raise Unauthorized("invalid X-GHL-Signature") from None
        return True
    legacy = headers.get("X-WH-Signature")
    if legacy is not None:
        if config.rsa_key is None:
            raise Unauthorized("X-WH-Signature: no RSA public key configured")
        try:
            config.rsa_key.verify(_signature(legacy), raw, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise Unauthorized("invalid X-WH-Signature") from None
        return True
    return False


def shared_secret_matches(secret: str, authorization: str | None, body: Mapping[str, Any]) -> bool:
    if not secret:
        return False
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret.encode())
    custom = body.get("customData")
    given = custom.get("secret") if isinstance(custom, Mapping) else None
    return isinstance(given, str) and hmac.compare_digest(given.encode(), secret.encode())


# -- payloads ----------------------------------------------------------------------------------------------------


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return value.strip() or None if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number >= 0 and number == number and number != float("inf") else None


def _tags(value: object) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list):
        return [str(t).strip() for t in value if isinstance(t, str | int) and str(t).strip()]
    return []


def _event_time(value: object, now: float) -> int:
    if isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                return min(int(moment.timestamp()), int(now))
        except ValueError:
            pass
    return int(now)


@dataclass(frozen=True)
class Parsed:
    events: list[ConversionRequested]
    kind: str  # the app event type, or "workflow"
    ignored: str | None = None  # why nothing was produced, when nothing was


def parse_app_event(body: Mapping[str, Any], outcome_map: OutcomeMap, *, now: float,
                    max_age: float) -> Parsed:
    """An app webhook (signature verified): `OpportunityStageUpdate` or `ContactTagUpdate`; other types are
    acknowledged and ignored."""
    kind = _text(body.get("type")) or "unknown"
    stamp = _text(body.get("timestamp"))
    if stamp is not None:
        try:
            sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadRequest("timestamp is not ISO 8601") from None
        if now - sent > max_age:
            raise Unauthorized("stale webhook (timestamp older than GHL_WEBHOOK_MAX_AGE_SECONDS)")
    if kind not in APP_EVENTS:
        return Parsed([], kind if kind.isalnum() and len(kind) < 40 else "other", "event type not used")
    event_time = _event_time(stamp, now)
    if kind == "OpportunityStageUpdate":
        contact = _text(body.get("contactId"))
        outcome = outcome_map.stage(body.get("pipelineStageId"))
        if outcome is None or contact is None:
            return Parsed([], kind, "stage not in GHL_OUTCOME_MAP" if contact else "no contactId")
        user = {"external_id": contact}
        value = outcome.value if outcome.value is not None else _number(body.get("monetaryValue"))
        return Parsed([_event(outcome, contact, user, value, outcome_map, event_time)], kind)
    contact = _text(body.get("id"))
    if contact is None:
        return Parsed([], kind, "no contact id")
    user = {"external_id": contact, "email": _text(body.get("email")), "phone": _text(body.get("phone")),
            "first_name": _text(body.get("firstName")), "last_name": _text(body.get("lastName")),
            "country": _text(body.get("country"))}
    outcomes = outcome_map.for_tags(_tags(body.get("tags")))
    events = [_event(o, contact, user, o.value, outcome_map, event_time) for o in outcomes]
    return Parsed(events, kind, None if events else "no tag in GHL_OUTCOME_MAP")


def parse_workflow_event(body: Mapping[str, Any], outcome_map: OutcomeMap, *, now: float) -> Parsed:
    """A workflow "Webhook" action's body (shared secret checked)."""
    custom = body.get("customData") if isinstance(body.get("customData"), Mapping) else {}
    contact = _text(body.get("contact_id")) or _text(body.get("contactId")) or _text(custom.get("contact_id"))
    if contact is None:
        raise Unprocessable([{"path": "contact_id", "message": "the contact's id is required"}])
    outcomes: list[Outcome]
    if name := _text(custom.get("event_name")):
        outcomes = [Outcome(name[:100], _number(custom.get("value")), _text(custom.get("currency")))]
    elif stage := outcome_map.stage(body.get("pipeline_stage_id"), body.get("pipeline_stage"),
                                    body.get("pipleline_stage")):  # GoHighLevel's own spelling, seen in the wild
        outcomes = [stage]
    else:
        outcomes = outcome_map.for_tags(_tags(body.get("tags")))
    if not outcomes:
        return Parsed([], "workflow", "no event_name, mapped stage or mapped tag")
    lead_id = _text(custom.get("lead_id")) or _text(body.get("Meta Lead ID")) or _text(body.get("meta_lead_id"))
    user = {"external_id": contact, "lead_id": lead_id if lead_id and lead_id.isascii() and lead_id.isdigit()
            else None,
            "email": _text(body.get("email")), "phone": _text(body.get("phone")),
            "first_name": _text(body.get("first_name")), "last_name": _text(body.get("last_name")),
            "country": _text(body.get("country"))}
    amount = _number(custom.get("value"))
    if amount is None:
        amount = _number(body.get("opportunity_value")) if "opportunity_value" in body else _number(
            body.get("lead_value"))
    events = [_event(o, contact, user, o.value if o.value is not None else amount, outcome_map, int(now))
              for o in outcomes]
    return Parsed(events, "workflow")


def _event(outcome: Outcome, contact: str, user: Mapping[str, str | None], value: float | None,
           outcome_map: OutcomeMap, event_time: int) -> ConversionRequested:
    custom = None
    if value is not None:
        custom = {"value": value, "currency": outcome.currency or outcome_map.currency}
    try:
        return ConversionRequested.model_validate({
            "event_name": outcome.event_name,
            "event_time": event_time,
            "event_id": f"ghl-{contact}-{outcome.event_name}"[:200],
            "action_source": "system_generated",
            "user": {k: v for k, v in user.items() if v},
            "custom_data": custom,
            "crm_name": CRM_NAME,
        })
    except ValidationError as exc:
        problems = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                    for e in exc.errors(include_input=False, include_url=False, include_context=False)]
        raise Unprocessable(problems) from None


def parse_ghl_request(config: GhlEventsConfig, raw: bytes, headers: Mapping[str, str],
                      now: float | None = None) -> Parsed:
    """Authenticate, then read one GoHighLevel request.

    Raises:
        NotConfigured: neither GHL_EVENTS_SECRET nor GHL_WEBHOOK_PUBLIC_KEY is set.
        Unauthorized: no valid signature and no valid shared secret; a stale signed body.
        BadRequest / Unprocessable: not JSON; an event the contract refuses.
    """
    if not config.enabled:
        raise NotConfigured("set GHL_EVENTS_SECRET (workflow webhooks) or GHL_WEBHOOK_PUBLIC_KEY (app webhooks)")
    now = time.time() if now is None else now
    signed = verify_app_signature(config, raw, headers)
    body = _loads(raw)
    if signed:
        return parse_app_event(body, config.outcome_map, now=now, max_age=config.max_age_seconds)
    if not shared_secret_matches(config.secret, headers.get("Authorization"), body):
        raise Unauthorized("missing or invalid X-GHL-Signature, Authorization: Bearer, or customData.secret")
    return parse_workflow_event(body, config.outcome_map, now=now)


# -- the handler -------------------------------------------------------------------------------------------------

GHL_CONFIG: web.AppKey[GhlEventsConfig] = web.AppKey("ghl_events_config", GhlEventsConfig)


async def receive_ghl_events(request: web.Request) -> web.Response:
    """GoHighLevel's outcomes; 202 once every event is confirmed by the broker (GoHighLevel retries otherwise)."""
    config = request.app[GHL_CONFIG]
    limit = request.app[CONFIG].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    raw = await request.read()
    parsed = parse_ghl_request(config, raw, request.headers)
    country = request.app[CONFIG].default_country
    events = [without_clear_identifiers(e, default_country=country) for e in parsed.events]
    messages = [ConversionRequestedMessage.new(e, message_id=conversion_message_id(e)) for e in events]
    if messages:
        await publish_all(request.app[CONVERSION_PUBLISHER], messages,
                          confirm_within=request.app[CONFIG].publish_timeout, endpoint="crm_events_ghl")
    metrics.CONVERSIONS_PUBLISHED.inc(len(messages))
    logger.info("gohighlevel %s: %d published%s", parsed.kind, len(messages),
                f" ({parsed.ignored})" if parsed.ignored else "",
                extra={"message_ids": [str(m.message_id) for m in messages]})
    body: dict[str, Any] = {"accepted": len(messages), "message_ids": [str(m.message_id) for m in messages]}
    if parsed.ignored:
        body["ignored"] = parsed.ignored
    return web.json_response(body, status=202)
