"""The console's plain logic: days in a time zone, masks, money, durations, the login limiter, passwords."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.console import logic
from services.console.security import LoginLimiter, hash_password, tokens_match, verify_password
from services.console.settings import ConsoleSettings


def test_a_day_in_a_zone_is_its_local_midnights_in_utc() -> None:
    phoenix = ZoneInfo("America/Phoenix")  # UTC-7, no DST
    day = logic.day_of(datetime(2026, 12, 3, 5, 0, tzinfo=UTC), phoenix)  # still Dec 2 in Phoenix
    assert day.day.isoformat() == "2026-12-02"
    assert (day.start, day.end) == (datetime(2026, 12, 2, 7, tzinfo=UTC), datetime(2026, 12, 3, 7, tzinfo=UTC))
    assert logic.day_of(datetime(2026, 12, 3, 5, 0, tzinfo=UTC), phoenix, 1).day.isoformat() == "2026-12-01"


def test_a_dst_day_is_23_hours_long() -> None:
    day = logic.day_of(datetime(2026, 3, 8, 12, tzinfo=UTC), ZoneInfo("America/New_York"))
    assert day.end - day.start == timedelta(hours=23)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("email", "jane.roe@example.com", "j•••@example.com"),
        ("work_email", "not an email", "•••"),
        ("phone_number", "+1 (555) 555-0123", "•••• 23"),
        ("phone_number", "12", "••••"),
        ("full_name", "Jane Quincy Roe", "J. Q. R."),
        ("were_you_injured", "yes", "•••"),
        ("city", "", "—"),
        ("city", None, "—"),
    ],
)
def test_answers_are_masked(key: str, value: object, shown: str) -> None:
    assert logic.mask(key, value) == shown


def test_money_and_cost_per() -> None:
    assert logic.money(123_456, "USD") == "1,234.56 USD"
    assert logic.money(8000, "JPY") == "8,000 JPY"
    assert logic.money(None, "USD") == "—"
    assert logic.cost_per(1000, 3) == Decimal(1000) / 3
    assert logic.money(logic.cost_per(1000, 3), "USD") == "3.33 USD"
    assert logic.cost_per(1000, 0) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0.23, "0.2 s"), (12.4, "12 s"), (90, "1 min 30 s"), (120, "2 min"), (7500, "2 h 5 min")],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert logic.duration(seconds) == text


def test_health_chips_turn_amber_then_red_with_age() -> None:
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    chips = {c.label: c for c in logic.health_chips({
        "last_webhook_lead_at": now - timedelta(hours=1),
        "last_crm_delivery_at": now - timedelta(hours=30),
        "last_crm_outcome_at": None,
        "last_capi_sent_at": now - timedelta(hours=50),
        "capi_rejected_24h": 2,
        "crm_failed": 1,
        "lead_alerts_24h": 0,
        "outbox_backlog": 0,
    }, now)}
    assert chips["Last lead by webhook"].state == "ok"
    assert chips["Last CRM delivery"].state == "warn"
    assert chips["Last CRM outcome"].detail == "never"
    assert chips["Last Conversions API send"].state == "bad"
    assert "2 rejected in 24 h" in chips["Last Conversions API send"].detail
    assert chips["CRM deliveries failed"].state == "bad"
    assert chips["Lead access"].state == "ok"


def test_login_limiter_counts_failures_per_key_within_the_window() -> None:
    clock = [0.0]
    limiter = LoginLimiter(3, 60, clock=lambda: clock[0])
    for _ in range(3):
        assert not limiter.blocked("address:1", "user:a")
        limiter.failed("address:1", "user:a")
    assert limiter.blocked("address:1", "user:b")  # the address is blocked for any name
    assert limiter.blocked("address:2", "user:a")  # the name is blocked from any address
    assert not limiter.blocked("address:2", "user:b")
    clock[0] = 61
    assert not limiter.blocked("address:1", "user:a")  # the window slid past the failures


def test_passwords_verify_only_against_their_own_hash() -> None:
    accounts = {"alice": hash_password("correct horse battery staple")}
    assert accounts["alice"].startswith("$argon2id$")
    assert verify_password(accounts, "alice", "correct horse battery staple")
    assert not verify_password(accounts, "alice", "wrong")
    assert not verify_password(accounts, "bob", "correct horse battery staple")
    assert not verify_password({"eve": "not-a-hash"}, "eve", "anything")
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("", "")
    assert not tokens_match("abc", None)


def test_settings_refuse_clear_passwords_and_unknown_zones() -> None:
    with pytest.raises(ValidationError, match="name:\\$argon2id"):
        ConsoleSettings(users="alice:hunter2")
    with pytest.raises(ValidationError, match="IANA"):
        ConsoleSettings(timezone="Mars/Olympus")
    hashed = hash_password("correct horse battery staple")
    settings = ConsoleSettings(users=f"alice:{hashed} bob:{hashed}")
    assert set(settings.accounts()) == {"alice", "bob"}
    assert hashed not in repr(settings)


def test_add_user_prints_an_entry_the_settings_accept() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "services.console", "add-user", "alice", "--password-stdin"],
        input="correct horse battery staple\n", capture_output=True, text=True, check=True, timeout=60,
    )
    [entry] = result.stdout.splitlines()
    assert "correct horse" not in result.stdout + result.stderr
    settings = ConsoleSettings(users=entry)
    assert verify_password(settings.accounts(), "alice", "correct horse battery staple")
    short = subprocess.run(
        [sys.executable, "-m", "services.console", "add-user", "alice", "--password-stdin"],
        input="short\n", capture_output=True, text=True, timeout=60,
    )
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr


@pytest.mark.parametrize(
    ("cost_minor", "target", "state"),
    [(5000, Decimal(50), "ok"), (6250, Decimal(50), "warn"), (6251, Decimal(50), "bad"), (None, Decimal(50), ""),
     (5000, None, "")],
)
def test_costs_against_targets(cost_minor: int | None, target: Decimal | None, state: str) -> None:
    assert logic.target_state(None if cost_minor is None else Decimal(cost_minor), target, "USD") == state


def test_chart_series_fills_every_day_and_needs_one_currency() -> None:
    from datetime import date

    first, last = date(2026, 12, 1), date(2026, 12, 3)
    spend = [{"date": date(2026, 12, 1), "currency": "USD", "spend_minor": 10_000, "meta_leads": 4},
             {"date": date(2026, 12, 3), "currency": "USD", "spend_minor": 5_000, "meta_leads": 0}]
    outcomes = [{"day": date(2026, 12, 1), "qualified": 2, "signed": 1}]
    series = logic.chart_series(spend, outcomes, first, last, date(2026, 12, 2))
    assert series is not None
    assert series["spend"] == [100.0, 0.0, 50.0]
    assert series["cpl"] == [25.0, None, None]
    assert series["cpsc"] == [100.0, None, None]
    assert len(series["days"]) == 3
    assert series["maturing_from"] == int(datetime(2026, 12, 2, tzinfo=UTC).timestamp())
    assert logic.chart_series([*spend, {**spend[0], "currency": "EUR"}], outcomes, first, last, last) is None
