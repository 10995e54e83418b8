"""The health strip's Meta chips from the last checks: token, permissions, Pages, accounts, Graph usage per scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.console.meta_health import MetaHealth, chips, scope_label, usage_chips
from shared.doctor import Finding

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def by_label(state: MetaHealth, now: datetime = NOW) -> dict[str, tuple[str, str]]:
    return {c.label: (c.state, c.detail) for c in chips(state, now, 300)}


def test_not_checked_yet_is_amber() -> None:
    assert by_label(MetaHealth()) == {"Meta connection": ("warn", "not checked yet")}


def test_healthy_setup_is_green_everywhere() -> None:
    state = MetaHealth(findings=[
        Finding("token", True, "valid (system_user)"),
        Finding("permissions", True, "granted", subject="lead capture"),
        Finding("leadgen subscription", True, "the app receives this Page's leadgen webhooks", subject="123"),
        Finding("lead access", True, "lead forms readable", subject="123"),
        Finding("ad account", True, "Firm", subject="act_1"),
    ], usage={"app": {"pct": 12.0, "blocked_for": 0.0}}, checked_at=NOW - timedelta(minutes=2))
    got = by_label(state)
    assert got["Meta token"] == ("ok", "valid (system_user), never expires")
    assert got["Permissions"] == ("ok", "every permission granted")
    assert got["Page 123 webhooks"] == ("ok", "subscribed")
    assert got["Page 123 lead access"] == ("ok", "lead forms readable")
    assert got["Ad account act_1"] == ("ok", "Firm")
    assert got["Graph app"] == ("ok", "12% of its limit used")
    assert {s for s, _ in got.values()} == {"ok"}


def test_problems_are_red_or_amber_with_their_fix() -> None:
    state = MetaHealth(findings=[
        Finding("token", True, "valid (user)"),
        Finding("token expiry", False, "expires in 3.0 days (2026-12-06)", severity="warning",
                fix="replace it with a system-user token, which does not expire"),
        Finding("permissions", False, "missing leads_retrieval", subject="lead capture", fix="grant leads_retrieval"),
        Finding("leadgen subscription", False, "not subscribed", subject="123", fix="run `leadwire pages subscribe`"),
    ], usage={"buc:123:pages": {"pct": 80.0, "blocked_for": 0.0}, "ad_account:act_1": {"pct": 100, "blocked_for": 42}},
        checked_at=NOW - timedelta(hours=2))
    got = by_label(state)
    assert got["Meta token"] == ("warn", "expires in 3.0 days (2026-12-06) — fix: replace it with a system-user token, "
                                         "which does not expire")
    assert got["Permissions"] == ("bad", "lead capture: missing leads_retrieval — fix: grant leads_retrieval")
    assert got["Page 123 webhooks"] == ("bad", "not subscribed — fix: run `leadwire pages subscribe`")
    assert got["Graph ad account act_1"] == ("bad", "throttled, 42 s to go")
    assert got["Graph pages 123"] == ("warn", "80% of its limit used")
    assert got["Meta checks"] == ("warn", "last checked 2 h ago")  # more than 3 intervals old


def test_an_invalid_token_or_a_failed_check_is_red() -> None:
    state = MetaHealth(findings=[Finding("token", False, "Session has expired.", fix="generate a new token")],
                       checked_at=NOW, error="ClientConnectorError")
    got = by_label(state)
    assert got["Meta token"] == ("bad", "Session has expired. — fix: generate a new token")
    assert got["Meta connection"][0] == "bad"


def test_usage_chips_blocked_first_and_at_most_four() -> None:
    usage = {f"buc:{i}:leadgen": {"pct": float(i), "blocked_for": 0.0} for i in range(1, 8)}
    usage["app"] = {"pct": 0.0, "blocked_for": 5.0}
    labels = [c.label for c in usage_chips(usage)]
    assert labels == ["Graph app", "Graph leadgen 7", "Graph leadgen 6", "Graph leadgen 5"]
    assert [c.label for c in usage_chips({"app": {"pct": 0.0, "blocked_for": 0.0}})] == ["Graph API usage"]
    assert scope_label("insights:act_1") == "insights act_1"
