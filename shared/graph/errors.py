"""Typed Graph API errors and the one function that classifies Meta's error object.

Callers branch on these types, never on message strings. Meta sends throttles as HTTP 400 with a JSON
`error.code` (docs/meta-api.md §2.5), so classification is by code/subcode, not by HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# BUC error codes → business-use-case type (docs/meta-api.md §2.5).
BUC_CODE_TYPES: dict[int, str] = {
    80000: "ads_insights",
    80001: "pages",
    80002: "instagram",
    80003: "custom_audience",
    80004: "ads_management",
    80005: "leadgen",
    80006: "messenger",
    80008: "whatsapp_business_management",
    80009: "catalog_management",
    80014: "catalog_batch",
}

# Throttle kinds. The client maps a kind to a concrete scope key (e.g. `ad_account:act_1`).
KIND_APP = "app"
KIND_USER = "user"
KIND_PAGE = "page"
KIND_AD_ACCOUNT = "ad_account"
KIND_BUC = "buc"
KIND_INSIGHTS = "insights"
# Action-specific limits: they block one kind of write on one object, not the whole account.
KIND_ACTION = "action"

_AUTH_CODES = {190, 102, 104}  # 104: access token missing / bad signature
_PERMISSION_CODES = {3, 10} | set(range(200, 300))
_INVALID_CODES = {100, 105, 194, 2635, 3018, 2650}
# (code, subcode) pairs that mean "the query is too big / too slow": shrink it, do not blind-retry
# (docs/meta-api.md §4.2, §9.5).
_TOO_MUCH_DATA = {(100, 1487534), (100, 1504018), (2, 1504038)}
_TRANSIENT_CODES = {1, 2, -2}
# Action-specific throttles and their typical lockout in seconds (docs/meta-api.md §2.3).
_ACTION_THROTTLES: dict[tuple[int, int], float] = {
    (613, 1487632): 3600.0,  # ad set budget changed > 4x/hour: budget edits blocked for 1 h
    (17, 1885172): 86400.0,  # spend-cap changes > 10/day
    (613, 5044001): 1.0,  # > 100 mutation QPS per (app, ad account)
    (613, 1487225): 3600.0,  # ad-creation limit
}


class GraphError(Exception):
    """An error answered by the Graph API (or a failure talking to it).

    `str()` carries code, subcode, fbtrace_id and Meta's message; never a token (Meta does not echo tokens in
    error messages, and the client never puts one in a URL).
    """

    def __init__(
        self,
        message: str = "",
        *,
        code: int | None = None,
        subcode: int | None = None,
        type: str | None = None,
        fbtrace_id: str | None = None,
        user_title: str | None = None,
        user_message: str | None = None,
        is_transient: bool = False,
        error_data: Any = None,
        http_status: int | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.subcode = subcode
        self.type = type
        self.fbtrace_id = fbtrace_id
        self.user_title = user_title
        self.user_message = user_message
        self.is_transient = is_transient
        self.error_data = error_data
        self.http_status = http_status
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"code={self.code}"]
        if self.subcode is not None:
            parts.append(f"subcode={self.subcode}")
        if self.type:
            parts.append(f"type={self.type}")
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        parts.append(f"fbtrace_id={self.fbtrace_id}")
        text = f"{type(self).__name__}({', '.join(parts)}): {self.message}"
        if self.user_message:
            text += f" [{self.user_message}]"
        return text

    def __str__(self) -> str:
        return self._describe()

    def __repr__(self) -> str:
        return f"<{self._describe()}>"

    @property
    def blame_field_specs(self) -> list[Any] | None:
        data = self.error_data
        if isinstance(data, Mapping):
            specs = data.get("blame_field_specs")
            return list(specs) if isinstance(specs, list) else None
        return None


class TransientError(GraphError):
    """Server-side or network trouble: retry with backoff."""


class GraphConnectionError(TransientError):
    """The request did not get an HTTP answer (connection error or timeout)."""


class ThrottledError(GraphError):
    """A rate limit was hit, or the client would have to wait longer than allowed to avoid one.

    Attributes:
        kind: which limiter (`app`, `user`, `page`, `ad_account`, `buc`, `insights`, `action`).
        scope: the concrete scope key when known (`app`, `ad_account:act_1`, `buc:1:ads_insights`, ...).
        buc_type: for BUC throttles, the business-use-case type (`ads_insights`, `leadgen`, ...).
        retry_after: seconds to wait before calling in this scope again (None = unknown).
    """

    def __init__(
        self,
        message: str = "",
        *,
        kind: str = KIND_APP,
        scope: str | None = None,
        buc_type: str | None = None,
        retry_after: float | None = None,
        **fields: Any,
    ) -> None:
        self.kind = kind
        self.scope = scope
        self.buc_type = buc_type
        self.retry_after = retry_after
        super().__init__(message, **fields)

    def _describe(self) -> str:
        text = super()._describe()
        extra = f" scope={self.scope or self.kind}"
        if self.retry_after is not None:
            extra += f" retry_after={self.retry_after:.1f}s"
        return text + extra


class AuthError(GraphError):
    """Token expired, revoked, invalid or missing (190 + subcodes, 102, 104). Never retried."""


class PermissionDeniedError(GraphError):
    """Missing permission or capability (10, 200-299, 3). Not retryable."""


class PolicyBlockedError(GraphError):
    """Temporarily blocked for policy reasons (368): long cooldown and an alert, not a retry loop."""


class InvalidRequestError(GraphError):
    """The request is wrong (100 and friends). Fix it; do not retry."""


class NotFoundError(InvalidRequestError):
    """The object does not exist or cannot be loaded (100/33, 803)."""


class TooMuchDataError(InvalidRequestError):
    """Too much data or a sync timeout: shrink the query or go async (100/1487534, 100/1504018, 2/1504038)."""


class AsyncJobFailedError(GraphError):
    """An async report run ended in `Job Failed` (v25+ carries error_code/error_subcode/error_message)."""

    def __init__(self, message: str = "", *, report_run_id: str | None = None, **fields: Any) -> None:
        self.report_run_id = report_run_id
        super().__init__(message, **fields)


class AsyncJobSkippedError(GraphError):
    """An async report run ended in `Job Skipped` (expired/skipped): resubmit it."""

    def __init__(self, message: str = "", *, report_run_id: str | None = None, **fields: Any) -> None:
        self.report_run_id = report_run_id
        super().__init__(message, **fields)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error_data(value: Any) -> Any:
    # `error_data` may arrive as a JSON string (docs/meta-api.md §4.1).
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def throttle_kind(code: int | None, subcode: int | None) -> tuple[str, str | None] | None:
    """Return (kind, buc_type) when (code, subcode) is a rate limit, else None."""
    if code is None:
        return None
    if code in BUC_CODE_TYPES:
        return KIND_BUC, BUC_CODE_TYPES[code]
    if 80000 <= code <= 80014:
        return KIND_BUC, None
    if (code, subcode) in _ACTION_THROTTLES:
        return KIND_ACTION, None
    if code == 4:
        if subcode in (1504022, 1504039):
            return KIND_INSIGHTS, None
        return KIND_APP, None
    if code == 17:
        return (KIND_AD_ACCOUNT, None) if subcode == 2446079 else (KIND_USER, None)
    if code == 613:
        return (KIND_AD_ACCOUNT, None) if subcode == 1487742 else (KIND_APP, None)
    if code == 341:
        return KIND_APP, None
    if code == 32:
        return KIND_PAGE, None
    return None


def action_lockout_seconds(code: int | None, subcode: int | None) -> float | None:
    """Typical lockout for an action-specific throttle (ad set budget, spend cap, ...)."""
    if code is None or subcode is None:
        return None
    return _ACTION_THROTTLES.get((code, subcode))


def classify_error(payload: Any, *, http_status: int | None = None) -> GraphError:
    """Turn Meta's error body (`{"error": {...}}` or the inner object) into a typed exception.

    Args:
        payload: the decoded response body, or the inner `error` object, or anything else (lenient).
        http_status: the HTTP status, used only when the body carries no usable error code.
    """
    err: Mapping[str, Any] = {}
    if isinstance(payload, Mapping):
        inner = payload.get("error")
        err = inner if isinstance(inner, Mapping) else payload
    code = _int(err.get("code"))
    subcode = _int(err.get("error_subcode"))
    message = str(err.get("message") or "")
    fields: dict[str, Any] = {
        "code": code,
        "subcode": subcode,
        "type": err.get("type") if isinstance(err.get("type"), str) else None,
        "fbtrace_id": err.get("fbtrace_id") if isinstance(err.get("fbtrace_id"), str) else None,
        "user_title": err.get("error_user_title") if isinstance(err.get("error_user_title"), str) else None,
        "user_message": err.get("error_user_msg") if isinstance(err.get("error_user_msg"), str) else None,
        "is_transient": err.get("is_transient") is True,
        "error_data": _error_data(err.get("error_data")),
        "http_status": http_status,
    }

    if code is None:
        if http_status is not None and (http_status >= 500 or http_status == 429):
            if http_status == 429:
                return ThrottledError(message or "HTTP 429", kind=KIND_APP, **fields)
            return TransientError(message or f"HTTP {http_status}", **fields)
        if http_status in (401,):
            return AuthError(message or "HTTP 401", **fields)
        if http_status in (403,):
            return PermissionDeniedError(message or "HTTP 403", **fields)
        if http_status == 404:
            return NotFoundError(message or "HTTP 404", **fields)
        return GraphError(message or f"unrecognised error (HTTP {http_status})", **fields)

    throttle = throttle_kind(code, subcode)
    if throttle is not None:
        kind, buc_type = throttle
        return ThrottledError(message, kind=kind, buc_type=buc_type, **fields)
    if (code, subcode) in _TOO_MUCH_DATA:
        return TooMuchDataError(message, **fields)
    if code in _AUTH_CODES:
        return AuthError(message, **fields)
    if code == 368:
        return PolicyBlockedError(message, **fields)
    if code in _PERMISSION_CODES:
        return PermissionDeniedError(message, **fields)
    if (code == 100 and subcode == 33) or code == 803:
        return NotFoundError(message, **fields)
    if code == 1 and "reduce the amount of data" in message.lower():
        # Meta's own wording is the only signal for this one (docs/meta-api.md §4.2); everything else goes by code.
        return TooMuchDataError(message, **fields)
    if code in _TRANSIENT_CODES or fields["is_transient"]:
        return TransientError(message, **fields)
    if code in _INVALID_CODES:
        return InvalidRequestError(message, **fields)
    if http_status is not None and http_status >= 500:
        return TransientError(message, **fields)
    return GraphError(message, **fields)
