"""The request pipeline shared by plain HTTP calls and batch items.

version check -> auth -> route -> faults -> rate limits -> handler -> usage headers -> call log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from . import schema
from .clock import Clock, parse_now
from .config import SandboxConfig
from .errors import (
    GraphError,
    bad_appsecret_proof,
    invalid_param,
    token_expired,
    token_missing,
    unversioned_call,
)
from .permissions import Need
from .ratelimit import CallLog, Limits, RateLimiter
from .state import MAIN_ACCOUNT_TZ, Node, SandboxState

logger = logging.getLogger(__name__)

VERSION_RE = re.compile(r"^v\d+\.\d+$")


@dataclass
class GraphRequest:
    """One Graph call, from HTTP or from a batch item."""

    method: str
    path: str  # without leading slash and version, e.g. "act_1/campaigns"
    version: str | None
    params: dict[str, Any]
    token: str | None
    base_url: str
    in_batch: bool = False
    agent: str = ""  # the caller's User-Agent


@dataclass
class GraphResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # fault: the connection should hang then close


@dataclass
class Faults:
    """Fault injection (`POST /_sandbox/faults`); all off by default."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error: dict[str, Any] = field(
        default_factory=lambda: {
            "message": "An unexpected error has occurred. Please retry your request later.",
            "type": "OAuthException",
            "code": 2,
            "is_transient": True,
        }
    )
    error_status: int = 500
    timeout_rate: float = 0.0
    hang_seconds: float = 120.0
    token_expired: bool = False
    path_regex: str | None = None
    batch_null_rate: float = 0.0
    empty_page_rate: float = 0.0

    def update(self, patch: dict[str, Any]) -> None:
        for key, value in patch.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown fault {key!r}")
            if key == "path_regex" and value is not None:
                re.compile(value)
            if key == "error" and value is not None:
                merged = dict(Faults().error)
                merged.update(value)
                value = merged
            setattr(self, key, value)

    def applies(self, path: str) -> bool:
        return self.path_regex is None or re.search(self.path_regex, "/" + path) is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InsightsKnobs:
    """Insights behaviour (`POST /_sandbox/insights`)."""

    sync_row_limit: int = 5000
    polls_to_complete: int = 4
    job_fail: bool = False
    job_skip: bool = False
    max_campaigns_per_job: int | None = None

    def update(self, patch: dict[str, Any]) -> None:
        for key, value in patch.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown insights knob {key!r}")
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AudienceKnobs:
    """Custom audiences (`POST /_sandbox/audiences`): like Meta, a membership change shows in
    `approximate_count_*` only after `count_delay_seconds` (Meta: hours; 0 = at once)."""

    count_delay_seconds: float = 3600.0

    def update(self, patch: dict[str, Any]) -> None:
        for key, value in patch.items():
            if key != "count_delay_seconds":
                raise ValueError(f"unknown audiences knob {key!r}")
            self.count_delay_seconds = max(0.0, float(value))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MARKETING_FAMILIES = frozenset({"ads_management", "ads_insights", "custom_audience"})
VERSION_WARNING = "X-Ad-Api-Version-Warning"


def version_key(version: str) -> tuple[int, int]:
    major, _, minor = version.removeprefix("v").partition(".")
    return int(major), int(minor or 0)


@dataclass
class Versions:
    """Supported Marketing API versions (`POST /_sandbox/versions`); defaults per Meta's schedule, 2026-12-03.

    A Marketing API call (ad objects, insights, audiences) on a version older than `oldest` fails with #2635,
    or, with `auto_upgrade`, is answered as `oldest` with Meta's `X-Ad-Api-Version-Warning` header. Graph API
    calls (Pages, leads, CAPI, debug_token) live two years per version and fall forward silently.
    """

    latest: str = "v26.0"
    oldest: str = "v25.0"
    auto_upgrade: bool = False

    def update(self, patch: dict[str, Any]) -> None:
        for key, value in patch.items():
            if key not in ("latest", "oldest", "auto_upgrade"):
                raise ValueError(f"unknown versions setting {key!r}")
            if key != "auto_upgrade" and not VERSION_RE.match(str(value)):
                raise ValueError(f"{key} must look like v26.0")
            setattr(self, key, bool(value) if key == "auto_upgrade" else str(value))
        if version_key(self.oldest) > version_key(self.latest):
            raise ValueError("oldest must not be newer than latest")

    def check(self, version: str | None, family: str) -> dict[str, str]:
        """Headers to add, or GraphError for a retired Marketing API version."""
        if version is None or family not in MARKETING_FAMILIES or version_key(version) >= version_key(self.oldest):
            return {}
        if self.auto_upgrade:
            return {
                VERSION_WARNING: f"The call was made to version {version} which is deprecated. It has been "
                f"automatically upgraded to {self.oldest}."
            }
        raise unversioned_call(self.latest)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Signatures:
    """What each caller asked of the schema: per User-Agent, method, node type and edge, the fields it read
    and the param names it sent (never values). Kept across `/_sandbox/reset` so a test session can check every
    call a client made against Meta's declarations (`GET /_sandbox/calls/signatures`)."""

    def __init__(self) -> None:
        self._seen: Counter[tuple[str, str, str, str, tuple[str, ...], tuple[str, ...]]] = Counter()

    def record(self, req: GraphRequest, route: Route) -> None:
        node = route.node
        node_type = schema.SDK_CLASS.get(node.kind, node.kind) if node is not None else ""
        fields: tuple[str, ...] = ()
        try:
            fields = tuple(sorted({schema.base_field(f) for f in list_param(req.params, "fields") or []}))
        except ValueError:
            fields = ("<unparseable>",)
        params = tuple(sorted(k for k in req.params if k not in schema.TRANSPORT_PARAMS))
        self._seen[(req.agent, req.method, node_type, route.edge or "", fields, params)] += 1

    def as_list(self, agent_prefix: str = "") -> list[dict[str, Any]]:
        return [
            {"agent": a, "method": m, "node_type": n, "edge": e, "fields": list(f), "params": list(p), "count": c}
            for (a, m, n, e, f, p), c in sorted(self._seen.items())
            if a.startswith(agent_prefix)
        ]


Handler = Callable[["Sandbox", GraphRequest, Node | None], Awaitable[Any]]


@dataclass
class Route:
    handler: Handler
    scopes: list[str]
    node: Node | None
    edge: str | None = None
    family: str = "app"  # BUC type, "capi" or "app": which API (Marketing or Graph) the call belongs to
    need: Need | None = None  # the permissions the token must hold (permissions.py)


class Sandbox:
    """All mutable sandbox state for one app instance (stored under an AppKey, never global)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.calls = CallLog(config.call_log_size)
        self.signatures = Signatures()
        self.limits = Limits()
        self.limiter = RateLimiter(self.limits)
        self.faults = Faults()
        self.insights = InsightsKnobs()
        self.audiences = AudienceKnobs()
        self.versions = Versions(latest=config.latest_version, oldest=config.oldest_version)
        self.clock = Clock()
        self.set_clock(config.now)
        self.state = SandboxState(config.seed, config.ads, config.days, config.app_id, clock=self.clock)
        self.fault_rng = random.Random(config.seed)
        self.release_hangs = asyncio.Event()
        self.webhooks: Any = None  # set by webhooks.WebhookManager on startup
        self.resolve: Callable[[Sandbox, GraphRequest], Route] | None = None

    def set_clock(self, now: str | None, *, frozen: bool = False) -> None:
        """`now` as `parse_now` reads it, in the main account's time zone; None = the machine's time."""
        self.clock.set(None if now is None else parse_now(now, ZoneInfo(MAIN_ACCOUNT_TZ)), frozen=frozen)

    def reset(
        self, seed: int | None = None, ads: int | None = None, days: int | None = None, now: str | None = None
    ) -> None:
        """Everything back to its start-up state, the clock included (to `now` when given)."""
        seed = self.config.seed if seed is None else seed
        self.set_clock(now if now is not None else self.config.now)
        self.state = SandboxState(
            seed, ads or self.config.ads, days or self.config.days, self.config.app_id, clock=self.clock
        )
        self.limits = Limits()
        self.limiter = RateLimiter(self.limits)
        self.faults = Faults()
        self.insights = InsightsKnobs()
        self.audiences = AudienceKnobs()
        self.versions = Versions(latest=self.config.latest_version, oldest=self.config.oldest_version)
        self.calls.reset()
        self.fault_rng = random.Random(seed)
        # Let hanging (timeout-fault) requests finish so nothing leaks into the next test.
        self.release_hangs.set()
        self.release_hangs = asyncio.Event()

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.fault_rng.random() < rate


def appsecret_proof(app_secret: str, token: str) -> str:
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def _check_auth(sb: Sandbox, req: GraphRequest) -> None:
    if not req.token:
        raise token_missing()
    # debug_token stays usable (as with an app token) so callers can find out *why* calls fail.
    if sb.faults.token_expired and req.path != "debug_token":
        raise token_expired()
    proof = req.params.get("appsecret_proof")
    if proof is not None:
        expected = appsecret_proof(sb.config.app_secret, req.token)
        if not hmac.compare_digest(str(proof), expected):
            raise bad_appsecret_proof()


async def execute(sb: Sandbox, req: GraphRequest) -> GraphResponse:
    """Run one Graph call through the whole pipeline; never raises GraphError."""
    scopes = ["app"]
    throttled = False
    extra: dict[str, str] = {}
    try:
        if req.version is None and req.path not in ("debug_token",):
            raise unversioned_call(sb.versions.latest)
        _check_auth(sb, req)
        assert sb.resolve is not None
        route = sb.resolve(sb, req)
        scopes = route.scopes
        sb.signatures.record(req, route)
        extra.update(sb.versions.check(req.version, route.family))
        faults = sb.faults
        if faults.applies(req.path):
            if faults.latency_ms > 0:
                await asyncio.sleep(faults.latency_ms / 1000.0)
            if sb.roll(faults.timeout_rate):
                sb.calls.record(
                    method=req.method, path=req.path, scopes=scopes, status=0, throttled=False, batch=req.in_batch
                )
                return GraphResponse(0, None, hang=True)
            if sb.roll(faults.error_rate):
                raise GraphError.from_object(faults.error, status=faults.error_status)
        try:
            sb.limiter.admit(scopes)
        except GraphError:
            throttled = True
            raise
        if route.need is not None:  # like Meta, a refused call still counts against the limits
            route.need.check(sb.state.token["scopes"])
        if route.node is not None:  # like any validation error, a refused call still counts against the limits
            schema.check_params(route.node.kind, req.method, route.edge, req.params)
        body = await route.handler(sb, req, route.node)
        status = 200
    except GraphError as err:
        body = err.body()
        status = err.status
        extra.update(err.extra_headers)
    except (ValueError, TypeError, KeyError) as exc:
        # Malformed parameters that slipped past a handler's own validation.
        err = invalid_param(f"Invalid parameter: {exc}")
        body = err.body()
        status = err.status
    headers = sb.limiter.headers(scopes)
    headers.update(extra)
    trace = body.get("fbtrace_id") if isinstance(body, dict) else None
    if isinstance(body, dict) and "error" in body:
        trace = body["error"]["fbtrace_id"]
    if trace:
        headers["x-fb-trace-id"] = trace
    sb.calls.record(
        method=req.method, path=req.path, scopes=scopes, status=status, throttled=throttled, batch=req.in_batch
    )
    return GraphResponse(status, body, headers)


# ---------------------------------------------------------------------- parameter helpers


def json_param(params: dict[str, Any], name: str, default: Any = None) -> Any:
    """A parameter that Meta accepts as JSON text in a form field or as a JSON value in a JSON body."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise invalid_param(f"Param {name} must be a valid JSON value", blame=[name]) from exc
    return value


def list_param(params: dict[str, Any], name: str) -> list[str] | None:
    """`fields=a,b` or `fields=["a","b"]`."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        return [str(v) for v in json.loads(text)]
    return [part.strip() for part in text.split(",") if part.strip()]


def int_param(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(str(value))
    except ValueError as exc:
        raise invalid_param(f"Param {name} must be an integer", blame=[name]) from exc


def bool_param(params: dict[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise invalid_param(f"Param {name} must be a boolean", blame=[name])


# ---------------------------------------------------------------------- cursor paging


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sbx:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(value: str) -> int:
    try:
        padded = value + "=" * (-len(value) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
        if not text.startswith("sbx:"):
            raise ValueError(text)
        return int(text[4:])
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_param("Invalid cursor", blame=["after"]) from exc


def page_url(req: GraphRequest, **override: str) -> str:
    params = {k: v for k, v in req.params.items() if k not in ("after", "before", "batch", "include_headers")}
    params = {k: (v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))) for k, v in params.items()}
    params.update(override)
    if req.token and "access_token" not in params:
        params["access_token"] = req.token
    version = f"/{req.version}" if req.version else ""
    return f"{req.base_url}{version}/{req.path}?{urlencode(params)}"


def paginate(
    sb: Sandbox, req: GraphRequest, items: list[Any], default_limit: int = 25, max_limit: int = 5000
) -> dict[str, Any]:
    """Meta cursor paging: `paging.next` only when more data exists; optional empty pages (fault)."""
    limit = int_param(req.params, "limit", default_limit) or default_limit
    limit = max(1, min(limit, max_limit))
    if req.params.get("before"):
        end = _decode_cursor(str(req.params["before"]))
        start = max(0, end - limit)
    else:
        start = _decode_cursor(str(req.params["after"])) if req.params.get("after") else 0
        end = start + limit
    start = min(start, len(items))
    end = min(end, len(items))
    if end > start and end < len(items) and sb.faults.applies(req.path) and sb.roll(sb.faults.empty_page_rate):
        # Meta documents empty pages that still carry `next` (docs/meta-api.md §9.5): no progress this time.
        return {
            "data": [],
            "paging": {
                "cursors": {"before": _cursor(start), "after": _cursor(start)},
                "next": page_url(req, after=_cursor(start)),
            },
        }
    out: dict[str, Any] = {"data": items[start:end]}
    if end > start or start > 0:
        paging: dict[str, Any] = {"cursors": {"before": _cursor(start), "after": _cursor(end)}}
        if end < len(items):
            paging["next"] = page_url(req, after=_cursor(end))
        if start > 0:
            paging["previous"] = page_url(req, before=_cursor(start))
        out["paging"] = paging
    return out
