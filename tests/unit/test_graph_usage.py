"""Usage header parsing, scope resolution and pacing math."""

from __future__ import annotations

import itertools
import json

import pytest

from shared.graph.usage import (
    APP,
    PROBE_POLL_SECONDS,
    Priority,
    Scope,
    UsageReading,
    UsageTracker,
    pacing_delay,
    parse_ad_account_usage,
    parse_app_usage,
    parse_buc_usage,
    parse_insights_throttle,
    parse_sandbox_regain,
    parse_usage_headers,
    projected_wait,
    resolve_scopes,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_app_usage_takes_the_highest_figure():
    headers = {"X-App-Usage": json.dumps({"call_count": 28, "total_time": 55, "total_cputime": 25})}
    assert parse_app_usage(headers) == [UsageReading("app", 55.0)]


def test_header_names_are_case_insensitive():
    headers = {"x-app-usage": '{"call_count": 10}'}
    assert parse_app_usage(headers) == [UsageReading("app", 10.0)]


def test_ad_account_usage_reset_is_seconds():
    value = '{"acc_id_util_pct": 9.67, "reset_time_duration": 100, "ads_api_access_tier": "x"}'
    headers = {"X-Ad-Account-Usage": value}
    assert parse_ad_account_usage(headers, "act_1") == [UsageReading("ad_account:act_1", 9.67, reset_seconds=100.0)]
    assert parse_ad_account_usage(headers, None) == []  # the header does not name its account


def test_buc_usage_regain_is_minutes_and_parsed_leniently():
    headers = {
        "X-Business-Use-Case-Usage": json.dumps(
            {
                "1000000001": [
                    {"type": "ads_management", "call_count": 95, "total_cputime": 20, "total_time": 20,
                     "estimated_time_to_regain_access": 3},
                    {"type": "ads_insights", "call_count": "12", "total_time": None},
                    {"call_count": 99},  # no type: ignored
                    "garbage",
                ],
                "555": {"type": "leadgen", "call_count": 40, "estimated_time_to_regain_access": 0},
                "bad": 7,
            }
        )
    }
    readings = {r.scope: r for r in parse_buc_usage(headers)}
    assert readings["buc:1000000001:ads_management"] == UsageReading(
        "buc:1000000001:ads_management", 95.0, regain_seconds=180.0
    )
    assert readings["buc:1000000001:ads_insights"].pct == 12.0
    assert readings["buc:555:leadgen"].regain_seconds is None
    assert len(readings) == 3


def test_insights_throttle():
    headers = {"X-FB-Ads-Insights-Throttle": '{"app_id_util_pct": 100, "acc_id_util_pct": 10}'}
    got = {r.scope: r.pct for r in parse_insights_throttle(headers, "act_7")}
    assert got == {"insights:app": 100.0, "insights:act_7": 10.0}


@pytest.mark.parametrize(
    "value",
    ["", "not json", "[1,2]", '{"call_count": "abc"}', '{"call_count": NaN}', "null", "{", '"str"'],
)
def test_malformed_headers_are_ignored(value):
    headers = {
        "X-App-Usage": value,
        "X-Ad-Account-Usage": value,
        "X-Business-Use-Case-Usage": value,
        "X-FB-Ads-Insights-Throttle": value,
        "X-Sandbox-Regain-Seconds": value,
    }
    assert parse_usage_headers(headers, "act_1") == []
    assert parse_sandbox_regain(headers) is None


def test_account_learned_from_buc_header_for_ad_account_usage():
    headers = {
        "X-Ad-Account-Usage": '{"acc_id_util_pct": 50}',
        "X-Business-Use-Case-Usage": '{"42": [{"type": "ads_management", "call_count": 5}]}',
    }
    scopes = {r.scope for r in parse_usage_headers(headers)}
    assert scopes == {"ad_account:act_42", "buc:42:ads_management"}


def test_sandbox_regain_header():
    assert parse_sandbox_regain({"X-Sandbox-Regain-Seconds": "2.500"}) == 2.5
    assert parse_sandbox_regain({"x-sandbox-regain-seconds": "-1"}) is None


def test_pacing_delay_is_linear_from_threshold_to_remaining_window():
    assert pacing_delay(50, 75, 60) == 0
    assert pacing_delay(75, 75, 60) == 0
    assert pacing_delay(87.5, 75, 60) == pytest.approx(30)
    assert pacing_delay(100, 75, 60) == 60
    assert pacing_delay(120, 75, 60) == 60
    assert pacing_delay(90, 75, 0) == 0


def test_projected_wait_slows_down_smoothly_then_stops_at_the_edge():
    # 300-call budget over 10 s: Meta said 50 % after 150 of our calls.
    common = {"pct": 50.0, "granularity": 0.01, "observed_calls": 150, "in_flight": 0, "window": 10.0,
              "threshold": 75.0}
    below = projected_wait(completed=[0.0] * 150, last_sent=0.0, now=0.0, **common)
    assert below == 0.0
    gaps = [
        projected_wait(completed=[0.0] * n, last_sent=0.0, now=0.0, **common)
        for n in (230, 250, 270, 290, 298)
    ]
    assert all(0 < a < b for a, b in itertools.pairwise(gaps))
    assert gaps[-1] <= 10.0 / 299 + 1e-9  # never slower than the budget's own rate before the edge
    # At the edge: wait until our oldest call leaves the window.
    at_edge = projected_wait(completed=[3.0] + [5.0] * 298, last_sent=5.0, now=5.0, **common)
    assert at_edge == pytest.approx(3.0 + 10.0 - 5.0)
    # Nothing to project from.
    assert projected_wait(completed=[], last_sent=0.0, now=0.0, **{**common, "observed_calls": 0}) is None


def test_tracker_blocks_scope_and_unblocks_after_regain():
    clock = Clock()
    tracker = UsageTracker(threshold=75, clock=clock)
    tracker.block("ad_account:act_1", 5.0)
    wait = tracker.wait_for(["app", "ad_account:act_1", "buc:1:ads_management"])
    assert wait.blocked
    assert wait.scope == "ad_account:act_1"
    assert wait.seconds == pytest.approx(5.0)
    assert tracker.wait_for(["app", "ad_account:act_2"]).seconds == 0  # other scopes keep flowing
    clock.now += 5.0
    assert tracker.wait_for(["ad_account:act_1"]).seconds == 0


def test_tracker_projects_usage_from_its_own_calls():
    clock = Clock()
    tracker = UsageTracker(threshold=75, windows={"app": 10.0}, clock=clock)
    for _ in range(80):
        tracker.on_send([APP])
        tracker.on_complete([APP])
    tracker.observe(UsageReading(APP, 80.0))  # 80 calls = 80 % (budget ~100 per 10 s)
    first = tracker.wait_for([APP]).seconds
    assert first > 0
    for _ in range(18):
        tracker.on_send([APP])
        tracker.on_complete([APP])
    assert tracker.wait_for([APP]).seconds > first
    # Window passes: all our calls leave it, no wait any more.
    clock.now += 10.5
    assert tracker.wait_for([APP]).seconds == 0


def test_tracker_buc_regain_in_header_blocks_scope():
    clock = Clock()
    tracker = UsageTracker(clock=clock)
    tracker.observe(UsageReading("buc:1:ads_insights", 100.0, regain_seconds=120.0))
    assert tracker.wait_for(["buc:1:ads_insights"]).seconds == pytest.approx(120.0)
    tracker.observe(UsageReading("buc:2:ads_insights", 100.0, regain_seconds=120.0), regain_override=2.0)
    assert tracker.wait_for(["buc:2:ads_insights"]).seconds == pytest.approx(2.0)


def test_linear_fallback_uses_reset_time():
    clock = Clock()
    tracker = UsageTracker(threshold=75, clock=clock)
    tracker.observe(UsageReading("ad_account:act_1", 87.5, reset_seconds=40.0))  # none of our calls: fallback
    assert tracker.wait_for(["ad_account:act_1"]).seconds == pytest.approx(20.0)
    clock.now += 41
    assert tracker.wait_for(["ad_account:act_1"]).seconds == 0


def test_resolve_scopes():
    tracker = UsageTracker()
    assert resolve_scopes("GET", "act_1/campaigns", None, tracker) == [
        "app", "ad_account:act_1", "buc:1:ads_management"
    ]
    insights = resolve_scopes("GET", "act_1/insights", None, tracker)
    assert "buc:1:ads_insights" in insights
    assert "insights:app" in insights
    tracker.learn_account("123", "act_1")
    assert "ad_account:act_1" in resolve_scopes("GET", "123", None, tracker)
    leads = resolve_scopes("GET", "999/leads", Scope.leadgen("555"), tracker, user_scope="user:x")
    assert "buc:555:leadgen" in leads
    assert "user:x" in leads
    assert "ad_account:act_1" in resolve_scopes("GET", "77", Scope.ad_account("1"), tracker)
    assert "action:POST /77" in resolve_scopes("POST", "77", None, tracker)
    assert "object:88" in resolve_scopes("GET", "88", None, tracker)


def test_full_reading_without_regain_time_stops_pacing_once_its_window_passed():
    # An insights throttle header at 100 % carries no regain time; with one call of ours in the window it would
    # otherwise keep projecting a wait forever.
    clock = Clock()
    tracker = UsageTracker(threshold=75, windows={"insights": 10.0}, clock=clock)
    tracker.on_send(["insights:act_1"])
    tracker.on_complete(["insights:act_1"])
    tracker.observe(UsageReading("insights:act_1", 100.0))
    assert tracker.wait_for(["insights:act_1"]).seconds > 0
    clock.now += 10.5
    assert tracker.wait_for(["insights:act_1"]).seconds == 0


def test_after_a_block_one_probe_goes_first_and_the_others_wait_for_it():
    clock = Clock()
    tracker = UsageTracker(clock=clock)
    tracker.block(APP, 2.0)
    clock.now += 2.1
    assert tracker.wait_for([APP]).seconds == 0  # the probe may go
    tracker.on_send([APP])
    held = tracker.wait_for([APP])
    assert held.blocked
    assert held.seconds > 0  # everyone else waits for the probe's answer
    tracker.on_complete([APP])
    assert tracker.wait_for([APP]).seconds == 0  # the probe got through: the scope is open again


# -- probes and priority (issue 14, item 4) --------------------------------------------------------------------

LEADGEN = "buc:111:leadgen"


def _near_limit(tracker: UsageTracker, clock: Clock, calls: int = 30, pct: float = 95.0) -> None:
    """Our own calls in the scope, then Meta's figure: the pacer's projection over the 24 h window is long."""
    for _ in range(calls):
        tracker.on_send([LEADGEN])
        tracker.on_complete([LEADGEN])
    tracker.observe(UsageReading(LEADGEN, pct))


def test_a_long_projection_is_held_only_until_the_next_probe_then_one_call_probes():
    clock = Clock()
    tracker = UsageTracker(clock=clock, probe_interval=180.0)
    _near_limit(tracker, clock)
    projected = projected_wait(
        pct=95.0, granularity=1.0, observed_calls=30, completed=list(tracker.states[LEADGEN].completed),
        in_flight=0, last_sent=clock.now, window=86400.0, threshold=75.0, now=clock.now,
    )
    assert projected is not None
    assert projected > 1800
    wait = tracker.wait_for([LEADGEN], Priority.LEADS)
    assert 0 < wait.seconds <= 180.0
    assert not wait.blocked
    clock.now += wait.seconds
    assert tracker.wait_for([LEADGEN], Priority.LEADS).seconds == 0  # the probe may go
    tracker.on_send([LEADGEN])
    # One probe at a time: everyone else waits for its answer.
    assert tracker.wait_for([LEADGEN], Priority.LEADS).seconds == PROBE_POLL_SECONDS
    tracker.on_complete([LEADGEN])
    # Meta says usage dropped: the projection now has a fresh basis and lets calls go.
    tracker.observe(UsageReading(LEADGEN, 3.0))
    assert tracker.wait_for([LEADGEN], Priority.LEADS).seconds == 0


def test_while_usage_stays_high_probes_come_at_most_once_per_interval():
    clock = Clock()
    tracker = UsageTracker(clock=clock, probe_interval=180.0)
    _near_limit(tracker, clock)
    probes = []
    for _ in range(3 * 600):  # ten minutes in 1/3 s steps, a caller always ready
        if tracker.wait_for([LEADGEN], Priority.LEADS).seconds == 0:
            probes.append(clock.now)
            tracker.on_send([LEADGEN])
            tracker.on_complete([LEADGEN])
            tracker.observe(UsageReading(LEADGEN, 96.0))  # still near the limit
        clock.now += 1 / 3
    assert 3 <= len(probes) <= 4
    assert all(b - a >= 180.0 - 1e-6 for a, b in itertools.pairwise(probes))


def test_a_short_projection_is_waited_out_without_a_probe():
    clock = Clock()
    tracker = UsageTracker(clock=clock, probe_interval=180.0, windows={"buc:leadgen": 60.0})
    _near_limit(tracker, clock, calls=30, pct=80.0)
    wait = tracker.wait_for([LEADGEN])
    assert 0 < wait.seconds < 180.0
    assert not tracker.probe_due([LEADGEN])


def test_background_calls_leave_the_last_share_of_the_quota_to_lead_reads():
    clock = Clock()
    tracker = UsageTracker(clock=clock, probe_interval=10**6, windows={"buc:leadgen": 3600.0})
    _near_limit(tracker, clock, calls=89, pct=89.0)  # a budget of about 99 calls; 89 % used
    clock.now += 1000.0
    lead = tracker.wait_for([LEADGEN], Priority.LEADS).seconds
    background = tracker.wait_for([LEADGEN], Priority.BACKGROUND).seconds
    assert lead < 60.0  # lead reads still go (paced)
    assert background > 1000.0  # the backfill stops at 90 % of the budget: it waits for calls to leave the window


def test_lower_priority_calls_wait_while_a_lead_read_waits_in_the_scope():
    clock = Clock()
    tracker = UsageTracker(clock=clock)
    tracker.leads_waiting([LEADGEN], +1)
    assert tracker.wait_for([LEADGEN], Priority.BACKGROUND).seconds > 0
    assert tracker.wait_for([LEADGEN], Priority.NORMAL).seconds > 0
    assert tracker.wait_for([LEADGEN], Priority.LEADS).seconds == 0
    assert tracker.wait_for(["buc:222:leadgen"], Priority.BACKGROUND).seconds == 0  # another Page: no effect
    tracker.leads_waiting([LEADGEN], -1)
    assert tracker.wait_for([LEADGEN], Priority.BACKGROUND).seconds == 0


def test_scope_priority_helpers():
    assert Scope.leadgen("1").priority == Priority.LEADS
    assert Scope.leadgen("1", Priority.BACKGROUND).priority == Priority.BACKGROUND
    assert Scope.background().priority == Priority.BACKGROUND
    assert (Scope.background() + Scope.leadgen("1")).priority == Priority.LEADS
