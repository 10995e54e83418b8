"""The one Graph API client every service uses.

- Explicit version in every URL; token in the `Authorization` header (never in a URL); `appsecret_proof` per token.
- Usage headers read on every response (errors and batch items included) into per-scope state (`usage.py`);
  calls slow down as a scope nears its limit and make no call in a blocked scope until it regains access.
- Typed errors (`errors.py`); transient failures retried with exponential backoff and full jitter; auth errors never.
- `max_wait`: when staying inside Meta's limits would mean waiting longer, raise `ThrottledError(retry_after=...)`
  so a queue consumer can turn it into a delayed retry instead of holding a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from shared.graph.errors import (
    KIND_ACTION,
    KIND_AD_ACCOUNT,
    KIND_APP,
    KIND_BUC,
    KIND_INSIGHTS,
    KIND_PAGE,
    KIND_USER,
    AuthError,
    GraphConnectionError,
    GraphError,
    ThrottledError,
    TransientError,
    action_lockout_seconds,
    classify_error,
)
from shared.graph.metrics import GraphMetrics, endpoint_template
from shared.graph.usage import (
    APP,
    INSIGHTS_APP,
    Priority,
    Scope,
    UsageReading,
    UsageTracker,
    account_in_path,
    accounts_in_buc_header,
    ad_account_key,
    buc_key,
    budget_edit_key,
    infer_buc_type,
    parse_sandbox_regain,
    parse_usage_headers,
    path_object,
    resolve_scopes,
)

if TYPE_CHECKING:
    from shared.graph.batch import BatchRequest, BatchResult
    from shared.settings import MetaSettings

logger = logging.getLogger(__name__)
# Names leadwire's calls in Meta's logs (and lets the Graph sandbox audit exactly leadwire's calls).
USER_AGENT = "leadwire-graph/1"

Token = SecretStr | str | None


class _Default:
    """Sentinel for a per-call `max_wait`: use the client's default."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
_SAFE_NETWORK_ERRORS = (aiohttp.ClientConnectorError,)  # nothing was sent: safe to retry any method


def appsecret_proof(app_secret: str, token: str) -> str:
    """HMAC-SHA256(key=app_secret, msg=token), hex (docs/meta-api.md §5). Bound to the exact token string."""
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def encode_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Graph parameters as strings: lists/dicts JSON-encoded, booleans lower-case, None dropped."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (dict, list, tuple)):
            out[key] = json.dumps(value, separators=(",", ":"))
        else:
            out[key] = str(value)
    return out


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: Any  # decoded JSON, or None when the body was not JSON


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retries.

    Args:
        max_attempts: total attempts for transient/network failures (1 = no retry).
        max_throttle_retries: how many throttle errors one call may receive before giving up.
        backoff_base / backoff_cap: full-jitter backoff: sleep U(0, min(cap, base * 2**n)).
        throttle_fallback_seconds: block length when a throttle error comes with no usable regain time;
            doubles per consecutive throttle in the same call, capped at `throttle_fallback_cap`.
    """

    max_attempts: int = 4
    max_throttle_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    throttle_fallback_seconds: float = 60.0
    throttle_fallback_cap: float = 900.0


class GraphClient:
    """Rate-limit-aware Graph API client.

    Args:
        session: the process's shared `aiohttp.ClientSession` (created in the service lifespan).
        settings: `MetaSettings` (token, app secret, version, base URL, slowdown threshold, timeout).
        max_wait: default longest wait (seconds) the client accepts before a call; beyond it the call raises
            `ThrottledError(retry_after=...)`. None = wait as long as needed. Overridable per call.
        retry: retry bounds.
        registry: Prometheus registry (default: the global one); metrics are created once per registry.
        usage_windows: rolling window length per scope kind, over `usage.DEFAULT_WINDOWS` (Meta's documented
            windows); tests set them to the sandbox's short windows.
        clock / sleep / rng: injectable for tests.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: MetaSettings,
        *,
        max_wait: float | None = 300.0,
        retry: RetryPolicy | None = None,
        registry: CollectorRegistry | None = None,
        usage_windows: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._base = settings.graph_base
        self._version = settings.api_version
        self._default_token = settings.access_token
        self._app_secret = settings.app_secret
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        self.max_wait = max_wait
        self.retry = retry or RetryPolicy()
        self.usage = UsageTracker(
            threshold=settings.usage_slowdown_threshold,
            windows=dict(usage_windows or {}),
            clock=clock,
            probe_interval=settings.usage_probe_seconds,
        )
        self.metrics = GraphMetrics.for_registry(registry)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        # Random per-client key so a `user:<hash>` scope name reveals nothing about the token.
        self._scope_salt = secrets.token_bytes(16)

    def __repr__(self) -> str:
        return f"GraphClient(base={self._base!r}, version={self._version!r})"

    @property
    def api_version(self) -> str:
        return self._version

    # -- public API --------------------------------------------------------------------------------------------

    async def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        token: Token = None,
        scope: Scope | None = None,
        max_wait: float | _Default | None = DEFAULT,
    ) -> dict[str, Any]:
        """GET a node or edge. `path` is relative to the version, e.g. `act_1/campaigns` or `<lead-id>`."""
        return await self.request("GET", path, params=params, token=token, scope=scope, max_wait=max_wait)

    async def post(
        self,
        path: str,
        data: Mapping[str, Any] | None = None,
        *,
        token: Token = None,
        scope: Scope | None = None,
        max_wait: float | _Default | None = DEFAULT,
        idempotent: bool = False,
        json_body: bool = False,
    ) -> dict[str, Any]:
        """POST form data (or, with `json_body`, a JSON object). Network errors after sending are retried only
        when `idempotent=True`."""
        return await self.request(
            "POST", path, data=data, token=token, scope=scope, max_wait=max_wait, idempotent=idempotent,
            json_body=json_body,
        )

    async def delete(
        self,
        path: str,
        *,
        token: Token = None,
        scope: Scope | None = None,
        max_wait: float | _Default | None = DEFAULT,
    ) -> dict[str, Any]:
        return await self.request("DELETE", path, token=token, scope=scope, max_wait=max_wait, idempotent=True)

    def paginate(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        token: Token = None,
        scope: Scope | None = None,
        max_wait: float | _Default | None = DEFAULT,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a cursor-paginated edge; follows `paging.next` until it is absent."""
        from shared.graph.paging import paginate

        return paginate(self, path, params, token=token, scope=scope, max_wait=max_wait)

    async def batch(
        self,
        requests: Sequence[BatchRequest],
        *,
        token: Token = None,
        max_wait: float | _Default | None = DEFAULT,
    ) -> list[BatchResult]:
        """Run requests through the Batch API (50 per call); one result per request, in order."""
        from shared.graph.batch import execute_batch

        return await execute_batch(self, requests, token=token, max_wait=max_wait)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        token: Token = None,
        scope: Scope | None = None,
        max_wait: float | _Default | None = DEFAULT,
        idempotent: bool | None = None,
        form_token: bool = False,
        paced: bool = True,
        json_body: bool = False,
    ) -> dict[str, Any]:
        """One logical Graph call with pacing, blocks, retries and typed errors.

        Args:
            form_token: also send the token as `access_token` in the form body (the Batch API requires it).
            json_body: send `data` as a JSON object instead of a form. For big structured bodies (CAPI's 1,000
                events): form-encoding hundreds of kilobytes of JSON text costs more CPU than building it.
            paced: False when the caller already waited and counted the call (batch).
        """
        method = method.upper()
        path = self.strip_version(path)
        token_value = self.token_value(token)
        limit = self.resolve_max_wait(max_wait)
        if idempotent is None:
            idempotent = method in ("GET", "DELETE")
        scopes = self.scopes_for(method, path, scope, token_value)
        priority = scope.priority if scope is not None else Priority.NORMAL
        failures = 0  # transient and network failures so far (throttles are bounded separately)
        throttles = 0
        while True:
            network_error: Exception | None = None
            async with self.paced(scopes, limit, priority) if paced else contextlib.nullcontext():
                try:
                    raw = await self.send(
                        method, path, params=params, data=data, token_value=token_value, form_token=form_token,
                        json_body=json_body,
                    )
                except _NETWORK_ERRORS as exc:
                    network_error = exc
            if network_error is not None:
                self.metrics.calls.labels(endpoint_template(path), method, "network_error").inc()
                failures += 1
                retryable = idempotent or isinstance(network_error, _SAFE_NETWORK_ERRORS)
                if not retryable or failures >= self.retry.max_attempts:
                    raise GraphConnectionError(
                        f"{type(network_error).__name__} calling {method} {endpoint_template(path)}"
                    ) from None
                delay = self.backoff(failures)
                logger.warning(
                    "graph %s %s network error %s; retry %s in %.2fs",
                    method, endpoint_template(path), type(network_error).__name__, failures, delay,
                )
                self.metrics.retries.labels("network").inc()
                await self._sleep(delay)
                continue
            # After `paced` has counted the call as completed, so the reading is matched with it.
            self.observe_headers(raw.headers, path, scope)
            error = self.error_from(raw)
            self.metrics.calls.labels(endpoint_template(path), method, _outcome(error)).inc()
            if error is None:
                self.learn(path, scope, raw.headers)
                return _as_dict(raw.body)
            if isinstance(error, ThrottledError):
                throttles += 1
                self.record_throttle(error, method, path, scope, raw.headers, token_value, throttles)
                if throttles > self.retry.max_throttle_retries:
                    raise error
                if limit is not None and (error.retry_after or 0.0) > limit:
                    raise error  # the caller re-queues; holding a worker for the block is worse
                self.metrics.retries.labels("throttled").inc()
                continue  # the next `paced` waits out the block, or raises if it exceeds max_wait
            if isinstance(error, TransientError) and failures + 1 < self.retry.max_attempts:
                failures += 1
                delay = self.backoff(failures)
                logger.warning(
                    "graph %s %s transient error code=%s subcode=%s fbtrace_id=%s; retry %s in %.2fs",
                    method, endpoint_template(path), error.code, error.subcode, error.fbtrace_id,
                    failures, delay,
                )
                self.metrics.retries.labels("transient").inc()
                await self._sleep(delay)
                continue
            if isinstance(error, AuthError):
                logger.error(
                    "graph %s %s auth error code=%s subcode=%s fbtrace_id=%s (not retried)",
                    method, endpoint_template(path), error.code, error.subcode, error.fbtrace_id,
                )
            raise error

    # -- building blocks (shared with batch, paging and insights_jobs) -------------------------------------------

    def token_value(self, token: Token) -> str:
        if token is None:
            token = self._default_token
        return token.get_secret_value() if isinstance(token, SecretStr) else str(token)

    def proof_for(self, token_value: str) -> str | None:
        secret = self._app_secret.get_secret_value()
        if not secret or not token_value:
            return None
        return appsecret_proof(secret, token_value)

    def user_scope(self, token_value: str) -> str | None:
        if not token_value:
            return None
        digest = hmac.new(self._scope_salt, token_value.encode(), hashlib.sha256).hexdigest()[:12]
        return f"user:{digest}"

    def scopes_for(self, method: str, path: str, scope: Scope | None, token_value: str) -> list[str]:
        return resolve_scopes(method, path, scope, self.usage, user_scope=self.user_scope(token_value))

    def resolve_max_wait(self, max_wait: float | _Default | None) -> float | None:
        """Per-call `max_wait`: DEFAULT = the client's, None = no limit, a number = that many seconds."""
        if isinstance(max_wait, _Default):
            return self.max_wait
        return None if max_wait is None else float(max_wait)

    def strip_version(self, path: str) -> str:
        path = path.strip("/")
        head, _, rest = path.partition("/")
        if head.startswith("v") and head[1:].replace(".", "").isdigit() and "." in head:
            return rest
        return path

    def url(self, path: str) -> str:
        return f"{self._base}/{self._version}/{path.strip('/')}"

    async def sleep_backoff_fixed(self, seconds: float) -> None:
        """Sleep through the client's (injectable) sleep, e.g. between report-run polls."""
        await self._sleep(seconds)

    async def sleep_backoff(self, attempt: int) -> None:
        await self._sleep(self.backoff(attempt))

    def backoff(self, attempt: int) -> float:
        """Full jitter: U(0, min(cap, base * 2**(attempt-1)))."""
        ceiling = min(self.retry.backoff_cap, self.retry.backoff_base * (2 ** max(0, attempt - 1)))
        return self._rng.uniform(0.0, ceiling)

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        token_value: str,
        form_token: bool = False,
        json_body: bool = False,
    ) -> RawResponse:
        """One HTTP round trip. The token goes in the Authorization header (and, for the Batch API, which
        requires it, in the form body); never in the URL."""
        headers = {"User-Agent": USER_AGENT}
        if token_value:
            headers["Authorization"] = f"OAuth {token_value}"
        proof = self.proof_for(token_value)
        query = encode_params(params)
        has_body = method in ("POST", "PUT")
        form = encode_params(data) if has_body and not json_body else None
        payload = {k: v for k, v in (data or {}).items() if v is not None} if has_body and json_body else None
        body = form if form is not None else payload
        if proof:
            if body is not None:
                body["appsecret_proof"] = proof
            else:
                query["appsecret_proof"] = proof
        if body is not None and form_token and token_value:
            body["access_token"] = token_value
        started = self._clock()
        endpoint = endpoint_template(path)
        try:
            async with self._session.request(
                method,
                self.url(path),
                params=query or None,
                data=form,
                json=payload,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                text = await response.text()
                status = response.status
                resp_headers = dict(response.headers)
        finally:
            self.metrics.call_seconds.labels(endpoint).observe(max(0.0, self._clock() - started))
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        logger.debug("graph %s %s -> %s", method, endpoint, status)
        return RawResponse(status, resp_headers, body)

    def error_from(self, raw: RawResponse) -> GraphError | None:
        body = raw.body
        if raw.status < 400 and not (isinstance(body, Mapping) and isinstance(body.get("error"), Mapping)):
            if body is None:
                return TransientError(f"unparseable response body (HTTP {raw.status})", http_status=raw.status)
            return None
        return classify_error(body, http_status=raw.status)

    def account_for(self, path: str, scope: Scope | None, headers: Mapping[str, str] | None = None) -> str | None:
        if scope is not None and scope.account:
            return scope.account
        account = account_in_path(path) or self.usage.account_of(path_object(path))
        if account is None and headers is not None:
            accounts = accounts_in_buc_header(headers)
            if len(accounts) == 1:
                account = next(iter(accounts))
        return account

    def observe_headers(self, headers: Mapping[str, str], path: str, scope: Scope | None) -> list[UsageReading]:
        """Feed one response's (or batch item's) usage headers into the per-scope state."""
        readings = parse_usage_headers(headers, self.account_for(path, scope, headers))
        regain = parse_sandbox_regain(headers)
        for reading in readings:
            self.usage.observe(reading, regain_override=regain)
            self.metrics.usage.labels(_scope_label(reading.scope)).set(reading.pct)
        return readings

    def learn(self, path: str, scope: Scope | None, headers: Mapping[str, str]) -> None:
        head = path_object(path)
        if head is None:
            return
        account = scope.account if scope is not None and scope.account else None
        if account is None and account_in_path(path) is None:
            accounts = accounts_in_buc_header(headers)
            if len(accounts) == 1:
                account = next(iter(accounts))
        if account:
            self.usage.learn_account(head, account)

    def throttle_scope(
        self,
        error: ThrottledError,
        method: str,
        path: str,
        scope: Scope | None,
        headers: Mapping[str, str],
        token_value: str,
    ) -> str:
        """The concrete scope key a throttle error blocks."""
        head = path_object(path) or ""
        account = self.account_for(path, scope, headers)
        page = scope.page if scope is not None else None
        if error.kind == KIND_APP:
            return APP
        if error.kind == KIND_INSIGHTS:
            return INSIGHTS_APP
        if error.kind == KIND_USER:
            return self.user_scope(token_value) or APP
        if error.kind == KIND_PAGE:
            return f"page:{page}" if page else (self.user_scope(token_value) or f"object:{head}")
        if error.kind == KIND_AD_ACCOUNT:
            return ad_account_key(account) if account else f"object:{head}"
        if error.kind == KIND_ACTION:
            if (error.code, error.subcode) == (613, 1487632):
                # Meta blocks budget changes on the ad set, not its other edits: a pause must still go through.
                return budget_edit_key(path)
            return f"action:{method} /{path.strip('/')}"
        if error.kind == KIND_BUC:
            buc_type = error.buc_type or (scope.buc_type if scope is not None else None) or infer_buc_type(path)
            # Prefer the id Meta's own header names for this type (blocked first, then the busiest).
            candidates = [
                r for r in parse_usage_headers(headers, account) if r.scope.endswith(f":{buc_type}")
                and r.scope.startswith("buc:")
            ]
            if candidates:
                best = max(candidates, key=lambda r: (r.regain_seconds or 0.0, r.pct))
                return best.scope
            owner = account or page or head
            return buc_key(owner, buc_type)
        return APP

    def record_throttle(
        self,
        error: ThrottledError,
        method: str,
        path: str,
        scope: Scope | None,
        headers: Mapping[str, str],
        token_value: str,
        consecutive: int,
    ) -> None:
        """Block the throttled scope for its regain time and fill in `error.scope` / `error.retry_after`."""
        key = self.throttle_scope(error, method, path, scope, headers, token_value)
        seconds = self.regain_seconds(error, key, path, scope, headers, consecutive)
        until = self.usage.block(key, seconds, reason=f"code {error.code}/{error.subcode}")
        error.scope = key
        error.retry_after = max(0.0, until - self._clock())
        self.metrics.throttled.labels(_scope_label(key)).inc()
        logger.warning(
            "graph %s %s throttled: scope=%s code=%s subcode=%s fbtrace_id=%s; no calls in scope for %.1fs",
            method, endpoint_template(path), key, error.code, error.subcode, error.fbtrace_id, error.retry_after,
        )

    def regain_seconds(
        self,
        error: ThrottledError,
        key: str,
        path: str,
        scope: Scope | None,
        headers: Mapping[str, str],
        consecutive: int,
    ) -> float:
        sandbox = parse_sandbox_regain(headers)
        if sandbox is not None and sandbox > 0:
            return sandbox
        for reading in parse_usage_headers(headers, self.account_for(path, scope, headers)):
            if reading.scope == key:
                if reading.regain_seconds:
                    return reading.regain_seconds
                if reading.reset_seconds:
                    return reading.reset_seconds
        existing = self.usage.states.get(key)
        if existing is not None and existing.blocked_until > self._clock():
            return existing.blocked_until - self._clock()
        lockout = action_lockout_seconds(error.code, error.subcode)
        if lockout is not None:
            return lockout
        # Meta gave no time: a guess, so never longer than a probe interval (then one call asks again).
        fallback = self.retry.throttle_fallback_seconds * (2.0 ** max(0, consecutive - 1))
        return min(self.retry.throttle_fallback_cap, self.usage.probe_interval, fallback)

    @contextlib.asynccontextmanager
    async def paced(
        self, scopes: Sequence[str], max_wait: float | None, priority: Priority = Priority.NORMAL
    ) -> AsyncIterator[None]:
        """Wait until every scope may take one more call, count the call as in flight, then let it run.

        The final check and the in-flight count happen without an await in between, so concurrent callers
        each see the calls the others just started. Raises ThrottledError when the wait would exceed `max_wait`.
        """
        await self.wait_scopes(scopes, max_wait, priority)
        self.usage.on_send(scopes)
        try:
            yield
        finally:
            self.usage.on_complete(scopes)

    def check_wait(
        self, scopes: Sequence[str], max_wait: float | None, priority: Priority = Priority.NORMAL
    ) -> float:
        wait = self.usage.wait_for(scopes, priority)
        if max_wait is not None and wait.seconds > max_wait:
            kind = _kind_of(wait.scope)
            raise ThrottledError(
                f"scope {wait.scope} {'is blocked' if wait.blocked else 'is near its limit'}: waiting "
                f"{wait.seconds:.1f}s exceeds max_wait {max_wait:.1f}s",
                kind=kind,
                scope=wait.scope,
                retry_after=wait.seconds,
            )
        return wait.seconds

    async def wait_scopes(
        self, scopes: Sequence[str], max_wait: float | None, priority: Priority = Priority.NORMAL
    ) -> float:
        """Sleep until no scope requires a wait; returns the seconds waited. A waiting lead read is counted in its
        scopes, so that calls of lower priority let it go first."""
        waited = 0.0
        registered = False
        try:
            while True:
                self.check_wait(scopes, max_wait, priority)
                wait = self.usage.wait_for(scopes, priority)
                if wait.seconds <= 0:
                    return waited
                if priority >= Priority.LEADS and not registered:
                    self.usage.leads_waiting(scopes, +1)
                    registered = True
                reason = "blocked" if wait.blocked else "pacing"
                if wait.blocked:
                    logger.info("graph scope %s blocked; waiting %.2fs", wait.scope, wait.seconds)
                self.metrics.throttle_wait.labels(_scope_label(wait.scope or APP), reason).inc(wait.seconds)
                await self._sleep(wait.seconds)
                waited += wait.seconds
        finally:
            if registered:
                self.usage.leads_waiting(scopes, -1)


def _as_dict(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    return {"success": body} if isinstance(body, bool) else {"data": body}


def _outcome(error: GraphError | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, ThrottledError):
        return "throttled"
    if isinstance(error, AuthError):
        return "auth_error"
    if isinstance(error, TransientError):
        return "transient_error"
    return "error"


def _kind_of(scope: str | None) -> str:
    if not scope or scope == APP:
        return KIND_APP
    prefix = scope.split(":", 1)[0]
    return {
        "ad_account": KIND_AD_ACCOUNT,
        "buc": KIND_BUC,
        "insights": KIND_INSIGHTS,
        "user": KIND_USER,
        "page": KIND_PAGE,
        "action": KIND_ACTION,
        "object": KIND_AD_ACCOUNT,
    }.get(prefix, KIND_APP)


def _scope_label(scope: str) -> str:
    """Metric label for a scope: per-object/action scopes collapse to templates to bound cardinality."""
    if scope.startswith("action:"):
        method, _, path = scope.removeprefix("action:").partition(" ")
        return f"action:{method} {endpoint_template(path)}"
    if scope.startswith("object:"):
        return "object"
    if scope.startswith("user:"):
        return "user"
    return scope


__all__ = ["DEFAULT", "GraphClient", "RawResponse", "RetryPolicy", "appsecret_proof"]
