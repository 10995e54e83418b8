"""The rules engine's stored decision status and per-hour counts (migration 0140) against the raw rows they summarize.

Whoever writes `rule_decisions` or `rule_actions` (the engine's store, an import, this test) keeps both exact: after
every insert, update and delete below, each decision's stored status equals what the raw decision and its action
say (the rules of `console_rule_decisions`, worked out here in Python), `rule_decision_hours` equals the decisions
grouped by rule, UTC hour and status, and `console_rule_decision_counts(since)` equals the decisions since then.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.rules_engine.model import Action, Decision
from services.rules_engine.store import prune_skipped_decisions, record_decisions

pytestmark = pytest.mark.timeout(60)

_SKIPPED = {"not_matched", "insufficient_data", "no_change"}


def expected_status(decision: asyncpg.Record, actions: list[asyncpg.Record]) -> str:
    """The status `console_rule_decisions` gives a decision (0060), its action chosen failed first, then one
    waiting for its result, then one applied (0140)."""
    mine = [a for a in actions if (a["run_id"], a["rule"], a["entity_id"]) ==
            (decision["run_id"], decision["rule"], decision["entity_id"]) and a["kind"] != "notify"]
    rank = {"failed": 0, "refused": 0, "ok": 2}
    action = min(mine, key=lambda a: (rank.get(a["result_status"], 1), a["acted_at"], a["command_id"]), default=None)
    result = action["result_status"] if action else None
    outcome, reason = decision["outcome"], decision["reason"]
    if outcome == "acted":
        if result == "ok":
            return "acted"
        if result in ("failed", "refused"):
            return "failed"
        return "sent" if action else "acted"
    if outcome == "would_act":
        return "shadow" if decision["shadow"] else "dry_run"
    return "skipped" if reason in _SKIPPED else "held"


async def check(db: asyncpg.Pool) -> Counter[str]:
    decisions = await db.fetch("select * from rule_decisions")
    actions = await db.fetch("select * from rule_actions")
    for d in decisions:
        assert d["status"] == expected_status(d, actions), dict(d)
    listed = {r["id"]: r["status"] for r in await db.fetch("select id, status from console_rule_decisions")}
    assert listed == {d["id"]: d["status"] for d in decisions}

    def hour(at: datetime) -> datetime:
        return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)

    raw = Counter((d["rule"], hour(d["evaluated_at"]), d["status"]) for d in decisions)
    hours = {(r["rule"], r["hour"], r["status"]): r["decisions"] for r in await db.fetch(
        "select rule, hour, status, decisions from rule_decision_hours")}
    assert hours == dict(raw)

    now = await db.fetchval("select now()")
    for since in (now - timedelta(days=7), now - timedelta(hours=2, minutes=30), now - timedelta(days=400)):
        counted = {(r["rule"], r["status"]): (r["decisions"], r["last_decision"]) for r in await db.fetch(
            "select * from console_rule_decision_counts($1)", since)}
        recent = [d for d in decisions if d["evaluated_at"] > since]
        last = {rule: max(d["evaluated_at"] for d in recent if d["rule"] == rule)
                for rule in {d["rule"] for d in recent}}
        assert counted == {(rule, status): (n, last[rule])
                           for (rule, status), n in Counter((d["rule"], d["status"]) for d in recent).items()}
    return Counter(d["status"] for d in decisions)


_DECISION = """
insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id, currency,
                            outcome, reason, shadow, metrics, explanation)
values ($1, $2, $3, $4, 'adset', 'Ad set ' || $4, 'act_1', 'USD', $5, $6, $7, '{}', 'because')
returning id
"""
_ACTION = """
insert into rule_actions (command_id, run_id, rule, entity_id, entity_level, account_id, kind, acted_at, message_id,
                          result_status)
values ($1, $2, $3, $4, 'adset', 'act_1', $5, $6, $7, $8)
"""


async def test_stored_status_and_hourly_counts_follow_every_write(console_db: asyncpg.Pool) -> None:
    db = console_db
    await db.execute("truncate rule_decision_reviews, rule_actions, rule_decisions, rule_runs cascade")
    assert await db.fetchval("select count(*) from rule_decision_hours") == 0
    run_id = uuid.uuid4()
    now = await db.fetchval("select now()")
    await db.execute("insert into rule_runs (run_id, trigger, accounts, started_at, rules, entities, decisions, acted, "
                     "counts) values ($1, 'insights_updated', '{act_1}', $2, '{a,b}', 9, 9, 2, '{}')", run_id, now)
    # Decisions across hours, either side of the 7-day edge and inside its first hour, as the engine writes them.
    times = [now - timedelta(days=7, minutes=10), now - timedelta(days=7) + timedelta(minutes=1),
             now - timedelta(days=6, hours=23, minutes=59), now - timedelta(hours=3), now - timedelta(minutes=1)]
    rows = [(run_id, times[i % len(times)], "ab"[i % 2], f"e{i}", outcome, reason, shadow)
            for i, (outcome, reason, shadow) in enumerate([
                ("acted", None, False), ("acted", None, False), ("would_act", None, True), ("would_act", None, False),
                ("skipped", "not_matched", False), ("skipped", "cooldown", False), ("skipped", None, False),
                ("acted", "capped", False), ("skipped", "insufficient_data", False)])]
    await db.executemany(_DECISION.replace("returning id", ""), rows)
    assert await check(db) == Counter(acted=3, shadow=1, dry_run=1, skipped=2, held=2)

    # An action recorded for e0 (waiting for its result), then its result; a notify action changes nothing.
    e0 = await db.fetchrow("select * from rule_decisions where entity_id = 'e0'")
    first = uuid.UUID("ffffffff" + uuid.uuid4().hex[8:])  # after the second one below in command id order
    await db.execute(_ACTION, first, run_id, "a", "e0", "pause", e0["evaluated_at"], uuid.uuid4(), None)
    await db.execute(_ACTION, uuid.uuid4(), run_id, "a", "e0", "notify", e0["evaluated_at"], uuid.uuid4(), None)
    assert (await check(db))["sent"] == 1
    await db.execute("update rule_actions set result_status = 'ok' where command_id = $1", first)
    assert (await check(db))["sent"] == 0
    await db.execute("update rule_actions set result_status = 'refused' where command_id = $1", first)
    assert (await check(db))["failed"] == 1
    # A second action of the same decision that Meta applied: the refused one still says what happened.
    second = uuid.UUID("00000000" + uuid.uuid4().hex[8:])
    await db.execute(_ACTION, second, run_id, "a", "e0", "set_budget", e0["evaluated_at"], uuid.uuid4(), "ok")
    assert (await check(db))["failed"] == 1
    await db.execute("delete from rule_actions where command_id = $1", first)
    assert (await check(db))["failed"] == 0
    await db.execute("delete from rule_actions where run_id = $1", run_id)
    await check(db)

    # Actions for many decisions in one statement (an import), and their results in one.
    await db.execute(
        "insert into rule_actions (command_id, run_id, rule, entity_id, entity_level, account_id, kind, acted_at, "
        "message_id) select gen_random_uuid(), run_id, rule, entity_id, 'adset', 'act_1', 'pause', evaluated_at, "
        "gen_random_uuid() from rule_decisions where outcome = 'acted'")
    assert (await check(db))["sent"] == 3
    await db.execute("update rule_actions set result_status = case when entity_id = 'e1' then 'failed' else 'ok' end")
    assert (await check(db))["failed"] == 1

    # Decisions changed: outcome, reason, shadow, the hour and the rule; others written without a status change.
    await db.execute("update rule_decisions set outcome = 'would_act', reason = null, shadow = true "
                     "where entity_id = 'e4'")
    await db.execute("update rule_decisions set evaluated_at = evaluated_at - interval '90 minutes', rule = 'b' "
                     "where entity_id in ('e3', 'e5')")
    await db.execute("update rule_decisions set announced = true")
    await db.execute("update rule_decisions set status = 'acted'")  # a stored status cannot be written by hand
    await check(db)

    # Many decisions in one statement, then some removed; then all of them.
    await db.execute(
        "insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id, "
        "currency, outcome, reason, shadow, metrics, explanation) "
        "select $1, now() - n * interval '37 minutes', case when n % 3 = 0 then 'a' else 'c' end, 'bulk' || n, "
        "'adset', 'x', 'act_1', 'USD', case when n % 4 = 0 then 'would_act' else 'skipped' end, "
        "case when n % 4 = 0 then null when n % 4 = 1 then 'cooldown' else 'not_matched' end, n % 8 = 0, '{}', 'x' "
        "from generate_series(1, 400) n", run_id)
    await check(db)
    await db.execute("delete from rule_decisions where entity_id like 'bulk%' "
                     "and evaluated_at < now() - interval '3 days'")
    await check(db)
    await db.execute("truncate rule_decision_reviews, rule_actions, rule_decisions, rule_runs cascade")
    assert await check(db) == Counter()
    assert await db.fetchval("select count(*) from rule_decision_hours") == 0


async def test_engine_writes_a_run_in_one_statement_counted_and_decoded(console_db: asyncpg.Pool) -> None:
    """`record_decisions` as the worker calls it: the decisions in one statement (0160 counts them per statement),
    in their order, their JSON as the pool's codec reads it; announced shadow decisions one by one, with their ids."""
    db = console_db
    run_id = uuid.uuid4()
    now = await db.fetchval("select now()")
    await db.execute("insert into rule_runs (run_id, trigger, accounts, started_at, rules, entities, decisions, acted, "
                     "counts) values ($1, 'schedule', '{act_1}', $2, '{a,b}', 3, 40, 0, '{}')", run_id, now)
    action = Action(kind="pause", rule="a", entity_id="e1", entity_level="adset", account_id="act_1", reason="r",
                    idempotency_key="k")
    decisions = [
        Decision(rule="ab"[i % 2], entity_id=f"e{i % 3}", entity_level="adset", entity_name=f"Ad set 'é{i}'",
                 account_id="act_1", currency="USD", outcome=outcome, reason=reason, shadow=outcome == "would_act",
                 metrics={"last_7_days": {"spend": 100 * i, "cpl": None if i % 2 else 12.5}},
                 actions=(action,) if outcome == "would_act" else (), explanation=f"because {i}",
                 evaluated_at=now - timedelta(minutes=50 * (i % 2)))
        for i, (outcome, reason) in enumerate([("skipped", "insufficient_data")] * 30 + [("skipped", None)] * 8
                                               + [("would_act", None)] * 2)
    ]
    async with db.acquire() as conn, conn.transaction():
        ids = await record_decisions(conn, run_id, decisions, announced={39})
    stored = await db.fetch("select * from rule_decisions where run_id = $1 order by id", run_id)
    assert list(ids) == [39]
    assert stored[-1]["id"] == ids[39]
    for row, d in zip(stored, decisions, strict=True):
        assert (row["rule"], row["entity_id"], row["entity_name"], row["outcome"], row["reason"], row["shadow"],
                row["evaluated_at"], row["metrics"], row["actions"], row["explanation"], row["announced"]) == (
            d.rule, d.entity_id, d.entity_name, d.outcome, d.reason, d.shadow, d.evaluated_at, d.metrics,
            [a.model_dump(mode="json") for a in d.actions], d.explanation, d is decisions[39])
    assert await check(db) == Counter(skipped=30, held=8, shadow=2)


async def test_pruning_deletes_only_old_skipped_decisions_and_keeps_the_7_day_counts(
    console_db: asyncpg.Pool,
) -> None:
    """`prune_skipped_decisions` at the least retention the setting allows (8 days): skipped decisions older than
    that go, in chunks; recent skipped ones and every other old decision (the audit trail) stay; a reviewed decision
    is never deleted; `rule_decision_hours` still equals the stored decisions and the Automation page's 7-day counts
    are what they were."""
    db = console_db
    await db.execute("truncate rule_decision_reviews, rule_actions, rule_decisions, rule_runs cascade")
    run_id = uuid.uuid4()
    now = await db.fetchval("select now()")
    await db.execute("insert into rule_runs (run_id, trigger, accounts, started_at, rules, entities, decisions, acted, "
                     "counts) values ($1, 'schedule', '{act_1}', $2, '{a,b}', 9, 9, 2, '{}')", run_id, now)

    async def decision(entity: str, age: timedelta, outcome: str, reason: str | None, shadow: bool = False) -> int:
        decision_id: int = await db.fetchval(_DECISION, run_id, now - age, "ab"[len(entity) % 2], entity, outcome,
                                             reason, shadow)
        return decision_id

    old, edge, recent = timedelta(days=30), timedelta(days=8, minutes=1), timedelta(days=7, minutes=10)
    skipped_reasons = ("not_matched", "insufficient_data", "no_change")
    pruned = {await decision(f"old{i}", old - timedelta(hours=i), "skipped", skipped_reasons[i % 3])
              for i in range(12)}
    pruned.add(await decision("edge", edge, "skipped", "no_change"))
    kept = {await decision("recent", recent, "skipped", "not_matched"),   # outside the 7 days, inside the 8
            await decision("today", timedelta(minutes=5), "skipped", "insufficient_data"),
            await decision("acted", old, "acted", None),
            await decision("sent", old, "acted", None),
            await decision("failed", old, "acted", None),
            await decision("shadow", old, "would_act", None, True),
            await decision("dry_run", old, "would_act", None),
            await decision("held", old, "skipped", "cooldown")}
    for entity, result in (("sent", None), ("failed", "failed")):
        await db.execute(_ACTION, uuid.uuid4(), run_id, "ab"[len(entity) % 2], entity, "pause", now - old,
                         uuid.uuid4(), result)
    # A skipped decision with a verdict (the console reviews shadow decisions only; an import might not): kept, so
    # its review is not deleted with it (`on delete cascade`).
    reviewed = await decision("reviewed", old, "skipped", "not_matched")
    await db.execute("insert into rule_decision_reviews (decision_id, verdict, reviewed_by, message_id) "
                     "values ($1, 'reject', 'alice', $2)", reviewed, uuid.uuid4())
    kept.add(reviewed)
    before = await check(db)
    assert before == Counter(skipped=16, acted=1, sent=1, failed=1, shadow=1, dry_run=1, held=1)
    counts = "select * from console_rule_decision_counts(now() - interval '7 days') order by rule, status"
    week = [dict(r) for r in await db.fetch(counts)]
    assert sum(r["decisions"] for r in week) == 1  # only `today`

    assert await prune_skipped_decisions(db, older_than_days=8, chunk=5) == len(pruned)  # 13 rows: three chunks

    stored = {r["id"] for r in await db.fetch("select id from rule_decisions")}
    assert stored == kept
    assert await check(db) == before - Counter(skipped=len(pruned))  # the hourly summary follows the deletes
    assert [dict(r) for r in await db.fetch(counts)] == week
    assert await db.fetchval("select count(*) from rule_decision_reviews") == 1
    assert await prune_skipped_decisions(db, older_than_days=8, chunk=5) == 0
