"""Customer-file custom audiences (BUC `custom_audience`, docs/meta-api.md §12)."""

from __future__ import annotations

import re
from typing import Any

from .core import GraphRequest, Sandbox, json_param, list_param, paginate
from .errors import GraphError, invalid_param, missing_param
from .objects import render
from .schema import node_type
from .state import Node

MAX_ROWS = 10_000
MIN_SEED_SIZE = 100  # matched people in one country, for a lookalike's seed (docs/meta-api.md §12.4)
MULTI_KEYS = (
    "EXTERN_ID",
    "EMAIL",
    "PHONE",
    "GEN",
    "DOBY",
    "DOBM",
    "DOBD",
    "LN",
    "FN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "MADID",
    "COUNTRY",
)
SINGLE_KEYS = (
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "MOBILE_ADVERTISER_ID",
    "EXTERN_ID",
    "EMAIL",
    "PHONE",
    "PAGE_SCOPED_USER_ID",
    "UID",
)
UNHASHED = ("EXTERN_ID", "MADID", "MOBILE_ADVERTISER_ID", "PAGE_SCOPED_USER_ID", "UID")
# The subtypes the sandbox simulates (Meta's SDK lists more).
SUBTYPES = ("CUSTOM", "LOOKALIKE", "WEBSITE", "ENGAGEMENT", "APP", "OFFLINE_CONVERSION")
FILE_SOURCES = tuple(sorted(node_type("CustomAudience").enums["CustomerFileSource"]))
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


async def list_audiences(sb: Sandbox, req: GraphRequest, account: Node | None) -> dict[str, Any]:
    assert account is not None
    fields = list_param(req.params, "fields")
    nodes = sorted(sb.state.of_kind("customaudience", account=account.id), key=lambda n: int(n.id), reverse=True)
    return paginate(sb, req, [render(sb, n, fields) for n in nodes])


async def create_audience(sb: Sandbox, req: GraphRequest, account: Node | None) -> dict[str, Any]:
    assert account is not None
    p = req.params
    if not p.get("name"):
        raise missing_param("name")
    subtype = str(p.get("subtype") or "CUSTOM")
    if subtype not in SUBTYPES:
        raise invalid_param(f"Param subtype must be one of {{{', '.join(SUBTYPES)}}}", blame=["subtype"])
    source = p.get("customer_file_source")
    if subtype == "CUSTOM":
        if not source:
            raise missing_param("customer_file_source")
        if source not in FILE_SOURCES:
            raise invalid_param(
                f"Param customer_file_source must be one of {{{', '.join(FILE_SOURCES)}}}",
                blame=["customer_file_source"],
            )
    if subtype == "LOOKALIKE":
        origin = sb.state.get(str(p.get("origin_audience_id") or ""))
        if origin is None or origin.kind != "customaudience":
            raise invalid_param("Param origin_audience_id must be a custom audience", blame=["origin_audience_id"])
        spec = json_param(p, "lookalike_spec")
        if not spec:
            raise missing_param("lookalike_spec")
        _check_lookalike(sb, origin, spec)
    node = sb.state.add(
        Node(
            sb.state.new_id(),
            "customaudience",
            {
                "name": str(p["name"]),
                "subtype": subtype,
                "description": p.get("description"),
                "customer_file_source": source,
                "time_created": int(sb.state.now()),
                "operation_status": {"code": 200, "description": "Normal"},
                "delivery_status": {"code": 200, "description": "This audience is ready for use."},
                **({"origin_audience_id": str(p["origin_audience_id"]),
                    "lookalike_spec": json_param(p, "lookalike_spec")} if subtype == "LOOKALIKE" else {}),
            },
            account=account.id,
            extra={"members": set(), "sessions": {}},
        )
    )
    return {"id": node.id}


def _check_lookalike(sb: Sandbox, origin: Node, spec: Any) -> None:
    """Meta's lookalike rules (docs/meta-api.md §12.4): a similarity/reach type or a ratio 0.01-0.20 in steps of
    0.01, a country or location_spec, and a seed of at least MIN_SEED_SIZE matched people in one country."""
    if not isinstance(spec, dict):
        raise invalid_param("Param lookalike_spec must be a JSON object", blame=["lookalike_spec"])
    if "ratio" in spec:
        try:
            ratio = float(spec["ratio"])
        except (TypeError, ValueError):
            raise invalid_param("lookalike_spec.ratio must be a number", blame=["lookalike_spec"]) from None
        if not 0.01 <= ratio <= 0.20 or abs(round(ratio * 100) - ratio * 100) > 1e-6:
            raise invalid_param("lookalike_spec.ratio must be between 0.01 and 0.20 in steps of 0.01",
                                blame=["lookalike_spec"])
    elif spec.get("type") not in ("similarity", "reach"):
        raise invalid_param("lookalike_spec needs a ratio or a type (similarity, reach)", blame=["lookalike_spec"])
    location = spec.get("location_spec") if isinstance(spec.get("location_spec"), dict) else {}
    geo = location.get("geo_locations") if isinstance(location.get("geo_locations"), dict) else {}
    if not spec.get("country") and not geo.get("countries") and not geo.get("country_groups"):
        raise invalid_param("lookalike_spec needs a country or location_spec.geo_locations", blame=["lookalike_spec"])
    if origin.fields.get("subtype") == "LOOKALIKE":
        raise invalid_param("A lookalike audience cannot be the seed of another lookalike",
                            blame=["origin_audience_id"])
    # Meta matches the seed asynchronously: what counts is the size it shows (approximate_count), not the rows sent.
    if visible_count(sb, origin) < MIN_SEED_SIZE:
        raise GraphError(
            "(#2654) The source audience is too small: a lookalike needs a seed of at least "
            f"{MIN_SEED_SIZE} people from one country",
            code=2654, subcode=1713007, user_title="Source audience too small",
            user_msg=f"Your source audience must have at least {MIN_SEED_SIZE} people from a single country.",
        )


def visible_count(sb: Sandbox, audience: Node) -> int:
    """The size Meta reports now: the newest membership change older than the count delay."""
    due = sb.state.now() - sb.audiences.count_delay_seconds
    count = 0
    for applied_at, size in audience.extra.get("counts", []):
        if applied_at <= due:
            count = size
    return count


def _parse_payload(params: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    payload = json_param(params, "payload")
    if not isinstance(payload, dict):
        raise missing_param("payload")
    schema = payload.get("schema")
    if isinstance(schema, str):
        schema_list = [schema]
        if schema not in SINGLE_KEYS:
            raise invalid_param(f"Invalid schema {schema}", blame=["payload"])
    elif isinstance(schema, list) and schema:
        schema_list = [str(s) for s in schema]
        bad = [s for s in schema_list if s not in MULTI_KEYS]
        if bad:
            raise invalid_param(f"Invalid schema field {bad[0]}; allowed: {', '.join(MULTI_KEYS)}", blame=["payload"])
    else:
        raise invalid_param("payload.schema is required", blame=["payload"])
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise invalid_param("payload.data must be a non-empty array", blame=["payload"])
    if len(data) > MAX_ROWS:
        raise GraphError(
            f"(#100) Too many users in one request: at most {MAX_ROWS} rows per call",
            code=100,
            user_title="Too many users",
            user_msg=f"Upload at most {MAX_ROWS} rows per request.",
        )
    rows: list[list[Any]] = []
    for row in data:
        row_list = row if isinstance(row, list) else [row]
        if len(row_list) != len(schema_list):
            raise invalid_param("Each payload.data row must have one value per schema field", blame=["payload"])
        rows.append(row_list)
    return schema_list, rows


def _apply(sb: Sandbox, req: GraphRequest, audience: Node, mode: str) -> dict[str, Any]:
    if audience.fields.get("subtype") != "CUSTOM":
        raise invalid_param("Users can only be added to customer-file custom audiences")
    schema, rows = _parse_payload(req.params)
    session = json_param(req.params, "session") or {}
    if mode == "replace" and not session:
        raise missing_param("session")
    session_id = int(session.get("session_id") or sb.state.rng.randint(10**9, 10**12))
    batch_seq = int(session.get("batch_seq") or 1)
    sessions: dict[int, dict[str, Any]] = audience.extra.setdefault("sessions", {})
    state = sessions.setdefault(session_id, {"num_received": 0, "num_invalid": 0, "schema": schema, "last_seq": 0,
                                             "closed": False, "mode": mode})
    if state["schema"] != schema:
        raise invalid_param("A session must keep the same schema for all batches", blame=["payload"])
    if session:
        # Batches of a session come in order (1, 2, ...) and nothing is accepted after the last one.
        if state["closed"]:
            raise invalid_param(f"Session {session_id} has ended (its last batch was received)", blame=["session"])
        if batch_seq != state["last_seq"] + 1:
            raise invalid_param(f"session.batch_seq must be {state['last_seq'] + 1} for session {session_id}",
                                blame=["session"])
        if state["mode"] != mode:
            raise invalid_param(f"Session {session_id} belongs to another operation", blame=["session"])
        state["last_seq"] = batch_seq
        state["closed"] = bool(session.get("last_batch_flag"))
    members: set[tuple[Any, ...]] = audience.extra.setdefault("members", set())
    if mode == "replace" and batch_seq == 1 and state["num_received"] == 0:
        members.clear()
    invalid = 0
    samples: dict[str, str] = {}
    for row in rows:
        ok = True
        usable = False  # a row without any identifier can't be matched: Meta counts it invalid
        for key, value in zip(schema, row, strict=True):
            key_base = key.removesuffix("_SHA256")
            if value in ("", None):
                continue
            if key_base in UNHASHED or key in UNHASHED:
                usable = True
                continue
            if not (isinstance(value, str) and _SHA256.match(value)):
                ok = False
                if len(samples) < 100:
                    samples[str(value)[:64]] = f"{key} value is not a SHA-256 hex digest"
            else:
                usable = True
        ok = ok and usable
        if ok:
            if mode == "remove":
                members.discard(tuple(row))
            else:
                members.add(tuple(row))
        else:
            invalid += 1
    state["num_received"] += len(rows)
    state["num_invalid"] += invalid
    # The new size shows in approximate_count_* only after the configured delay (see visible_count).
    audience.extra.setdefault("counts", []).append((sb.state.now(), len(members)))
    return {
        "audience_id": audience.id,
        "session_id": session_id,
        "num_received": state["num_received"],
        "num_invalid_entries": state["num_invalid"],
        "invalid_entry_samples": samples,
    }


async def add_users(sb: Sandbox, req: GraphRequest, audience: Node | None) -> dict[str, Any]:
    assert audience is not None
    return _apply(sb, req, audience, "add")


async def remove_users(sb: Sandbox, req: GraphRequest, audience: Node | None) -> dict[str, Any]:
    assert audience is not None
    return _apply(sb, req, audience, "remove")


async def replace_users(sb: Sandbox, req: GraphRequest, audience: Node | None) -> dict[str, Any]:
    assert audience is not None
    return _apply(sb, req, audience, "replace")
