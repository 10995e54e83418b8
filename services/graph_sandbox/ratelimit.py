"""Per-scope rolling-window rate limits, Meta's usage headers and the call log.

Scopes (names shared with the Graph client):
* ``app`` - every call;
* ``ad_account:act_<id>`` - calls on an ad account or on objects belonging to it;
* ``buc:<numeric account id or page id>:<type>`` - business use case, type one of ``ads_management``,
  ``ads_insights``, ``custom_audience``, ``leadgen``, ``pages``.

A call is admitted (counted against every scope it touches) or rejected as a whole. A rejection blocks the
offending scope until the rolling window has freed enough room; calls made while blocked are rejected too and
recorded as ``throttled`` (they do not consume budget).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import GraphError

BUC_TYPES = ("ads_management", "ads_insights", "custom_audience", "leadgen", "pages")

# (code, subcode, message) per scope kind - docs/meta-api.md §2.5.
_THROTTLE: dict[str, tuple[int, int | None, str]] = {
    "app": (4, None, "(#4) Application request limit reached"),
    "ad_account": (17, 2446079, "(#17) User request limit reached"),
    "ads_management": (
        80004,
        2446079,
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again. For more info, "
        "please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting#ads-management.",
    ),
    "ads_insights": (
        80000,
        2446079,
        "(#80000) There have been too many calls from this ad-account. Wait a bit and try again. For more "
        "info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
    ),
    "custom_audience": (
        80003,
        2446079,
        "(#80003) There have been too many calls for this ad-account. Wait a bit and try again. For more "
        "info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
    ),
    "leadgen": (
        80005,
        None,
        "(#80005) There have been too many leadgen api calls to this Page. Wait a bit and try again. For more "
        "info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
    ),
    "pages": (
        80001,
        None,
        "(#80001) There have been too many calls to this Page account. Wait a bit and try again. For more "
        "info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
    ),
}

REGAIN_HEADER = "X-Sandbox-Regain-Seconds"


@dataclass
class Limit:
    budget: int = 100_000
    window_seconds: float = 3600.0


def _default_buc() -> dict[str, Limit]:
    return {t: Limit() for t in BUC_TYPES}


@dataclass
class Limits:
    """Budgets per scope kind; defaults are generous so ordinary tests never throttle."""

    app: Limit = field(default_factory=Limit)
    ad_account: Limit = field(default_factory=Limit)
    buc: dict[str, Limit] = field(default_factory=_default_buc)
    budget_changes_per_hour: int = 4
    budget_change_window_seconds: float = 3600.0
    access_tier: str = "standard_access"
    # The X-Sandbox-Regain-Seconds hint (exact seconds, which Meta never sends). False: only Meta's own headers
    # speak, `estimated_time_to_regain_access` in whole minutes, as a client in production sees them.
    regain_header: bool = True

    def update(self, patch: dict[str, Any]) -> None:
        """Apply a partial `/_sandbox/limits` body."""
        for kind in ("app", "ad_account"):
            if kind in patch:
                _patch_limit(getattr(self, kind), patch[kind])
        for buc_type, value in (patch.get("buc") or {}).items():
            if buc_type not in BUC_TYPES:
                raise ValueError(f"unknown buc type {buc_type!r}")
            _patch_limit(self.buc[buc_type], value)
        for key in ("budget_changes_per_hour", "budget_change_window_seconds", "access_tier", "regain_header"):
            if key in patch:
                setattr(self, key, type(getattr(self, key))(patch[key]))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _patch_limit(limit: Limit, value: dict[str, Any]) -> None:
    if "budget" in value:
        limit.budget = max(0, int(value["budget"]))
    if "window_seconds" in value:
        limit.window_seconds = max(0.001, float(value["window_seconds"]))


def scope_kind(scope: str) -> str:
    """`app`, `ad_account` or the BUC type of a scope string."""
    if scope == "app":
        return "app"
    if scope.startswith("ad_account:"):
        return "ad_account"
    return scope.rsplit(":", 1)[-1]


def _priority(scope: str) -> int:
    # BUC wins over the other limiters when both apply (docs/meta-api.md §2.1).
    kind = scope_kind(scope)
    return 0 if kind in BUC_TYPES else (1 if kind == "ad_account" else 2)


class RateLimiter:
    """Rolling-window counters per scope."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def reset(self) -> None:
        self._calls.clear()
        self._blocked_until.clear()

    def limit_for(self, scope: str) -> Limit:
        kind = scope_kind(scope)
        if kind == "app":
            return self.limits.app
        if kind == "ad_account":
            return self.limits.ad_account
        return self.limits.buc[kind]

    def _window(self, scope: str, now: float) -> deque[float]:
        dq = self._calls.setdefault(scope, deque())
        horizon = now - self.limit_for(scope).window_seconds
        while dq and dq[0] <= horizon:
            dq.popleft()
        return dq

    def regain_seconds(self, scope: str, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        return max(0.0, self._blocked_until.get(scope, 0.0) - now)

    def admit(self, scopes: Iterable[str]) -> None:
        """Count one call against every scope, or raise the throttle error of the first blocked scope."""
        now = self._clock()
        ordered = sorted(set(scopes), key=_priority)
        for scope in ordered:
            if self._blocked_until.get(scope, 0.0) > now:
                raise self._throttle(scope, now)
        for scope in ordered:
            dq = self._window(scope, now)
            budget = self.limit_for(scope).budget
            if len(dq) + 1 > budget:
                window = self.limit_for(scope).window_seconds
                free_at = dq[len(dq) - budget] + window if budget > 0 and dq else now + window
                self._blocked_until[scope] = max(free_at, now + 0.001)
                raise self._throttle(scope, now)
        for scope in ordered:
            self._calls[scope].append(now)

    def _throttle(self, scope: str, now: float) -> GraphError:
        code, subcode, message = _THROTTLE[scope_kind(scope)]
        regain = self.regain_seconds(scope, now)
        return GraphError(
            message,
            code=code,
            subcode=subcode,
            is_transient=True,
            extra_headers={REGAIN_HEADER: f"{regain:.3f}"} if self.limits.regain_header else {},
        )

    def pct(self, scope: str, now: float) -> float:
        budget = self.limit_for(scope).budget
        used = len(self._window(scope, now))
        pct = 100.0 if budget <= 0 else used * 100.0 / budget
        if self._blocked_until.get(scope, 0.0) > now:
            pct = max(pct, 100.0)
        return pct

    def headers(self, scopes: Iterable[str]) -> dict[str, str]:
        """Meta's usage headers (JSON strings) for a call touching `scopes`."""
        now = self._clock()
        scopes = set(scopes) | {"app"}
        out: dict[str, str] = {}
        app_pct = self.pct("app", now)
        out["X-App-Usage"] = json.dumps(
            {"call_count": int(app_pct), "total_time": int(app_pct * 0.6), "total_cputime": int(app_pct * 0.4)}
        )
        tier = self.limits.access_tier
        for scope in scopes:
            if scope_kind(scope) == "ad_account":
                regain = self.regain_seconds(scope, now)
                dq = self._window(scope, now)
                reset = regain if regain > 0 else (dq[-1] + self.limit_for(scope).window_seconds - now if dq else 0)
                out["X-Ad-Account-Usage"] = json.dumps(
                    {
                        "acc_id_util_pct": round(self.pct(scope, now), 2),
                        "reset_time_duration": math.ceil(reset),
                        "ads_api_access_tier": tier,
                    }
                )
        buc: dict[str, list[dict[str, Any]]] = {}
        for scope in sorted(s for s in scopes if s.startswith("buc:")):
            _, obj_id, buc_type = scope.split(":", 2)
            pct = self.pct(scope, now)
            entry: dict[str, Any] = {
                "type": buc_type,
                "call_count": int(pct),
                "total_cputime": int(pct * 0.4),
                "total_time": int(pct * 0.6),
                "estimated_time_to_regain_access": math.ceil(self.regain_seconds(scope, now) / 60.0),
            }
            if buc_type in ("ads_management", "ads_insights"):
                entry["ads_api_access_tier"] = tier
            buc.setdefault(obj_id, []).append(entry)
            if buc_type == "ads_insights":
                out["X-FB-Ads-Insights-Throttle"] = json.dumps(
                    {
                        "app_id_util_pct": round(app_pct, 2),
                        "acc_id_util_pct": round(pct, 2),
                        "ads_api_access_tier": tier,
                    }
                )
        if buc:
            out["X-Business-Use-Case-Usage"] = json.dumps(buc)
        regains = [self.regain_seconds(s, now) for s in scopes]
        if any(r > 0 for r in regains) and self.limits.regain_header:
            out[REGAIN_HEADER] = f"{max(regains):.3f}"
        return out


class CallLog:
    """What the sandbox was asked, for `/_sandbox/calls` (last `keep` requests in detail)."""

    def __init__(self, keep: int = 20_000) -> None:
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        self.total = 0
        self.throttled = 0
        self.by_scope: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.keep)

    def record(
        self, *, method: str, path: str, scopes: list[str], status: int, throttled: bool, batch: bool = False
    ) -> None:
        self.total += 1
        if throttled:
            self.throttled += 1
        for scope in scopes:
            self.by_scope[scope] += 1
        self.by_path[f"{method} /{path}"] += 1
        self.requests.append(
            {
                "t": time.time(),
                "method": method,
                "path": "/" + path,
                "scopes": scopes,
                "status": status,
                "throttled": throttled,
                "batch": batch,
            }
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "throttled": self.throttled,
            "by_scope": dict(self.by_scope),
            "by_path": dict(self.by_path),
            "requests": list(self.requests),
        }
