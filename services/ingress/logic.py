"""Plain logic of the ingress: signatures, Meta delivery parsing, CRM event parsing. No I/O.

Every function here raises one of the exceptions of `errors.py`; the HTTP layer maps them to statuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from contracts.conversions import ConversionRequested
from contracts.leads import LeadgenReceived
from contracts.values import MAX_UNIX_SECONDS
from services.ingress.errors import BadRequest, Forbidden, Unauthorized, Unprocessable
from shared.meta.customer_data import hashed_identifiers
from shared.poison import unstorable

# Namespaces of the deterministic message ids: Meta retries a delivery for up to 36 h (docs/meta-api.md §6.3), and
# every retry of the same lead must carry the same message id so consumers can drop the duplicates.
LEADGEN_NAMESPACE = uuid.UUID("6f0c9a52-3b7e-4c36-9a8e-2d1f4b0e7a11")
CONVERSION_NAMESPACE = uuid.UUID("0b8f6c1e-7d2a-4e59-8c3b-5a9e1f2d4c67")

SIGNATURE_PREFIX = "sha256="
MAX_CRM_EVENTS = 1000
MAX_REPORTED_ERRORS = 50
# Metric labels taken from webhook content are bounded: a signed delivery can carry any object and field names, so
# only Meta's webhook objects and the fields leadwire may meet (Page, application and ad account fields,
# docs/meta-api.md §6) get a series of their own; anything else is counted as `other`.
WEBHOOK_OBJECTS = frozenset({
    "page", "user", "permissions", "application", "instagram", "whatsapp_business_account", "ad_account",
    "business", "certificate_transparency", "group", "link", "homepage",
})
WEBHOOK_FIELDS = frozenset({
    "leadgen", "leadgen_fat", "feed", "mention", "ratings", "messages", "messaging_postbacks", "message_deliveries",
    "message_reads", "message_echoes", "conversations", "live_videos", "videos", "photos", "name", "picture",
    "website", "email", "category", "description", "location", "phone", "page_upcoming_change",
    "page_change_proposal", "ads_rules_engine", "async_requests", "ad_account", "in_process_ad_objects",
    "with_issues_ad_objects", "product_review", "affiliation", "plugin_comment", "plugin_comment_reply",
})


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is `sha256=<hex>` of HMAC-SHA256(secret, body), compared in constant time.

    An empty secret never matches: an HMAC with an empty key is something anyone can compute.
    """
    if not secret or not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    given = header[len(SIGNATURE_PREFIX) :].strip().lower()
    return hmac.compare_digest(given.encode(), hmac_hex(secret, body).encode())


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a shared token; an unset expected token never matches."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def verify_meta_signature(app_secret: str, body: bytes, header: str | None) -> None:
    """Meta signs the exact bytes it sent (docs/meta-api.md §6.2): check them before parsing anything."""
    if header is None:
        raise Forbidden("missing X-Hub-Signature-256")
    if not signature_matches(app_secret, body, header):
        raise Forbidden("invalid X-Hub-Signature-256")


def authenticate_crm(secret: str, body: bytes, signature: str | None, authorization: str | None) -> None:
    """A CRM proves itself with an HMAC of the body or, for tools that cannot sign, a bearer token."""
    if signature is not None:
        if signature_matches(secret, body, signature):
            return
        raise Unauthorized("invalid X-Leadwire-Signature")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token_matches(secret, token.strip()):
            return
        raise Unauthorized("invalid bearer token")
    raise Unauthorized("missing X-Leadwire-Signature or Authorization: Bearer")


@dataclass
class MetaDelivery:
    """What one signed delivery from Meta asks of us."""

    object: str
    leadgens: list[LeadgenReceived] = field(default_factory=list)
    # (object, field) -> number of changes we acknowledge without publishing
    ignored: dict[tuple[str, str], int] = field(default_factory=dict)


def leadgen_message_id(leadgen_id: str) -> uuid.UUID:
    return uuid.uuid5(LEADGEN_NAMESPACE, leadgen_id)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest("body is not valid JSON") from None


def _object_label(value: object) -> str:
    """A metric label for a webhook's `object`: one of Meta's webhook objects, else `other`."""
    return value if isinstance(value, str) and value in WEBHOOK_OBJECTS else "other"


def _label(value: object) -> str:
    """A metric label for a change's `field`: one of the webhook fields leadwire knows, else `other`."""
    return value if isinstance(value, str) and value in WEBHOOK_FIELDS else "other"


def parse_meta_delivery(raw: bytes) -> MetaDelivery:
    """Every `leadgen` change of every entry, validated; other changes are counted, not kept.

    Meta batches up to 1,000 changes across several entries (docs/meta-api.md §6.3); a parser that reads only the
    first change or the first entry loses leads (docs/prior-art.md §5, Activepieces). The whole delivery is validated
    before anything is published, so a malformed one is rejected as a whole.

    Raises:
        BadRequest: not JSON, or not shaped like a Meta webhook delivery (paths name the offending place).
    """
    body = _loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    obj = body.get("object")
    if not isinstance(obj, str) or not obj:
        raise BadRequest("`object` must be a non-empty string")
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise BadRequest("`entry` must be a list")
    delivery = MetaDelivery(object=obj)
    seen: set[str] = set()
    errors: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadRequest(f"entry[{i}] must be an object")
        changes = entry.get("changes", [])
        if not isinstance(changes, list):
            raise BadRequest(f"entry[{i}].changes must be a list")
        if not changes:
            # Messaging-style entries carry `messaging` instead of `changes`: acknowledged and counted.
            key = (_object_label(obj), "messaging" if "messaging" in entry else "none")
            delivery.ignored[key] = delivery.ignored.get(key, 0) + 1
        for j, change in enumerate(changes):
            where = f"entry[{i}].changes[{j}]"
            if not isinstance(change, dict) or not isinstance(change.get("field"), str):
                raise BadRequest(f"{where} must be an object with a string `field`")
            if obj != "page" or change["field"] != "leadgen":
                key = (_object_label(obj), _label(change["field"]))
                delivery.ignored[key] = delivery.ignored.get(key, 0) + 1
                continue
            lead = _leadgen(change.get("value"), entry.get("id"), where, errors)
            if lead is not None and lead.leadgen_id not in seen:
                seen.add(lead.leadgen_id)
                delivery.leadgens.append(lead)
    if errors:
        raise BadRequest("invalid leadgen change: " + "; ".join(errors[:MAX_REPORTED_ERRORS]))
    return delivery


def _leadgen(value: object, entry_id: object, where: str, errors: list[str]) -> LeadgenReceived | None:
    if not isinstance(value, dict):
        errors.append(f"{where}.value: must be an object")
        return None
    data = {k: value.get(k) for k in ("leadgen_id", "page_id", "form_id", "ad_id", "adgroup_id", "created_time")}
    if data["page_id"] is None:
        data["page_id"] = entry_id  # for the `page` object the entry id is the Page id
    if not _plausible_epoch(data["created_time"]):
        # Informational only (the lead fetcher's expiry check): a value no Unix time can be (milliseconds, 1e20,
        # text) is dropped rather than costing the delivery, and with it every lead in it, a 400.
        data["created_time"] = None
    data = {k: v for k, v in data.items() if v is not None}
    try:
        return LeadgenReceived(**data, source="webhook")
    except ValidationError as exc:
        errors.extend(f"{where}.value.{path}: {msg}" for path, msg in _error_items(exc))
        return None


def _plausible_epoch(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_UNIX_SECONDS


class _NonFinite(ValueError):
    """`NaN`, `Infinity` or `-Infinity` in a body: Python's JSON parser accepts them, JSON does not."""


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


def _error_items(exc: ValidationError) -> list[tuple[str, str]]:
    """(path, message) pairs without the input values, which may be PII."""
    return [
        (".".join(str(p) for p in err["loc"]) or "<root>", err["msg"])
        for err in exc.errors(include_input=False, include_url=False, include_context=False)
    ]


def parse_crm_events(raw: bytes) -> list[ConversionRequested]:
    """One `ConversionRequested` object or a list of them (at most `MAX_CRM_EVENTS`).

    Non-finite numbers (`NaN`, `Infinity`, `1e400`) and text no database or JSON document can hold (NUL, lone
    surrogates such as `"\\ud800"`) are invalid events like any other (422), not a failure later on.

    Raises:
        BadRequest: not JSON.
        Unprocessable: invalid events, with field paths and messages (never the values).
    """
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except _NonFinite:
        raise Unprocessable([{"path": "<root>", "message": "NaN and Infinity are not JSON numbers"}]) from None
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if isinstance(body, dict):
        items, prefix = [body], lambda _i: ""
    elif isinstance(body, list):
        if not body:
            raise Unprocessable([{"path": "<root>", "message": "the list of events is empty"}])
        if len(body) > MAX_CRM_EVENTS:
            raise Unprocessable(
                [{"path": "<root>", "message": f"at most {MAX_CRM_EVENTS} events per request"}]
            )
        items, prefix = body, lambda i: f"[{i}]."
    else:
        raise Unprocessable([{"path": "<root>", "message": "body must be an event object or a list of them"}])
    events: list[ConversionRequested] = []
    problems: list[dict[str, str]] = []
    escapes = b"\\u" in raw  # only \u escapes can spell NUL or a lone surrogate
    for i, item in enumerate(items):
        if escapes and (problem := unstorable(item)):
            path, _, message = problem.partition(": ")
            problems.append({"path": prefix(i) + path, "message": message})
            continue
        try:
            event = ConversionRequested.model_validate(item)
        except ValidationError as exc:
            problems.extend({"path": prefix(i) + path, "message": msg} for path, msg in _error_items(exc))
            continue
        if not event.user.model_dump(exclude_none=True):
            problems.append({"path": prefix(i) + "user", "message": "at least one customer identifier is required"})
            continue
        events.append(event)
    if problems:
        raise Unprocessable(problems[:MAX_REPORTED_ERRORS])
    return events


def without_clear_identifiers(event: ConversionRequested, *, default_country: str) -> ConversionRequested:
    """The event as the ingress publishes it: its event id fixed first (derived from the identifiers as the CRM sent
    them, so a retried webhook keeps its id), then every identifier Meta hashes replaced by its hash, so no e-mail,
    phone or name in clear travels on the broker (docs/meta-api.md §8.3)."""
    user, _ = hashed_identifiers(event.user, default_country=default_country)
    return event.model_copy(update={"event_id": event.resolved_event_id(), "user": user})


def conversion_message_id(event: ConversionRequested) -> uuid.UUID:
    """Same event (pixel, name, event id) → same message id, so a CRM's retried webhook is a duplicate."""
    return uuid.uuid5(
        CONVERSION_NAMESPACE, f"{event.pixel_id or ''}|{event.event_name}|{event.resolved_event_id()}"
    )
