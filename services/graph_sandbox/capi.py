"""Conversions API: `POST /<pixel_id>/events` with Meta's whole-request validation (docs/meta-api.md §8)."""

from __future__ import annotations

import json
import re
from typing import Any

from .core import GraphRequest, Sandbox, json_param
from .errors import GraphError, new_fbtrace_id
from .state import Node

MAX_EVENTS = 1000
MAX_AGE_SECONDS = 7 * 86400
FUTURE_SLACK_SECONDS = 60
ACTION_SOURCES = (
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
)
HASHED_KEYS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# An event whose user_data keys are only a subset of one of these is rejected (docs/meta-api.md §8.2, S31).
INVALID_COMBOS = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)


def _fail(index: int, title: str, detail: str, subcode: int | None = None) -> GraphError:
    return GraphError(
        f"(#100) Invalid parameter: event {index}: {detail}",
        code=100,
        subcode=subcode,
        user_title=title,
        user_msg=f"Event {index}: {detail}",
        error_data={"event_index": index},
    )


def _validate(index: int, event: Any, now: float) -> None:
    if not isinstance(event, dict):
        raise _fail(index, "Invalid event", "each event must be a JSON object")
    for key in ("event_name", "event_time", "action_source", "user_data"):
        if event.get(key) in (None, "", {}):
            raise _fail(index, f"Missing {key}", f"the parameter {key} is required")
    try:
        event_time = int(event["event_time"])
    except (TypeError, ValueError):
        raise _fail(index, "Invalid event_time", "event_time must be a Unix timestamp in seconds") from None
    if event_time < now - MAX_AGE_SECONDS:
        raise _fail(
            index,
            "Event Timestamp Too Old",
            "The timestamp for this event is too far in the past. Events need to be sent from your server within "
            "7 days of when they occurred.",
            subcode=2804003,
        )
    if event_time > now + FUTURE_SLACK_SECONDS:
        raise _fail(index, "Event Timestamp In Future", "event_time can't be in the future", subcode=2804004)
    source = event["action_source"]
    if source not in ACTION_SOURCES:
        raise _fail(index, "Invalid action_source", f"action_source must be one of {', '.join(ACTION_SOURCES)}")
    user_data = event["user_data"]
    if not isinstance(user_data, dict):
        raise _fail(index, "Invalid user_data", "user_data must be an object")
    present = {k for k, v in user_data.items() if v not in (None, "", [])}
    for key in HASHED_KEYS:
        if key not in present:
            continue
        values = user_data[key] if isinstance(user_data[key], list) else [user_data[key]]
        if not all(isinstance(v, str) and _SHA256.match(v) for v in values):
            raise _fail(
                index,
                "Invalid hashed value",
                f"user_data.{key} must be a lowercase SHA-256 hex digest (or a list of them)",
            )
    if "lead_id" in present and not re.fullmatch(r"\d{15,17}", str(user_data["lead_id"])):
        raise _fail(index, "Invalid lead_id", "user_data.lead_id must be a 15-17 digit Meta lead id")
    if not present:
        raise _fail(index, "Missing user_data", "user_data must contain at least one customer parameter")
    if any(present <= combo for combo in INVALID_COMBOS):
        raise _fail(
            index,
            "Insufficient customer information",
            f"user_data with only {', '.join(sorted(present))} can't be matched; add em, ph, "
            "external_id, fbc, fbp or client_ip_address",
        )
    if source == "website":
        if not event.get("event_source_url"):
            raise _fail(index, "Missing event_source_url", "website events require event_source_url")
        if not user_data.get("client_user_agent"):
            raise _fail(index, "Missing client_user_agent", "website events require user_data.client_user_agent")


async def post_events(sb: Sandbox, req: GraphRequest, pixel: Node | None) -> dict[str, Any]:
    assert pixel is not None
    data = json_param(req.params, "data")
    if not isinstance(data, list) or not data:
        raise GraphError(
            "(#100) The parameter data is required", code=100, error_data={"blame_field_specs": [["data"]]}
        )
    if len(data) > MAX_EVENTS:
        raise GraphError(
            f"(#100) Too many events: at most {MAX_EVENTS} events per request",
            code=100,
            user_title="Too many events",
            user_msg=f"Send at most {MAX_EVENTS} events per request.",
        )
    events: list[Any] = []
    for item in data:
        if isinstance(item, str):  # the official SDK sends each event as a JSON string
            try:
                item = json.loads(item)
            except json.JSONDecodeError:
                item = None
        events.append(item)
    now = sb.state.now()
    for index, event in enumerate(events):
        _validate(index, event, now)  # one invalid event rejects the whole request
    sb.state.capi_requests[pixel.id] += 1
    test_code = req.params.get("test_event_code")
    for event in events:
        sb.state.capi_events.append(
            {
                "pixel_id": pixel.id,
                "received_at": now,
                "test_event_code": test_code,
                "event": event,
            }
        )
    return {"events_received": len(events), "messages": [], "fbtrace_id": new_fbtrace_id()}
