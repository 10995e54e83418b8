"""Rate-limit state: parse Meta's usage headers, keep per-scope state, decide how long to wait.

Scopes are strings: `app`, `ad_account:act_<id>`, `buc:<id>:<type>` (the same names the Graph sandbox uses),
plus `insights:app` / `insights:act_<id>` (X-FB-Ads-Insights-Throttle), `user:<hash>`, `page:<id>`,
`object:<id>` (an ad-account throttle on an object whose account is unknown) and `action:<method> <path>`
(action-specific limits such as the 4-per-hour ad set budget edits).

Calls carry a priority (`Priority`): lead reads go first. Within a scope near its limit, background calls
(backfill, health checks) stop at `BACKGROUND_CEILING` % of the budget, leaving the rest to lead reads, and wait
while a lead read waits in the same scope.

Probes: the pacer projects Meta's last usage figure with its own call log over Meta's documented window (24 h for
the leadgen BUC). That projection can say "wait many hours" while Meta's usage has long dropped (others' calls left
the window, the quota grew with the Page's leads); Meta only tells by answering a call. So no scope is held longer
than `probe_interval` on the pacer's own projection: then one call (the probe) goes, its usage headers replace the
projection's basis, and every other call in the scope waits for that answer. Blocks (Meta said: throttled, regain
in N minutes) are kept for Meta's time; a block whose length Meta did not give is capped by the client at the
same interval.

Everything here is plain logic with an injected clock; the client does the awaiting.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

logger = logging.getLogger(__name__)

APP = "app"
INSIGHTS_APP = "insights:app"

APP_USAGE_HEADER = "X-App-Usage"
AD_ACCOUNT_USAGE_HEADER = "X-Ad-Account-Usage"
BUC_USAGE_HEADER = "X-Business-Use-Case-Usage"
INSIGHTS_THROTTLE_HEADER = "X-FB-Ads-Insights-Throttle"
# Test hook: the Graph sandbox sends the exact regain time in seconds in this header, because its windows are a
# few seconds long while Meta's own headers count minutes. Meta never sends it; when present it wins over Meta's
# headers for the scope(s) the response throttled (or reports as blocked).
SANDBOX_REGAIN_HEADER = "X-Sandbox-Regain-Seconds"

_ACT_RE = re.compile(r"^act_(\d+)$")


class Priority(IntEnum):
    """Who goes first within a scope: lead reads, then everything else, then background work."""

    BACKGROUND = 0  # backfill scans, health checks: they can wait minutes without anyone noticing
    NORMAL = 1
    LEADS = 2  # reading a lead someone is waiting for


# Background calls treat this share of a scope's budget as its whole: the rest stays for lead reads.
BACKGROUND_CEILING = 90.0
# Longest a scope is held on the pacer's own projection (or a block whose length Meta did not say) before one call
# probes it for fresh usage headers ("a few minutes"; META_USAGE_PROBE_SECONDS).
DEFAULT_PROBE_SECONDS = 180.0


def ad_account_key(act_id: str) -> str:
    return f"ad_account:{normalise_act_id(act_id)}"


def buc_key(object_id: str, buc_type: str) -> str:
    return f"buc:{object_id.removeprefix('act_')}:{buc_type}"


def budget_edit_key(object_id: str) -> str:
    """The scope Meta's "too many budget changes on this ad set" (613/1487632) blocks: budget writes to the object
    only. A budget write declares it (`Scope.key(budget_edit_key(id))`); other writes (a pause) stay free."""
    return f"action:budget /{object_id.strip('/')}"


def normalise_act_id(act_id: str) -> str:
    act_id = str(act_id)
    return act_id if act_id.startswith("act_") else f"act_{act_id}"


@dataclass(frozen=True)
class Scope:
    """What a call touches, declared by the caller when the path alone does not say.

    Examples: `Scope.ad_account("act_1")` for a campaign or ad set id, `Scope.leadgen(page_id)` for lead reads,
    `Scope.page(page_id)` for Pages API calls, `Scope.key("buc:1:ads_insights")` for anything else.
    """

    account: str | None = None
    page: str | None = None
    buc_type: str | None = None
    keys: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL

    @classmethod
    def ad_account(cls, act_id: str, buc_type: str | None = None) -> Scope:
        return cls(account=normalise_act_id(act_id), buc_type=buc_type)

    @classmethod
    def leadgen(cls, page_id: str, priority: Priority = Priority.LEADS) -> Scope:
        """Lead reads of a Page (first in line by default; a backfill scan passes `Priority.BACKGROUND`)."""
        return cls(page=str(page_id), buc_type="leadgen", priority=priority)

    @classmethod
    def page_api(cls, page_id: str, priority: Priority = Priority.NORMAL) -> Scope:
        return cls(page=str(page_id), buc_type="pages", priority=priority)

    @classmethod
    def key(cls, *keys: str) -> Scope:
        return cls(keys=tuple(keys))

    @classmethod
    def background(cls) -> Scope:
        """No scope hint, only the priority of work that can wait (health checks)."""
        return cls(priority=Priority.BACKGROUND)

    def __add__(self, other: Scope) -> Scope:
        return Scope(
            account=self.account or other.account,
            page=self.page or other.page,
            buc_type=self.buc_type or other.buc_type,
            keys=self.keys + other.keys,
            priority=max(self.priority, other.priority),
        )


def infer_buc_type(path: str) -> str:
    """The business-use-case type a Marketing API path most likely counts against."""
    segments = [s for s in path.strip("/").split("/") if s]
    if "insights" in segments:
        return "ads_insights"
    if any(s in ("customaudiences", "users", "usersreplace") for s in segments):
        return "custom_audience"
    if any(s in ("leads", "leadgen_forms") for s in segments):
        return "leadgen"
    return "ads_management"


def path_object(path: str) -> str | None:
    """The first path segment (the node id), e.g. `act_1` or `123`."""
    for segment in path.strip("/").split("/"):
        if segment:
            return segment.split("?", 1)[0]
    return None


def account_in_path(path: str) -> str | None:
    head = path_object(path)
    if head and _ACT_RE.match(head):
        return head
    return None


# ---------------------------------------------------------------------------------------------------------------
# Header parsing (lenient: a malformed header is logged at debug and ignored, never raises)


@dataclass(frozen=True)
class UsageReading:
    """One usage figure for one scope from one response."""

    scope: str
    pct: float
    reset_seconds: float | None = None  # the window resets (usage back to 0) in this many seconds
    regain_seconds: float | None = None  # the scope is blocked for this many seconds (> 0 only when blocked)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, val in headers.items():
            if key.lower() == lowered:
                return val
    return value


def _json_header(headers: Mapping[str, str], name: str) -> Any:
    raw = _header(headers, name)
    if raw is None or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        logger.debug("ignoring malformed %s header", name)
        return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _max_pct(entry: Mapping[str, Any], keys: Iterable[str]) -> float | None:
    values = [v for v in (_num(entry.get(k)) for k in keys) if v is not None]
    return max(values) if values else None


def parse_app_usage(headers: Mapping[str, str]) -> list[UsageReading]:
    data = _json_header(headers, APP_USAGE_HEADER)
    if not isinstance(data, Mapping):
        return []
    pct = _max_pct(data, ("call_count", "total_time", "total_cputime"))
    return [] if pct is None else [UsageReading(APP, pct)]


def parse_ad_account_usage(headers: Mapping[str, str], act_id: str | None) -> list[UsageReading]:
    if act_id is None:
        return []
    data = _json_header(headers, AD_ACCOUNT_USAGE_HEADER)
    if not isinstance(data, Mapping):
        return []
    pct = _num(data.get("acc_id_util_pct"))
    if pct is None:
        return []
    reset = _num(data.get("reset_time_duration"))  # seconds (docs/meta-api.md §2.4)
    return [UsageReading(ad_account_key(act_id), pct, reset_seconds=reset if reset and reset > 0 else None)]


def parse_buc_usage(headers: Mapping[str, str]) -> list[UsageReading]:
    data = _json_header(headers, BUC_USAGE_HEADER)
    if not isinstance(data, Mapping):
        return []
    readings: list[UsageReading] = []
    for object_id, entries in data.items():
        if isinstance(entries, Mapping):  # lenient: a single object instead of an array
            entries = [entries]
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
                continue
            pct = _max_pct(entry, ("call_count", "total_cputime", "total_time"))
            if pct is None:
                continue
            minutes = _num(entry.get("estimated_time_to_regain_access"))  # minutes (docs/meta-api.md §2.4)
            regain = minutes * 60.0 if minutes and minutes > 0 else None
            readings.append(UsageReading(buc_key(str(object_id), entry["type"]), pct, regain_seconds=regain))
    return readings


def parse_insights_throttle(headers: Mapping[str, str], act_id: str | None) -> list[UsageReading]:
    data = _json_header(headers, INSIGHTS_THROTTLE_HEADER)
    if not isinstance(data, Mapping):
        return []
    readings = []
    app_pct = _num(data.get("app_id_util_pct"))
    if app_pct is not None:
        readings.append(UsageReading(INSIGHTS_APP, app_pct))
    acc_pct = _num(data.get("acc_id_util_pct"))
    if acc_pct is not None and act_id is not None:
        readings.append(UsageReading(f"insights:{normalise_act_id(act_id)}", acc_pct))
    return readings


def parse_sandbox_regain(headers: Mapping[str, str]) -> float | None:
    """The sandbox's exact regain time in seconds, if it sent one (see SANDBOX_REGAIN_HEADER)."""
    raw = _header(headers, SANDBOX_REGAIN_HEADER)
    value = _num(raw.strip()) if raw is not None else None
    return value if value is not None and value >= 0 else None


def accounts_in_buc_header(headers: Mapping[str, str]) -> set[str]:
    """Ad account ids (`act_<id>`) that an ads_* BUC entry reports on."""
    data = _json_header(headers, BUC_USAGE_HEADER)
    found: set[str] = set()
    if isinstance(data, Mapping):
        for object_id, entries in data.items():
            if isinstance(entries, Mapping):
                entries = [entries]
            if not isinstance(entries, list):
                continue
            for entry in entries:
                if isinstance(entry, Mapping) and str(entry.get("type", "")).startswith("ads_"):
                    found.add(normalise_act_id(str(object_id)))
    return found


def parse_usage_headers(headers: Mapping[str, str], act_id: str | None = None) -> list[UsageReading]:
    """All usage readings in one response's headers.

    Args:
        act_id: the ad account the request concerned, if known; `X-Ad-Account-Usage` and the account part of
            `X-FB-Ads-Insights-Throttle` do not name their account.
    """
    if act_id is None:
        accounts = accounts_in_buc_header(headers)
        act_id = next(iter(accounts)) if len(accounts) == 1 else None
    return [
        *parse_app_usage(headers),
        *parse_ad_account_usage(headers, act_id),
        *parse_buc_usage(headers),
        *parse_insights_throttle(headers, act_id),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Pacing

# Rolling window per scope kind (Meta: platform and BUC limits are rolling hours, Pages/LeadGen BUC 24 h, the
# ad-account score decays over 300 s; docs/meta-api.md §2.1-2.3). Tests shrink them to match the sandbox.
DEFAULT_WINDOWS: dict[str, float] = {
    "app": 3600.0,
    "ad_account": 300.0,
    "buc": 3600.0,
    "buc:pages": 86400.0,
    "buc:leadgen": 86400.0,
    "insights": 3600.0,
    "user": 3600.0,
    "page": 3600.0,
    "object": 300.0,
    "action": 3600.0,
}


def scope_kind(scope: str) -> str:
    """`app`, `ad_account`, `buc:<type>`, `insights`, `user`, ... for a scope key."""
    if scope == APP:
        return APP
    prefix = scope.split(":", 1)[0]
    if prefix == "buc":
        return f"buc:{scope.rsplit(':', 1)[-1]}"
    return prefix


def pacing_delay(pct: float, threshold: float, remaining_seconds: float) -> float:
    """Seconds to wait before the next call in a scope at `pct` % usage, when nothing better is known.

    0 below the threshold, growing linearly to the whole remaining window at 100 %.
    """
    if pct < threshold or remaining_seconds <= 0:
        return 0.0
    if pct >= 100.0 or threshold >= 100.0:
        return remaining_seconds
    return (pct - threshold) / (100.0 - threshold) * remaining_seconds


def projected_wait(
    *,
    pct: float,
    granularity: float,
    observed_calls: int,
    completed: Sequence[float],
    in_flight: int,
    last_sent: float,
    window: float,
    threshold: float,
    now: float,
    ceiling: float = 100.0,
) -> float | None:
    """Wait before one more call, projecting Meta's last usage figure with our own call log.

    Meta's `pct` was read when `observed_calls` of our calls were inside the rolling window, so one call is
    worth about (pct + granularity) / observed_calls % (`granularity`: Meta rounds down, so the true figure can
    be up to one unit higher; if other processes share the quota this over-estimates, which errs safe). Our
    budget is then B = 100 / that. Now `n` calls are in the window (completed ones by response time, which is
    never earlier than when Meta counted them, plus those in flight):

    * n + 1 > B: wait until enough of our calls leave the window (the hard edge; never cross 100 %);
    * projected usage above the threshold: keep a gap after our last call growing from 0 at the threshold to
      window / B at 100 % (the budget's own rate, so a steady state near the limit loses no throughput).

    `ceiling` (% of the budget) shrinks the budget for calls that must leave the rest to others (background work).

    Returns None when there is nothing to project from (no usage figure, or none of our calls explains it).
    """
    if observed_calls <= 0 or pct <= 0 or window <= 0:
        return None
    budget = observed_calls * 100.0 / (pct + granularity) * min(100.0, max(1.0, ceiling)) / 100.0
    n = len(completed) + in_flight
    if n + 1 > budget:
        drop = math.ceil(n + 1 - budget)
        if drop <= len(completed):
            return max(completed[drop - 1] + window - now, 1e-3)
        return max(window / max(budget, 1.0), 1e-3)  # in-flight calls must land first
    projected = 100.0 * (n + 1) / budget
    if projected <= threshold or threshold >= 100.0:
        return 0.0
    gap = (projected - threshold) / (100.0 - threshold) * window / budget
    return max(0.0, last_sent + gap - now)


@dataclass
class ScopeState:
    pct: float = 0.0
    granularity: float = 1.0
    observed_at: float = 0.0
    observed_calls: int = 0  # our completed calls inside the window when `pct` was read
    reset_at: float | None = None  # monotonic time the usage resets, when Meta says
    blocked_until: float = 0.0
    block_reason: str = ""
    completed: deque[float] = field(default_factory=lambda: deque(maxlen=500_000))
    in_flight: int = 0
    last_sent: float = float("-inf")
    # After a block ends, one call probes the scope; the others wait for its answer instead of all arriving at
    # the instant the window frees its first slot (which throttles all but one of them again).
    recovering: bool = False
    # Probes of a scope the projection holds longer than the probe interval (module docstring).
    last_probe: float = float("-inf")  # when the last probe was sent
    probe_due: bool = False  # the last wait computed let a call through only as a probe
    probing: bool = False  # a probe is in flight: the others wait for its answer
    leads_waiting: int = 0  # lead reads waiting in this scope right now (the others let them go first)


# How often callers waiting on a probe look again.
PROBE_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Wait:
    seconds: float
    scope: str | None
    blocked: bool  # True: a hard block (throttled), False: pacing


@dataclass
class UsageTracker:
    """Per-scope usage, our own call log, and blocks.

    Args:
        threshold: usage % above which calls in a scope are slowed down.
        windows: rolling window length per scope kind (see DEFAULT_WINDOWS), merged over the defaults.
        clock: monotonic clock.
    """

    threshold: float = 75.0
    windows: Mapping[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = field(default=lambda: 0.0)
    probe_interval: float = DEFAULT_PROBE_SECONDS
    max_learned_objects: int = 10_000
    states: dict[str, ScopeState] = field(default_factory=dict)
    object_accounts: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.windows = {**DEFAULT_WINDOWS, **self.windows}

    def window(self, scope: str) -> float:
        kind = scope_kind(scope)
        if kind in self.windows:
            return self.windows[kind]
        return self.windows.get(kind.split(":", 1)[0], self.windows["app"])

    def state(self, scope: str) -> ScopeState:
        st = self.states.get(scope)
        if st is None:
            st = self.states[scope] = ScopeState()
        return st

    def _trim(self, scope: str, st: ScopeState, now: float) -> None:
        horizon = now - self.window(scope)
        while st.completed and st.completed[0] <= horizon:
            st.completed.popleft()

    # -- our own calls

    @staticmethod
    def metered(scope: str) -> bool:
        """Scopes Meta reports usage for; only these keep a call log (others only hold blocks)."""
        return scope == APP or scope.split(":", 1)[0] in ("ad_account", "buc", "insights")

    def on_send(self, scopes: Iterable[str]) -> None:
        now = self.clock()
        for scope in scopes:
            if not self.metered(scope):
                continue
            st = self.state(scope)
            st.in_flight += 1
            st.last_sent = now
            if st.probe_due:
                st.probe_due = False
                st.probing = True
                st.last_probe = now

    def on_complete(self, scopes: Iterable[str]) -> None:
        now = self.clock()
        for scope in scopes:
            if not self.metered(scope):
                continue
            st = self.state(scope)
            st.in_flight = max(0, st.in_flight - 1)
            st.completed.append(now)
            st.probing = False  # its answer (headers, or a throttle and its block) is in
            if st.blocked_until <= now:
                st.recovering = False

    # -- what Meta says

    def observe(self, reading: UsageReading, *, regain_override: float | None = None) -> None:
        now = self.clock()
        st = self.state(reading.scope)
        self._trim(reading.scope, st, now)
        st.pct = reading.pct
        st.granularity = 1.0 if float(reading.pct).is_integer() else 0.01
        st.observed_at = now
        st.observed_calls = len(st.completed)
        st.reset_at = now + reading.reset_seconds if reading.reset_seconds is not None else None
        if reading.regain_seconds:
            # A BUC entry with a regain time means the scope is blocked right now.
            regain = regain_override if regain_override is not None else reading.regain_seconds
            self.block(reading.scope, regain, reason="usage header reports regain time")

    def block(self, scope: str, seconds: float, *, reason: str = "throttled") -> float:
        """Make no call in `scope` for `seconds`. Returns the monotonic time the block ends."""
        now = self.clock()
        if len(self.states) > self.max_learned_objects:
            # Per-object / per-action scopes only hold blocks: forget the ones that have ended.
            for key in [k for k, v in self.states.items() if not self.metered(k) and v.blocked_until <= now]:
                del self.states[key]
        st = self.state(scope)
        until = now + max(0.0, seconds)
        if until > st.blocked_until:
            st.blocked_until = until
            st.block_reason = reason
        st.recovering = True
        # Figures read up to now describe the blocked window; after the block only fresh ones count.
        st.pct = 0.0
        st.observed_calls = 0
        st.reset_at = None
        return st.blocked_until

    def leads_waiting(self, scopes: Iterable[str], delta: int) -> None:
        """Count lead reads waiting in `scopes` (+1 when one starts waiting, -1 when it stops)."""
        for scope in scopes:
            if self.metered(scope):
                st = self.state(scope)
                st.leads_waiting = max(0, st.leads_waiting + delta)

    def blocked_for(self, scope: str) -> float:
        st = self.states.get(scope)
        return 0.0 if st is None else max(0.0, st.blocked_until - self.clock())

    def current_pct(self, scope: str) -> float:
        """Last figure Meta reported, or 0 once it has certainly reset."""
        st = self.states.get(scope)
        if st is None:
            return 0.0
        now = self.clock()
        if st.reset_at is not None and now >= st.reset_at:
            return 0.0
        return 0.0 if now - st.observed_at >= self.window(scope) else st.pct

    def remaining_window(self, scope: str) -> float:
        st = self.states.get(scope)
        if st is None:
            return 0.0
        now = self.clock()
        if st.reset_at is not None:
            return max(0.0, st.reset_at - now)
        return max(0.0, st.observed_at + self.window(scope) - now)

    def scope_wait(self, scope: str, priority: Priority = Priority.NORMAL) -> Wait:
        st = self.states.get(scope)
        if st is None:
            return Wait(0.0, scope, False)
        now = self.clock()
        st.probe_due = False
        if st.blocked_until > now:
            return Wait(st.blocked_until - now, scope, True)
        if (st.recovering or st.probing) and st.in_flight > 0:
            return Wait(PROBE_POLL_SECONDS, scope, True)
        if priority < Priority.LEADS and st.leads_waiting > 0:
            return Wait(PROBE_POLL_SECONDS, scope, False)  # lead reads first
        if st.observed_at and now - st.observed_at >= self.window(scope):
            # The last reading describes a window that has passed: it must not keep pacing calls forever
            # (a 100% insights reading comes without a regain time, so nothing else would clear it).
            st.pct, st.observed_calls, st.reset_at = 0.0, 0, None
        self._trim(scope, st, now)
        if st.reset_at is not None and now >= st.reset_at:
            return Wait(0.0, scope, False)
        projected = projected_wait(
            pct=st.pct,
            granularity=st.granularity,
            observed_calls=st.observed_calls,
            completed=st.completed,
            in_flight=st.in_flight,
            last_sent=st.last_sent,
            window=self.window(scope),
            threshold=self.threshold,
            now=now,
            ceiling=BACKGROUND_CEILING if priority == Priority.BACKGROUND else 100.0,
        )
        if projected is None:
            pct = self.current_pct(scope)
            if priority == Priority.BACKGROUND:
                pct = pct * 100.0 / BACKGROUND_CEILING
            projected = pacing_delay(pct, self.threshold, self.remaining_window(scope))
        return Wait(self._probe_cap(st, projected, now), scope, False)

    def _probe_cap(self, st: ScopeState, projected: float, now: float) -> float:
        """The projected wait, or less: the time until the scope's next probe (module docstring)."""
        if projected <= self.probe_interval:
            return projected
        next_probe = max(st.observed_at, st.last_probe) + self.probe_interval
        if next_probe > now:
            return min(projected, next_probe - now)
        st.probe_due = True  # the next call sent in this scope is the probe (`on_send`)
        return 0.0

    def probe_due(self, scopes: Iterable[str]) -> set[str]:
        """Of `scopes`, those whose last computed wait let a call through only as their probe."""
        return {s for s in scopes if (st := self.states.get(s)) is not None and st.probe_due}

    def wait_for(self, scopes: Iterable[str], priority: Priority = Priority.NORMAL) -> Wait:
        """The longest wait any of `scopes` requires right now (a block wins a tie)."""
        best = Wait(0.0, None, False)
        for scope in scopes:
            wait = self.scope_wait(scope, priority)
            if wait.seconds > best.seconds or (wait.blocked and wait.seconds >= best.seconds > 0):
                best = wait
        return best

    # -- object → ad account

    def learn_account(self, object_id: str, act_id: str) -> None:
        """Remember which ad account an object belongs to (bounded LRU)."""
        if not object_id or _ACT_RE.match(object_id):
            return
        self.object_accounts[object_id] = normalise_act_id(act_id)
        self.object_accounts.move_to_end(object_id)
        while len(self.object_accounts) > self.max_learned_objects:
            self.object_accounts.popitem(last=False)

    def account_of(self, object_id: str | None) -> str | None:
        if object_id is None:
            return None
        if _ACT_RE.match(object_id):
            return object_id
        return self.object_accounts.get(object_id)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Current view per scope (for logs and tests)."""
        return {
            scope: {
                "pct": self.current_pct(scope),
                "blocked_for": self.blocked_for(scope),
                "wait": self.scope_wait(scope).seconds,
            }
            for scope in self.states
        }


def resolve_scopes(
    method: str,
    path: str,
    hint: Scope | None,
    tracker: UsageTracker,
    *,
    user_scope: str | None = None,
) -> list[str]:
    """The scope keys a call touches, from its path, the caller's hint and what the tracker learned."""
    hint = hint or Scope()
    keys: list[str] = [APP]
    head = path_object(path)
    account = hint.account or tracker.account_of(head)
    buc_type = hint.buc_type or infer_buc_type(path)
    if account:
        keys.append(ad_account_key(account))
        keys.append(buc_key(account, buc_type if buc_type != "leadgen" else "ads_management"))
    if hint.page:
        keys.append(buc_key(hint.page, hint.buc_type or "pages"))
        keys.append(f"page:{hint.page}")
    if buc_type == "ads_insights":
        keys.append(INSIGHTS_APP)
        if account:
            keys.append(f"insights:{account}")
    if user_scope:
        keys.append(user_scope)
    if head and not account and not hint.page:
        keys.append(f"object:{head}")
    if method.upper() != "GET":
        keys.append(f"action:{method.upper()} /{path.strip('/')}")
    keys.extend(hint.keys)
    # Keep order, drop duplicates.
    return list(dict.fromkeys(keys))


